//! Plain-text tables of `/stats` for people; `--json` bypasses all of this.
//! Reads the JSON loosely (a missing field shows as 0) so an older or newer
//! broker still renders.

use serde_json::Value;

/// One row per topic and, indented under it, one per channel.
pub fn stats(stats: &Value) -> String {
    let topics = topics(stats);
    if topics.is_empty() {
        return "no topics\n".to_owned();
    }
    let mut rows = Vec::new();
    for topic in topics {
        let channels = channels(topic);
        let in_flight: u64 = channels.iter().map(|c| number(c, "in_flight_count")).sum();
        let deferred: u64 = channels.iter().map(|c| number(c, "deferred_count")).sum();
        rows.push(vec![
            text(topic, "topic_name"),
            text(topic, "tier"),
            number(topic, "depth").to_string(),
            in_flight.to_string(),
            deferred.to_string(),
            number(topic, "message_count").to_string(),
            format!("{} channels", channels.len()),
            yes_no(topic, "paused"),
        ]);
        for channel in channels {
            rows.push(vec![
                format!("  {}", text(channel, "channel_name")),
                String::new(),
                number(channel, "depth").to_string(),
                number(channel, "in_flight_count").to_string(),
                number(channel, "deferred_count").to_string(),
                number(channel, "message_count").to_string(),
                format!("{} clients", number(channel, "client_count")),
                yes_no(channel, "paused"),
            ]);
        }
    }
    render(
        &[
            "TOPIC / CHANNEL",
            "TIER",
            "DEPTH",
            "IN-FLIGHT",
            "DEFERRED",
            "MESSAGES",
            "CONSUMERS",
            "PAUSED",
        ],
        &[false, false, true, true, true, true, true, false],
        &rows,
    )
}

/// `topic list`: name, tier, channel count, paused.
pub fn topic_list(stats: &Value) -> String {
    let rows: Vec<Vec<String>> = topics(stats)
        .iter()
        .map(|t| {
            vec![
                text(t, "topic_name"),
                text(t, "tier"),
                channels(t).len().to_string(),
                yes_no(t, "paused"),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no topics\n".to_owned();
    }
    render(
        &["TOPIC", "TIER", "CHANNELS", "PAUSED"],
        &[false, false, true, false],
        &rows,
    )
}

/// `channel list`: the channels of one topic entry of `/stats`.
pub fn channel_list(topic: &Value) -> String {
    let rows: Vec<Vec<String>> = channels(topic)
        .iter()
        .map(|c| {
            vec![
                text(c, "channel_name"),
                number(c, "depth").to_string(),
                number(c, "in_flight_count").to_string(),
                number(c, "client_count").to_string(),
                yes_no(c, "paused"),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no channels\n".to_owned();
    }
    render(
        &["CHANNEL", "DEPTH", "IN-FLIGHT", "CLIENTS", "PAUSED"],
        &[false, true, true, true, false],
        &rows,
    )
}

pub fn topics(stats: &Value) -> &[Value] {
    stats["topics"].as_array().map_or(&[], Vec::as_slice)
}

pub fn channels(topic: &Value) -> &[Value] {
    topic["channels"].as_array().map_or(&[], Vec::as_slice)
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or("-").to_owned()
}

fn number(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or(0)
}

fn yes_no(value: &Value, key: &str) -> String {
    if value[key].as_bool().unwrap_or(false) {
        "yes"
    } else {
        "no"
    }
    .to_owned()
}

/// Columns padded to their widest cell, two spaces apart; numbers right-aligned.
fn render(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((cell, &width), &right)| {
                if right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_topics_with_their_channels() {
        let json = serde_json::json!({"topics": [{
            "topic_name": "orders", "tier": "persistent", "depth": 3, "message_count": 3,
            "paused": false,
            "channels": [{"channel_name": "billing", "depth": 2, "in_flight_count": 1,
                          "deferred_count": 0, "message_count": 3, "client_count": 1,
                          "paused": true}]
        }]});
        let table = stats(&json);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("TOPIC / CHANNEL"));
        let topic: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            topic,
            [
                "orders",
                "persistent",
                "3",
                "1",
                "0",
                "3",
                "1",
                "channels",
                "no"
            ]
        );
        let channel: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            channel,
            ["billing", "2", "1", "0", "3", "1", "clients", "yes"]
        );
    }

    #[test]
    fn says_so_when_there_are_no_topics() {
        assert_eq!(stats(&serde_json::json!({"topics": []})), "no topics\n");
    }
}

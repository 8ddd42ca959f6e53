//! What a run reports: one [`StreamReport`] per topic it loaded (published,
//! received, rates, latency percentiles), written as JSON for scripts and as
//! a few lines for people.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::cli::Tier;
use crate::consumer::ConsumeOutcome;
use crate::latency::{Latencies, LatencySummary};
use crate::progress::thousands;
use crate::publisher::PublishOutcome;

/// The latency kinds a stream may carry.
pub const END_TO_END: &str = "end_to_end";
pub const PUBLISH_ACK: &str = "publish_ack";
pub const AGE_ON_ARRIVAL: &str = "age_on_arrival";

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub mode: &'static str,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    /// Every option of the run, as parsed.
    pub settings: serde_json::Value,
    pub streams: Vec<StreamReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct StreamReport {
    pub name: String,
    pub topic: String,
    pub channel: Option<String>,
    pub tier: Option<Tier>,
    pub published: u64,
    pub publish_seconds: f64,
    pub publish_rate: f64,
    pub received: u64,
    /// Received messages stamped before the run began (an earlier run's backlog).
    pub stale: u64,
    pub finished: u64,
    pub receive_seconds: f64,
    pub receive_rate: f64,
    /// Microsecond percentiles by kind: `end_to_end`, `publish_ack`, `age_on_arrival`.
    pub latency: BTreeMap<&'static str, LatencySummary>,
    /// What a reader should know about the figures (e.g. a paced rate not reached).
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    #[serde(skip)]
    pub histograms: BTreeMap<&'static str, Latencies>,
}

impl StreamReport {
    pub fn new(name: &str, topic: &str, channel: Option<&str>, tier: Option<Tier>) -> StreamReport {
        StreamReport {
            name: name.to_owned(),
            topic: topic.to_owned(),
            channel: channel.map(str::to_owned),
            tier,
            ..StreamReport::default()
        }
    }

    /// `target_rate`: the `--rate` asked for, if any.
    pub fn add_publish(&mut self, outcome: PublishOutcome, target_rate: Option<u64>) {
        self.published += outcome.published;
        self.publish_seconds = outcome.elapsed.as_secs_f64();
        self.publish_rate = rate(outcome.published, self.publish_seconds);
        if let Some(target) = target_rate.filter(|t| self.publish_rate < 0.9 * *t as f64) {
            self.notes.push(format!(
                "the rate asked for ({} msg/s) was not reached: each publisher waits for its OK before the next command; add publishers or batch",
                thousands(target)
            ));
        }
        self.add_latency(PUBLISH_ACK, outcome.ack);
        self.errors.extend(outcome.errors);
    }

    /// `kind`: [`END_TO_END`] when this run stamped what it consumes,
    /// [`AGE_ON_ARRIVAL`] when the messages may be older than the run.
    pub fn add_consume(&mut self, outcome: ConsumeOutcome, kind: &'static str) {
        self.received += outcome.received;
        self.stale += outcome.stale;
        self.finished += outcome.finished;
        self.receive_seconds = outcome.elapsed.as_secs_f64();
        self.receive_rate = rate(outcome.received, self.receive_seconds);
        self.add_latency(kind, outcome.age);
        self.errors.extend(outcome.errors);
    }

    fn add_latency(&mut self, kind: &'static str, latencies: Latencies) {
        if latencies.count() > 0 {
            self.latency.insert(kind, latencies.summary());
            self.histograms.insert(kind, latencies);
        }
    }
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

impl Report {
    /// # Errors
    /// If the file cannot be written.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        serde_json::to_writer_pretty(&mut file, self)?;
        writeln!(file)?;
        file.flush()
    }

    /// A few lines per stream, for the terminal.
    pub fn summary(&self) -> String {
        let mut out = format!("triage-bench {} ({:.2} s)\n", self.mode, self.elapsed_s);
        for s in &self.streams {
            let mut line = format!("{} [{}", s.name, s.topic);
            if let Some(channel) = &s.channel {
                line.push_str(&format!("/{channel}"));
            }
            if let Some(tier) = s.tier {
                line.push_str(&format!(", {}", tier.as_str()));
            }
            line.push(']');
            if s.published > 0 {
                line.push_str(&format!(
                    " published {} in {:.2} s ({} msg/s)",
                    thousands(s.published),
                    s.publish_seconds,
                    thousands(s.publish_rate as u64)
                ));
            }
            if s.received > 0 || s.channel.is_some() {
                line.push_str(&format!(
                    " received {} in {:.2} s ({} msg/s), finished {}",
                    thousands(s.received),
                    s.receive_seconds,
                    thousands(s.receive_rate as u64),
                    thousands(s.finished)
                ));
                if s.stale > 0 {
                    line.push_str(&format!(", {} stale", thousands(s.stale)));
                }
            }
            out.push_str(&line);
            out.push('\n');
            for (kind, summary) in &s.latency {
                out.push_str(&format!("  {kind:<14} {}\n", summary.one_line()));
            }
            for note in &s.notes {
                out.push_str(&format!("  note: {note}\n"));
            }
            for error in &s.errors {
                out.push_str(&format!("  error: {error}\n"));
            }
        }
        out
    }

    /// Every error of every stream.
    pub fn errors(&self) -> impl Iterator<Item = &str> {
        self.streams
            .iter()
            .flat_map(|s| s.errors.iter().map(String::as_str))
    }

    /// The curves worth plotting: each stream's end-to-end latency, or what
    /// it has instead.
    pub fn plot_series(&self) -> Vec<(String, &Latencies)> {
        self.streams
            .iter()
            .filter_map(|s| {
                [END_TO_END, AGE_ON_ARRIVAL, PUBLISH_ACK]
                    .into_iter()
                    .find_map(|kind| s.histograms.get(kind).map(|h| (kind, h)))
                    .map(|(kind, h)| (format!("{} {}", s.name, kind.replace('_', " ")), h))
            })
            .collect()
    }
}

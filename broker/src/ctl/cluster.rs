//! `triagectl` across a cluster: the brokers come from lookupd's HTTP API
//! (`/nodes` for all of them, `/lookup?topic=` for those holding a topic),
//! each is reached at `broadcast_address:http_port`, and their `/stats` are
//! summed into one reply the tables in [`super::table`] render unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::client::{encode, AdminClient, CtlError};
use super::table;

/// The lookupds to ask, and the token to send the brokers they name.
#[derive(Debug)]
pub struct Cluster {
    lookupds: Vec<AdminClient>,
    token: Option<String>,
}

/// What one broker answered, by the address it was reached at.
pub type PerBroker<T> = Vec<(String, Result<T, CtlError>)>;

impl Cluster {
    pub fn new(lookupd_addrs: &[String], token: Option<String>) -> Cluster {
        Cluster {
            lookupds: lookupd_addrs.iter().map(AdminClient::new).collect(),
            token,
        }
    }

    /// Every broker any lookupd lists under `/nodes`, sorted.
    ///
    /// # Errors
    /// [`CtlError::Lookupd`] when a lookupd cannot be asked or answers nonsense:
    /// a partial list would make a cluster-wide change quietly partial.
    pub async fn brokers(&self) -> Result<Vec<String>, CtlError> {
        let mut brokers = BTreeSet::new();
        for lookupd in &self.lookupds {
            let reply = ask(lookupd, "/nodes").await?;
            brokers.extend(producer_addresses(lookupd, &reply)?);
        }
        Ok(brokers.into_iter().collect())
    }

    /// The brokers any lookupd lists as holding `topic`, sorted.
    ///
    /// # Errors
    /// As [`Cluster::brokers`], and [`CtlError::NoSuchTopic`] when none does.
    pub async fn brokers_holding(&self, topic: &str) -> Result<Vec<String>, CtlError> {
        let path = format!("/lookup?topic={}", encode(topic));
        let mut brokers = BTreeSet::new();
        for lookupd in &self.lookupds {
            match ask(lookupd, &path).await {
                Ok(reply) => brokers.extend(producer_addresses(lookupd, &reply)?),
                // One lookupd not knowing the topic is normal; another may.
                Err(CtlError::Lookupd {
                    status: Some(404), ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        if brokers.is_empty() {
            return Err(CtlError::NoSuchTopic(topic.to_owned()));
        }
        Ok(brokers.into_iter().collect())
    }

    /// Runs `op` against every broker in `addrs` at once; the answers come
    /// back in the order of `addrs`.
    pub async fn on_each<T, F, Fut>(&self, addrs: &[String], op: F) -> PerBroker<T>
    where
        T: Send + 'static,
        F: Fn(AdminClient) -> Fut,
        Fut: Future<Output = Result<T, CtlError>> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        for (i, addr) in addrs.iter().enumerate() {
            let client = AdminClient::new(addr.clone()).with_token(self.token.clone());
            let call = op(client);
            tasks.spawn(async move { (i, call.await) });
        }
        let mut answers: Vec<Option<Result<T, CtlError>>> = addrs.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            // The calls do not panic; a cancelled one cannot happen before the set drops.
            if let Ok((i, answer)) = joined {
                answers[i] = Some(answer);
            }
        }
        addrs
            .iter()
            .zip(answers)
            .map(|(addr, answer)| {
                let answer = answer.unwrap_or_else(|| {
                    Err(CtlError::Protocol(format!(
                        "the request to {addr} was lost"
                    )))
                });
                (addr.clone(), answer)
            })
            .collect()
    }
}

/// One lookupd request as JSON, its errors named after the lookupd.
async fn ask(lookupd: &AdminClient, path: &str) -> Result<Value, CtlError> {
    let failed = |status: Option<u16>, reason: String| CtlError::Lookupd {
        addr: lookupd.addr().to_owned(),
        status,
        reason,
    };
    let body = lookupd.get(path).await.map_err(|e| match e {
        CtlError::Unreachable { reason, .. } => failed(None, reason),
        CtlError::Api {
            status, message, ..
        } => failed(Some(status), format!("{message} (HTTP {status})")),
        other => failed(None, other.to_string()),
    })?;
    serde_json::from_slice(&body).map_err(|e| failed(None, format!("{path} is not JSON: {e}")))
}

/// `broadcast_address:http_port` of each entry of a lookupd's `producers`.
fn producer_addresses(lookupd: &AdminClient, reply: &Value) -> Result<Vec<String>, CtlError> {
    let malformed = || CtlError::Lookupd {
        addr: lookupd.addr().to_owned(),
        status: None,
        reason: "its reply lists producers without broadcast_address and http_port".to_owned(),
    };
    let producers = reply["producers"].as_array().ok_or_else(malformed)?;
    producers
        .iter()
        .map(|p| {
            let host = p["broadcast_address"].as_str().ok_or_else(malformed)?;
            let port = p["http_port"].as_u64().ok_or_else(malformed)?;
            Ok(if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            })
        })
        .collect()
}

/// Counters summed across brokers, for topics and channels alike.
const TOPIC_COUNTS: [&str; 2] = ["depth", "message_count"];
const CHANNEL_COUNTS: [&str; 5] = [
    "depth",
    "in_flight_count",
    "deferred_count",
    "message_count",
    "client_count",
];

/// Sums the `/stats` of several brokers, shaped like one broker's reply
/// (so [`table::stats`] renders it) plus `brokers` lists breaking each topic
/// and channel down by broker. `paused` is true when any broker has it paused;
/// `tier` is `mixed` when brokers disagree.
pub fn aggregate(per_broker: &[(String, Value)]) -> Value {
    let mut topics: BTreeMap<String, Value> = BTreeMap::new();
    for (addr, stats) in per_broker {
        for topic in table::topics(stats) {
            let Some(name) = topic["topic_name"].as_str() else {
                continue;
            };
            let total = topics.entry(name.to_owned()).or_insert_with(|| {
                json!({"topic_name": name, "tier": topic["tier"], "paused": false,
                       "depth": 0, "message_count": 0, "channels": [], "brokers": []})
            });
            if total["tier"] != topic["tier"] {
                total["tier"] = Value::from("mixed");
            }
            add_counts(total, topic, &TOPIC_COUNTS);
            let mut share = json!({"address": addr, "tier": topic["tier"]});
            add_counts(&mut share, topic, &TOPIC_COUNTS);
            share["in_flight_count"] = sum_over_channels(topic, "in_flight_count");
            share["deferred_count"] = sum_over_channels(topic, "deferred_count");
            push(&mut total["brokers"], share);
            for channel in table::channels(topic) {
                add_channel(total, addr, channel);
            }
        }
    }
    let brokers: Vec<&str> = per_broker.iter().map(|(addr, _)| addr.as_str()).collect();
    json!({"brokers": brokers, "topics": topics.into_values().collect::<Vec<_>>()})
}

fn add_channel(topic: &mut Value, addr: &str, channel: &Value) {
    let Some(name) = channel["channel_name"].as_str() else {
        return;
    };
    let Some(channels) = topic["channels"].as_array_mut() else {
        return;
    };
    let index = match channels.iter().position(|c| c["channel_name"] == name) {
        Some(index) => index,
        None => {
            channels.push(json!({"channel_name": name, "paused": false, "brokers": [],
                "depth": 0, "in_flight_count": 0, "deferred_count": 0,
                "message_count": 0, "client_count": 0}));
            channels.len() - 1
        }
    };
    let total = &mut channels[index];
    add_counts(total, channel, &CHANNEL_COUNTS);
    let mut share = json!({"address": addr});
    add_counts(&mut share, channel, &CHANNEL_COUNTS);
    push(&mut total["brokers"], share);
}

/// Adds `from`'s counters to `into`'s and ORs `paused`.
fn add_counts(into: &mut Value, from: &Value, keys: &[&str]) {
    for key in keys {
        let sum = into[*key].as_u64().unwrap_or(0) + from[*key].as_u64().unwrap_or(0);
        into[*key] = Value::from(sum);
    }
    let paused = into["paused"].as_bool().unwrap_or(false) || from["paused"] == true;
    into["paused"] = Value::from(paused);
}

fn sum_over_channels(topic: &Value, key: &str) -> Value {
    let sum: u64 = table::channels(topic)
        .iter()
        .map(|c| c[key].as_u64().unwrap_or(0))
        .sum();
    Value::from(sum)
}

fn push(list: &mut Value, item: Value) {
    if let Some(list) = list.as_array_mut() {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(depth: u64, in_flight: u64, paused: bool) -> Value {
        json!({"topics": [{"topic_name": "orders", "tier": "memory", "depth": depth,
            "message_count": depth + in_flight, "paused": paused,
            "channels": [{"channel_name": "billing", "depth": depth, "in_flight_count": in_flight,
                          "deferred_count": 1, "message_count": depth + in_flight,
                          "client_count": 1, "paused": false}]}]})
    }

    #[test]
    fn sums_topics_and_channels_and_keeps_each_brokers_share() {
        let total = aggregate(&[
            ("a:1".to_owned(), broker(3, 1, false)),
            ("b:2".to_owned(), broker(4, 2, true)),
        ]);
        let topic = &total["topics"][0];
        assert_eq!(topic["depth"], 7);
        assert_eq!(topic["message_count"], 10);
        assert_eq!(topic["paused"], true);
        assert_eq!(topic["tier"], "memory");
        assert_eq!(topic["brokers"][1]["address"], "b:2");
        assert_eq!(topic["brokers"][1]["in_flight_count"], 2);
        let channel = &topic["channels"][0];
        assert_eq!(channel["in_flight_count"], 3);
        assert_eq!(channel["deferred_count"], 2);
        assert_eq!(channel["client_count"], 2);
        assert_eq!(channel["brokers"][0]["depth"], 3);
        assert_eq!(total["brokers"], json!(["a:1", "b:2"]));
    }

    #[test]
    fn disagreeing_tiers_are_mixed() {
        let mut other = broker(0, 0, false);
        other["topics"][0]["tier"] = Value::from("persistent");
        let total = aggregate(&[("a:1".into(), broker(0, 0, false)), ("b:2".into(), other)]);
        assert_eq!(total["topics"][0]["tier"], "mixed");
    }
}

//! `BACKPRESSURE <level>`: a triage extension, never sent by NSQ clients. A
//! worker that falls behind says how loaded it is (0 normal, 1 degraded, 2
//! overloaded) and the broker holds back lower-priority tiers from that
//! connection: at 1 the delayed tier, at 2 the persistent tier as well. The
//! memory tier (urgent work) always flows. Each change of level is published
//! as a JSON event on [`EVENTS_TOPIC`] so producers and other services can
//! degrade too.
//!
//! Allowed in any state after the magic: a worker may announce its load
//! before it subscribes, and while closing it may still be draining work.

use std::sync::Arc;

use triage_config::Tier;
use triage_protocol::ProtocolError;

use super::reply_ok;
use crate::broker::Broker;
use crate::channel::Channel;
use crate::client::ClientInfo;
use crate::tcp::session::Session;

/// The memory-tier topic every level change is published to.
pub const EVENTS_TOPIC: &str = "_triage.backpressure";

pub(super) async fn apply(session: &mut Session, level: u8) -> Result<(), ProtocolError> {
    let previous = std::mem::replace(&mut session.backpressure, level);
    session.info.set_backpressure(level);
    if previous != level {
        tracing::info!(
            client = session.info.id,
            from = previous,
            to = level,
            "client backpressure level changed"
        );
        // Published before the OK is queued, so a client that has its OK
        // knows the event is already on the topic.
        publish_event(
            &session.broker,
            &session.info,
            session.channel.as_deref(),
            level,
        )
        .await;
    }
    reply_ok(session);
    Ok(())
}

/// Whether a connection at backpressure `level` may be sent messages of `tier`.
pub fn tier_flows(level: u8, tier: Tier) -> bool {
    match tier {
        Tier::Memory => true,
        Tier::Persistent => level < 2,
        Tier::Delayed => level < 1,
    }
}

/// Publishes one level change to [`EVENTS_TOPIC`]. Best effort: the level has
/// already taken effect on the connection, and a full or unwritable events
/// topic must not cost the worker its connection, so failures are only logged.
pub async fn publish_event(
    broker: &Broker,
    info: &Arc<ClientInfo>,
    channel: Option<&Channel>,
    level: u8,
) {
    let identity = info.identity();
    // As nsqd: without IDENTIFY, a client is known by its address.
    let host = info.remote_addr.ip().to_string();
    let or_host = |s: String| if s.is_empty() { host.clone() } else { s };
    let event = serde_json::json!({
        "client_id": or_host(identity.client_id),
        "hostname": or_host(identity.hostname),
        "topic": channel.map(|c| c.topic_name.as_str()),
        "channel": channel.map(|c| c.name.as_str()),
        "level": level,
        // Milliseconds since the Unix epoch.
        "time": crate::client::unix_nanos() / 1_000_000,
    });
    let body = match serde_json::to_vec(&event) {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode backpressure event");
            return;
        }
    };
    let published = async {
        broker
            .topic_with_tier(EVENTS_TOPIC, Some(Tier::Memory), None)
            .await?
            .publish(vec![body.into()], None)
            .await?;
        Ok::<_, crate::broker::TopicError>(())
    };
    if let Err(e) = published.await {
        tracing::warn!(client = info.id, level, error = %e, "backpressure event not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_always_flows_and_each_level_holds_back_one_more_tier() {
        let table = [
            (0, [true, true, true]),
            (1, [true, true, false]),
            (2, [true, false, false]),
        ];
        for (level, expected) in table {
            let got = [Tier::Memory, Tier::Persistent, Tier::Delayed].map(|t| tier_flows(level, t));
            assert_eq!(got, expected, "level {level}");
        }
    }
}

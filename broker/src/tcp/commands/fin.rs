//! `FIN <id>`: the message is done. Failure is not fatal (`E_FIN_FAILED`).
//! A finished message's publish-to-FIN time goes to `triage_end_to_end_seconds`.

use std::sync::atomic::Ordering;

use triage_protocol::{ErrorCode, MessageId, ProtocolError};

use super::require_subscribed_or_closing;
use crate::tcp::session::Session;

pub(super) fn apply(session: &mut Session, id: &MessageId) -> Result<(), ProtocolError> {
    require_subscribed_or_closing(session, "FIN")?;
    let channel = session
        .channel
        .as_ref()
        .ok_or_else(|| failed(id, "no channel"))?;
    let published_ns = channel
        .finish(session.info.id, id)
        .map_err(|e| failed(id, &e.to_string()))?;
    // No tier means the topic is being deleted: nothing worth recording.
    if let Some(tier) = &session.channel_tier {
        let tier = tier.get();
        let metrics = &session.broker.metrics;
        let (cached_tier, histogram) = session.info.end_to_end.get_or_init(|| {
            (
                tier,
                metrics.end_to_end(&channel.topic_name, &channel.name, tier),
            )
        });
        if *cached_tier == tier {
            crate::metrics::observe_end_to_end(histogram, published_ns);
        } else {
            let histogram = metrics.end_to_end(&channel.topic_name, &channel.name, tier);
            crate::metrics::observe_end_to_end(&histogram, published_ns);
        }
    }
    session.info.finish_count.fetch_add(1, Ordering::Relaxed);
    channel
        .counters
        .finish_count
        .fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn failed(id: &MessageId, reason: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::FinFailed,
        format!(
            "FIN {} failed {reason}",
            String::from_utf8_lossy(id.as_bytes())
        ),
    )
}

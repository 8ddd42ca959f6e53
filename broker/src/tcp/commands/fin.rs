//! `FIN <id>`: the message is done. Failure is not fatal (`E_FIN_FAILED`).
//! A finished message's publish-to-FIN time goes to `triage_end_to_end_seconds`.
//!
//! A consumer's FINs arrive many to a read, so the session gathers
//! consecutive ones ([`batchable`]) and finishes them together
//! ([`apply_batch`]): one channel lock and one clock read per batch instead
//! of per message. Replies (only errors) keep the order of the commands.

use std::sync::atomic::Ordering;

use triage_protocol::{ErrorCode, MessageId, ProtocolError};

use super::require_subscribed_or_closing;
use crate::tcp::session::Session;

pub(super) fn apply(session: &mut Session, id: &MessageId) -> Result<(), ProtocolError> {
    require_subscribed_or_closing(session, "FIN")?;
    if session.channel.is_none() {
        return Err(failed(id, "no channel"));
    }
    session.fin_batch.push(*id);
    apply_batch(session);
    Ok(())
}

/// Whether a FIN now would pass every check `apply` makes before touching
/// the channel, so it can wait in the session's batch.
pub fn batchable(session: &Session) -> bool {
    session.channel.is_some()
        && require_subscribed_or_closing(session, "FIN").is_ok()
        && super::tls_allows(session)
}

/// Finishes every FIN gathered in `session.fin_batch`, writing an
/// `E_FIN_FAILED` for each one that fails, in order.
pub fn apply_batch(session: &mut Session) {
    if session.fin_batch.is_empty() {
        return;
    }
    let ids = std::mem::take(&mut session.fin_batch);
    let Some(channel) = session.channel.clone() else {
        // Not reached: FINs are batched only while there is a channel.
        for id in &ids {
            super::reply_error(session, &failed(id, "no channel"));
        }
        return;
    };
    let mut results = std::mem::take(&mut session.fin_results);
    channel.finish_all(session.info.id, &ids, &mut results);
    // No tier means the topic is being deleted: nothing worth recording.
    let info = session.info.clone();
    let histogram = session.channel_tier.as_ref().map(|tier| {
        let tier = tier.get();
        let metrics = &session.broker.metrics;
        let (cached_tier, histogram) = info.end_to_end.get_or_init(|| {
            (
                tier,
                metrics.end_to_end(&channel.topic_name, &channel.name, tier),
            )
        });
        // The connection's series, unless the topic changed tier since it was cached.
        if *cached_tier == tier {
            histogram.clone()
        } else {
            metrics.end_to_end(&channel.topic_name, &channel.name, tier)
        }
    });
    // The FINs of one batch arrived together: one clock read serves them all.
    let now = crate::client::unix_nanos();
    let mut finished = 0u64;
    for (id, result) in ids.iter().zip(&results) {
        match result {
            Ok(published_ns) => {
                finished += 1;
                if let Some(histogram) = &histogram {
                    crate::metrics::observe_end_to_end(histogram, *published_ns, now);
                }
            }
            Err(err) => super::reply_error(session, &failed(id, &err.to_string())),
        }
    }
    info.finish_count.fetch_add(finished, Ordering::Relaxed);
    channel
        .counters
        .finish_count
        .fetch_add(finished, Ordering::Relaxed);
    // Hand the buffers back so the next batch does not allocate.
    results.clear();
    session.fin_results = results;
    session.fin_batch = ids;
    session.fin_batch.clear();
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

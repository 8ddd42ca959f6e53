//! `REQ <id> <timeout_ms>`: give the message back, now or after a delay.
//! Out-of-range delays are clamped, not refused, as nsqd does. On
//! persistent and delayed topics a delay is written to the delayed tier, so
//! it survives a restart; this waits for that write (one group commit).

use std::sync::atomic::Ordering;
use std::time::Duration;

use triage_protocol::{ErrorCode, MessageId, ProtocolError};

use super::require_subscribed_or_closing;
use crate::channel::Requeued;
use crate::tcp::session::Session;

pub(super) async fn apply(
    session: &mut Session,
    id: &MessageId,
    timeout_ms: i64,
) -> Result<(), ProtocolError> {
    require_subscribed_or_closing(session, "REQ")?;
    let max = session.broker.config.max_req_timeout;
    let delay = Duration::from_millis(timeout_ms.max(0) as u64).min(max);
    if timeout_ms > 0 && delay < Duration::from_millis(timeout_ms as u64) {
        tracing::debug!(
            client = session.info.id,
            timeout_ms,
            "REQ timeout clamped to max-req-timeout"
        );
    }
    let channel = session
        .channel
        .clone()
        .ok_or_else(|| failed(id, "no channel"))?;
    let requeued = channel
        .requeue(session.info.id, id, delay)
        .map_err(|e| failed(id, &e.to_string()))?;
    session.info.requeue_count.fetch_add(1, Ordering::Relaxed);
    if let Requeued::ToStore(msg) = requeued {
        session.broker.requeue_delayed(&channel, msg, delay).await;
    }
    Ok(())
}

fn failed(id: &MessageId, reason: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::ReqFailed,
        format!(
            "REQ {} failed {reason}",
            String::from_utf8_lossy(id.as_bytes())
        ),
    )
}

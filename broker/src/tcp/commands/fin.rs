//! `FIN <id>`: the message is done. Failure is not fatal (`E_FIN_FAILED`).

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
    channel
        .finish(session.info.id, id)
        .map_err(|e| failed(id, &e.to_string()))?;
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

//! `TOUCH <id>`: restart the message's timeout (capped at delivery + max-msg-timeout).

use triage_protocol::{ErrorCode, MessageId, ProtocolError};

use super::require_subscribed_or_closing;
use crate::tcp::session::Session;

pub(super) fn apply(session: &mut Session, id: &MessageId) -> Result<(), ProtocolError> {
    require_subscribed_or_closing(session, "TOUCH")?;
    let channel = session
        .channel
        .as_ref()
        .ok_or_else(|| failed(id, "no channel"))?;
    channel
        .touch(
            session.info.id,
            id,
            session.settings.msg_timeout,
            session.broker.config.max_msg_timeout,
        )
        .map_err(|e| failed(id, &e.to_string()))
}

fn failed(id: &MessageId, reason: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::TouchFailed,
        format!(
            "TOUCH {} failed {reason}",
            String::from_utf8_lossy(id.as_bytes())
        ),
    )
}

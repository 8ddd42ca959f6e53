//! `RDY <n>`: how many messages the client may have in flight at once.

use std::sync::atomic::Ordering;

use triage_protocol::{ErrorCode, ProtocolError};

use super::wrong_state;
use crate::tcp::session::{ClientState, Session};

pub(super) fn apply(session: &mut Session, count: u64) -> Result<(), ProtocolError> {
    match session.state {
        // nsqd ignores RDY from a closing client rather than failing it.
        ClientState::Closing => return Ok(()),
        ClientState::Init => return Err(wrong_state("RDY")),
        ClientState::Subscribed => {}
    }
    let max = session.broker.config.max_rdy_count;
    if count > max {
        return Err(ProtocolError::new(
            ErrorCode::Invalid,
            format!("RDY count {count} out of range 0-{max}"),
        ));
    }
    session.rdy = count;
    session.info.ready_count.store(count, Ordering::Relaxed);
    Ok(())
}

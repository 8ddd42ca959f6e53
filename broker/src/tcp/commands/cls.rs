//! `CLS`: the client is closing; no more messages, but it may still FIN, REQ and TOUCH.

use std::sync::atomic::Ordering;

use triage_protocol::ProtocolError;

use super::wrong_state;
use crate::tcp::session::{ClientState, Session};

pub(super) fn apply(session: &mut Session) -> Result<(), ProtocolError> {
    if session.state != ClientState::Subscribed {
        return Err(wrong_state("CLS"));
    }
    session.state = ClientState::Closing;
    session.rdy = 0;
    session.info.ready_count.store(0, Ordering::Relaxed);
    triage_protocol::frame::encode_response(triage_protocol::CLOSE_WAIT, &mut session.conn.output);
    Ok(())
}

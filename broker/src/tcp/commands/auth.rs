//! `AUTH`: authentication arrives with the security issue; until then the
//! broker answers as an nsqd without `--auth-http-address` does.

use triage_protocol::{ErrorCode, ProtocolError};

use super::wrong_state;
use crate::tcp::session::{ClientState, Session};

pub(super) fn apply(session: &mut Session) -> Result<(), ProtocolError> {
    if session.state != ClientState::Init {
        return Err(wrong_state("AUTH"));
    }
    Err(ProtocolError::new(ErrorCode::AuthDisabled, "AUTH disabled"))
}

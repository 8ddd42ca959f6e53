//! `NOP`: no reply; it only proves the client is alive (it resets the read deadline).

use triage_protocol::ProtocolError;

use crate::tcp::session::Session;

pub(super) fn apply(_session: &mut Session) -> Result<(), ProtocolError> {
    Ok(())
}

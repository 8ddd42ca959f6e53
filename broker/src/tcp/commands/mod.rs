//! One file per wire command, each with the same shape: check the client's
//! state, apply the command to the broker, write the reply. Errors carry the
//! NSQ code nsqd would send; the session closes on fatal ones.

mod auth;
mod backpressure;
mod cls;
mod fin;
mod identify;
mod nop;
mod publish;
mod rdy;
mod req;
mod sub;
mod touch;

use triage_protocol::{frame, Command, ErrorCode, ProtocolError};

pub use backpressure::{publish_event as publish_backpressure_event, tier_flows, EVENTS_TOPIC};
pub use fin::{apply_batch as finish_batch, batchable as fin_batchable};

use super::session::{ClientState, Session};

pub async fn execute(session: &mut Session, command: Command) -> Result<(), ProtocolError> {
    if !tls_allows(session) && !matches!(command, Command::Identify(_)) {
        // nsqd's enforceTLSPolicy: nothing but IDENTIFY before the upgrade.
        return Err(ProtocolError::new(
            ErrorCode::Invalid,
            format!("cannot {} in current state (TLS required)", command.name()),
        ));
    }
    match command {
        Command::Identify(request) => identify::apply(session, request).await,
        Command::Auth(secret) => auth::apply(session, secret).await,
        Command::Sub { topic, channel } => sub::apply(session, &topic, &channel).await,
        Command::Pub { topic, body } => publish::publish(session, &topic, body).await,
        Command::Mpub { topic, bodies } => publish::multi_publish(session, &topic, bodies).await,
        Command::Dpub {
            topic,
            defer_ms,
            body,
        } => publish::deferred_publish(session, &topic, defer_ms, body).await,
        Command::Rdy(count) => rdy::apply(session, count),
        Command::Fin(id) => fin::apply(session, &id),
        Command::Req { id, timeout_ms } => req::apply(session, &id, timeout_ms).await,
        Command::Touch(id) => touch::apply(session, &id),
        Command::Cls => cls::apply(session),
        Command::Nop => nop::apply(session),
        Command::Backpressure(level) => backpressure::apply(session, level).await,
    }
}

/// nsqd's enforceTLSPolicy: with TLS required, only IDENTIFY comes before the upgrade.
fn tls_allows(session: &Session) -> bool {
    !session.broker.config.requires_tls() || session.conn.is_tls()
}

/// A non-fatal error's frame, in the order of the commands.
pub fn reply_error(session: &mut Session, err: &ProtocolError) {
    frame::encode_error(err, &mut session.conn.output);
}

fn reply_ok(session: &mut Session) {
    frame::encode_response(triage_protocol::OK, &mut session.conn.output);
}

/// `E_INVALID cannot <CMD> in current state`, nsqd's text for a command sent at the wrong time.
fn wrong_state(command: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Invalid,
        format!("cannot {command} in current state"),
    )
}

/// FIN, REQ and TOUCH are allowed once subscribed, and still while closing.
fn require_subscribed_or_closing(session: &Session, command: &str) -> Result<(), ProtocolError> {
    match session.state {
        ClientState::Subscribed | ClientState::Closing => Ok(()),
        ClientState::Init => Err(wrong_state(command)),
    }
}

//! `AUTH <secret>`: the client proves who it is; SUB, PUB, MPUB and DPUB are
//! then checked against what its secret allows ([`check`]). Error codes and
//! texts are nsqd's (`protocol_v2.go` AUTH and CheckAuth); reasons an auth
//! server failed go to the log, never to the client.

use bytes::Bytes;
use triage_protocol::{frame, ErrorCode, ProtocolError};

use super::wrong_state;
use crate::auth::Asker;
use crate::tcp::session::{ClientState, Session};

pub(super) async fn apply(session: &mut Session, secret: Bytes) -> Result<(), ProtocolError> {
    if session.state != ClientState::Init {
        return Err(wrong_state("AUTH"));
    }
    if session.auth.is_some() {
        return Err(ProtocolError::new(ErrorCode::Invalid, "AUTH already set"));
    }
    let broker = session.broker.clone();
    let Some(auth) = &broker.auth else {
        return Err(ProtocolError::new(ErrorCode::AuthDisabled, "AUTH disabled"));
    };
    let secret = String::from_utf8_lossy(&secret).into_owned();
    let grant = auth
        .check(&secret, &asker(session))
        .await
        .map_err(|e| {
            tracing::warn!(client = session.info.id, addr = %session.info.remote_addr, error = %e, "AUTH failed");
            ProtocolError::new(ErrorCode::AuthFailed, "AUTH failed")
        })?;
    if grant.permission_count() == 0 {
        return Err(ProtocolError::new(
            ErrorCode::Unauthorized,
            "AUTH no authorizations found",
        ));
    }
    let reply = serde_json::json!({
        "identity": grant.identity,
        "identity_url": grant.identity_url,
        "permission_count": grant.permission_count(),
    });
    tracing::debug!(client = session.info.id, identity = %grant.identity, "AUTH");
    session.auth = Some((secret, grant));
    frame::encode_response(reply.to_string().as_bytes(), &mut session.conn.output);
    Ok(())
}

fn asker(session: &Session) -> Asker {
    Asker {
        remote_ip: session.info.remote_addr.ip().to_string(),
        tls: session.conn.is_tls(),
        common_name: session
            .info
            .identity()
            .tls
            .map(|tls| tls.common_name)
            .unwrap_or_default(),
    }
}

/// nsqd's CheckAuth: with AUTH on, `command` on `topic` (and `channel`, for
/// SUB) needs a prior AUTH whose grant allows it; an expired grant is asked
/// for again first.
pub(super) async fn check(
    session: &mut Session,
    command: &str,
    topic: &str,
    channel: Option<&str>,
) -> Result<(), ProtocolError> {
    let broker = session.broker.clone();
    let Some(auth) = &broker.auth else {
        return Ok(());
    };
    let Some((secret, grant)) = &session.auth else {
        return Err(ProtocolError::new(
            ErrorCode::AuthFirst,
            format!("AUTH required before {command}"),
        ));
    };
    if grant.is_expired() {
        let secret = secret.clone();
        let renewed = auth.check(&secret, &asker(session)).await.map_err(|e| {
            tracing::warn!(client = session.info.id, error = %e, "AUTH renewal failed");
            ProtocolError::new(ErrorCode::AuthFailed, "AUTH failed")
        })?;
        session.auth = Some((secret, renewed));
    }
    let allowed = session
        .auth
        .as_ref()
        .is_some_and(|(_, grant)| grant.allows(topic, channel));
    if !allowed {
        return Err(ProtocolError::new(
            ErrorCode::Unauthorized,
            format!(
                "AUTH failed for {command} on {topic:?} {:?}",
                channel.unwrap_or("")
            ),
        ));
    }
    Ok(())
}

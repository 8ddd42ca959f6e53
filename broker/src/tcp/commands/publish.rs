//! `PUB`, `MPUB` and `DPUB`: the three ways a producer hands over messages.
//! They differ only in how many bodies and whether delivery waits, so they
//! share one file; each fails with its own code, as nsqd's do.

use std::time::Duration;

use bytes::Bytes;
use triage_protocol::{ErrorCode, ProtocolError};

use super::reply_ok;
use crate::broker::TopicError;
use crate::tcp::session::Session;

pub(super) async fn publish(
    session: &mut Session,
    topic: &str,
    body: Bytes,
) -> Result<(), ProtocolError> {
    publish_with(
        session,
        topic,
        vec![body],
        None,
        ErrorCode::PubFailed,
        "PUB",
    )
    .await
}

pub(super) async fn multi_publish(
    session: &mut Session,
    topic: &str,
    bodies: Vec<Bytes>,
) -> Result<(), ProtocolError> {
    publish_with(session, topic, bodies, None, ErrorCode::MpubFailed, "MPUB").await
}

pub(super) async fn deferred_publish(
    session: &mut Session,
    topic: &str,
    defer_ms: u64,
    body: Bytes,
) -> Result<(), ProtocolError> {
    let max = session.broker.config.max_req_timeout;
    if defer_ms > max.as_millis() as u64 {
        return Err(ProtocolError::new(
            ErrorCode::Invalid,
            format!("DPUB timeout {defer_ms} out of range 0-{}", max.as_millis()),
        ));
    }
    let defer = Duration::from_millis(defer_ms);
    publish_with(
        session,
        topic,
        vec![body],
        Some(defer),
        ErrorCode::DpubFailed,
        "DPUB",
    )
    .await
}

async fn publish_with(
    session: &mut Session,
    topic: &str,
    bodies: Vec<Bytes>,
    defer: Option<Duration>,
    code: ErrorCode,
    command: &str,
) -> Result<(), ProtocolError> {
    super::auth::check(session, command, topic, None).await?;
    session
        .broker
        .publish(topic, bodies, defer)
        .await
        .map_err(|e| failed(code, command, &e))?;
    reply_ok(session);
    Ok(())
}

fn failed(code: ErrorCode, command: &str, err: &TopicError) -> ProtocolError {
    ProtocolError::new(code, format!("{command} failed {err}"))
}

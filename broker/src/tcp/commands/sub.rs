//! `SUB <topic> <channel>`: become a consumer of one channel (once per connection).

use triage_protocol::{ErrorCode, ProtocolError};

use super::{reply_ok, wrong_state};
use crate::tcp::session::{ClientState, Session};

pub(super) async fn apply(
    session: &mut Session,
    topic: &str,
    channel: &str,
) -> Result<(), ProtocolError> {
    if session.state != ClientState::Init {
        return Err(wrong_state("SUB"));
    }
    if session.settings.heartbeat_interval.is_none() {
        return Err(ProtocolError::new(
            ErrorCode::Invalid,
            "cannot SUB with heartbeats disabled",
        ));
    }
    super::auth::check(session, "SUB", topic, Some(channel)).await?;
    let broker = session.broker.clone();
    let sub_failed =
        |reason: String| ProtocolError::new(ErrorCode::SubFailed, format!("SUB failed {reason}"));
    let channel = broker
        .channel(topic, channel)
        .await
        .map_err(|e| sub_failed(e.to_string()))?;
    channel
        .add_consumer(session.info.clone(), broker.config.max_channel_consumers)
        .map_err(|reason| sub_failed(reason.to_owned()))?;
    // The topic's tier cell, looked up once; delivery reads it against the
    // BACKPRESSURE level on every pass, so a tier change applies at once.
    // If the topic vanished in between, the channel is deleted too and the
    // session ends on its own.
    session.channel_tier = broker.existing_topic(topic).ok().map(|t| t.live_tier());
    session.channel = Some(channel);
    session.state = ClientState::Subscribed;
    reply_ok(session);
    Ok(())
}

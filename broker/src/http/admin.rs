//! Topic and channel administration: create, delete, empty, pause, unpause,
//! and (a triage extension) a topic's tier. As nsqd: create makes what is
//! missing; the others need the topic (and channel) to exist and answer 404
//! otherwise.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use triage_config::Tier;

use super::{channel_param, text, topic_param, ApiError, Params};
use crate::broker::{Broker, SettingsChange};

type Api = Result<Response, ApiError>;

/// `?tier=`, if given: `memory`, `persistent` or `delayed`.
fn tier_param(params: &Params) -> Result<Option<Tier>, ApiError> {
    let Some(raw) = params.get("tier") else {
        return Ok(None);
    };
    raw.parse::<Tier>().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("INVALID_TIER: {raw:?} is not a tier; expected memory, persistent or delayed"),
        )
    })
}

pub async fn topic_create(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    let topic = topic_param(&params)?;
    // Extension: `tier=memory|persistent|delayed`; nsqd clients never send it.
    let tier = tier_param(&params)?;
    let change = settings_param(&params)?;
    // None given: the config's rules decide.
    let settings = (!change.is_empty()).then(|| change.to_new());
    broker.topic_with_tier(topic, tier, settings).await?;
    Ok(text("OK"))
}

/// Extension: `delay`, `batch_window` (durations like `30m`, or ms) and
/// `max_attempts`, as far as given.
fn settings_param(params: &Params) -> Result<SettingsChange, ApiError> {
    let bad = |key: &str, raw: &str, expected: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "INVALID_{}: {raw:?} is not {expected}",
                key.to_ascii_uppercase()
            ),
        )
    };
    let duration = |key: &str| -> Result<Option<Duration>, ApiError> {
        params
            .get(key)
            .map(|raw| match raw.parse::<u64>() {
                Ok(ms) => Ok(Duration::from_millis(ms)),
                Err(_) => triage_config::units::parse_duration(raw)
                    .map_err(|_| bad(key, raw, "a duration like 30s, 5m or 1500 (ms)")),
            })
            .transpose()
    };
    let max_attempts = params
        .get("max_attempts")
        .map(|raw| {
            raw.parse::<u16>()
                .map_err(|_| bad("max_attempts", raw, "a number from 0 to 65535"))
        })
        .transpose()?;
    Ok(SettingsChange {
        delay: duration("delay")?,
        batch_window: duration("batch_window")?,
        max_attempts,
    })
}

/// `POST /topic/tier?topic=&tier=`, a triage extension: changes an existing
/// topic's tier in place, for what is published after the `OK` (see
/// `Broker::change_tier`); `delay`, `batch_window` and `max_attempts` as for
/// `/topic/create`. Asking for the tier and settings a topic already has is
/// a no-op `OK`. A topic without a log (memory under `memory_overflow =
/// reject`, or `#ephemeral`) and a `_triage.` system topic cannot leave
/// memory: 409.
pub async fn topic_tier(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    let topic = topic_param(&params)?;
    let tier = tier_param(&params)?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "MISSING_ARG_TIER"))?;
    let change = settings_param(&params)?;
    broker.change_tier(topic, tier, change).await?;
    Ok(text("OK"))
}

pub async fn topic_delete(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    broker.delete_topic(topic_param(&params)?).await?;
    Ok(text("OK"))
}

pub async fn topic_empty(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    broker.existing_topic(topic_param(&params)?)?.empty();
    Ok(text("OK"))
}

pub async fn topic_pause(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    broker.pause_topic(topic_param(&params)?, true).await?;
    Ok(text("OK"))
}

pub async fn topic_unpause(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    broker.pause_topic(topic_param(&params)?, false).await?;
    Ok(text("OK"))
}

pub async fn channel_create(
    State(broker): State<Arc<Broker>>,
    Query(params): Query<Params>,
) -> Api {
    broker
        .channel(topic_param(&params)?, channel_param(&params)?)
        .await?;
    Ok(text("OK"))
}

pub async fn channel_delete(
    State(broker): State<Arc<Broker>>,
    Query(params): Query<Params>,
) -> Api {
    broker
        .delete_channel(topic_param(&params)?, channel_param(&params)?)
        .await?;
    Ok(text("OK"))
}

pub async fn channel_empty(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    broker
        .existing_channel(topic_param(&params)?, channel_param(&params)?)?
        .empty();
    Ok(text("OK"))
}

pub async fn channel_pause(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    broker
        .pause_channel(topic_param(&params)?, channel_param(&params)?, true)
        .await?;
    Ok(text("OK"))
}

pub async fn channel_unpause(
    State(broker): State<Arc<Broker>>,
    Query(params): Query<Params>,
) -> Api {
    broker
        .pause_channel(topic_param(&params)?, channel_param(&params)?, false)
        .await?;
    Ok(text("OK"))
}

//! Topic and channel administration: create, delete, empty, pause, unpause,
//! and (a triage extension) a topic's tier. As nsqd: create makes what is
//! missing; the others need the topic (and channel) to exist and answer 404
//! otherwise.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use triage_config::{Tier, TopicSettings};

use super::{channel_param, text, topic_param, ApiError, Params};
use crate::broker::Broker;

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
    let settings = topic_settings(&params)?;
    broker.topic_with_tier(topic, tier, settings).await?;
    Ok(text("OK"))
}

/// Extension: `delay`, `batch_window` (durations like `30m`, or ms) and
/// `max_attempts`; `None` when none is given (the config's rules decide).
fn topic_settings(params: &Params) -> Result<Option<TopicSettings>, ApiError> {
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
    let delay = duration("delay")?;
    let batch_window = duration("batch_window")?;
    let max_attempts = params
        .get("max_attempts")
        .map(|raw| {
            raw.parse::<u16>()
                .map_err(|_| bad("max_attempts", raw, "a number from 0 to 65535"))
        })
        .transpose()?;
    if delay.is_none() && batch_window.is_none() && max_attempts.is_none() {
        return Ok(None);
    }
    Ok(Some(TopicSettings {
        delay: delay.unwrap_or_default(),
        batch_window: batch_window.unwrap_or_default(),
        max_attempts: max_attempts.unwrap_or_default(),
    }))
}

/// `POST /topic/tier?topic=&tier=`, a triage extension. Asking for the tier
/// a topic already has is a no-op `OK`. Moving an existing topic to another
/// tier means moving what it holds between memory and the store with
/// publishers and consumers attached; that is not built yet, so it answers
/// 501 and changes nothing (delete and re-create the topic with `tier=`).
pub async fn topic_tier(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    let topic = topic_param(&params)?;
    let tier = tier_param(&params)?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "MISSING_ARG_TIER"))?;
    let current = broker.existing_topic(topic)?.tier;
    if current == tier {
        return Ok(text("OK"));
    }
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "TIER_CHANGE_NOT_SUPPORTED: changing a topic's tier is not supported yet \
             ({topic} is {current}); delete it and create it with the tier it needs"
        ),
    ))
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

//! Topic and channel administration: create, delete, empty, pause, unpause.
//! As nsqd: create makes what is missing; the others need the topic (and
//! channel) to exist and answer 404 otherwise.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use triage_config::Tier;

use super::{channel_param, text, topic_param, ApiError, Params};
use crate::broker::Broker;

type Api = Result<Response, ApiError>;

pub async fn topic_create(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Api {
    let topic = topic_param(&params)?;
    // Extension: `tier=memory|persistent|delayed`; nsqd clients never send it.
    let tier = match params.get("tier") {
        None => None,
        Some(raw) => Some(raw.parse::<Tier>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "INVALID_TIER: {raw:?} is not a tier; expected memory, persistent or delayed"
                ),
            )
        })?),
    };
    broker.topic_with_tier(topic, tier).await?;
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

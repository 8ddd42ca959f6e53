//! `POST /pub?topic=[&defer=ms]` and `POST /mpub?topic=[&binary=true]`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{text, topic_param, ApiError, Params};
use crate::broker::Broker;

/// Reads the whole body, refusing it with 413 `code` as soon as it passes `limit`.
async fn read_body(body: Body, limit: usize, code: &'static str) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code))
}

pub async fn publish(
    State(broker): State<Arc<Broker>>,
    Query(params): Query<Params>,
    body: Body,
) -> Result<Response, ApiError> {
    let topic = topic_param(&params)?;
    let defer = match params.get("defer") {
        None => None,
        Some(raw) => {
            let ms: u64 = raw
                .parse()
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_DEFER"))?;
            let defer = Duration::from_millis(ms);
            if defer > broker.config.max_req_timeout {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_DEFER"));
            }
            Some(defer)
        }
    };
    let body = read_body(body, broker.config.max_msg_size as usize, "MSG_TOO_BIG").await?;
    if body.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    broker.publish(topic, vec![body], defer).await?;
    Ok(text("OK"))
}

pub async fn multi_publish(
    State(broker): State<Arc<Broker>>,
    Query(params): Query<Params>,
    body: Body,
) -> Result<Response, ApiError> {
    let topic = topic_param(&params)?;
    let body = read_body(body, broker.config.max_body_size as usize, "BODY_TOO_BIG").await?;
    // nsqd: `true`/`1` and `false`/`0`; any other value (deprecated) means binary.
    let binary = params
        .get("binary")
        .is_some_and(|v| v != "false" && v != "0");
    let max_msg_size = broker.config.max_msg_size as usize;
    let bodies = if binary {
        triage_protocol::command::decode_mpub_messages(body, &broker.protocol_limits()).map_err(
            |e| {
                // nsqd answers every decoding error with 413 and the TCP
                // error code minus its `E_` prefix (`nsqd/http.go` doMPUB).
                let code = e.code.as_str().trim_start_matches("E_");
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code.to_owned())
            },
        )?
    } else {
        let mut bodies = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            if line.len() > max_msg_size {
                return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
            }
            bodies.push(body.slice_ref(line));
        }
        bodies
    };
    if bodies.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    broker.publish(topic, bodies, None).await?;
    Ok(text("OK"))
}

//! nsqd's HTTP API on the HTTP port: `/ping`, `/info`, `/pub`, `/mpub`,
//! `/stats`, `/metrics` (Prometheus), and the topic and channel admin endpoints, with nsqd's status
//! codes, error codes and `X-NSQ-Content-Type` header, so nsqadmin, nsq_stat
//! and client libraries' HTTP helpers work unchanged.
//!
//! [`publish`] handles `/pub` and `/mpub`, [`admin`] the topic and channel
//! endpoints, [`stats`] `/ping`, `/info`, `/stats` and `/metrics`.

mod admin;
pub mod https;
mod publish;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::broker::{Broker, TopicError};

pub type Params = HashMap<String, String>;

/// Serves until the broker shuts down.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let shutdown = broker.shutdown.clone();
    let app = router(broker);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/ping", get(stats::ping))
        .route("/info", get(stats::info))
        .route("/stats", get(stats::stats))
        .route("/metrics", get(stats::metrics))
        .route("/pub", post(publish::publish))
        .route("/mpub", post(publish::multi_publish))
        .route("/topic/create", post(admin::topic_create))
        .route("/topic/delete", post(admin::topic_delete))
        .route("/topic/empty", post(admin::topic_empty))
        .route("/topic/pause", post(admin::topic_pause))
        .route("/topic/unpause", post(admin::topic_unpause))
        .route("/topic/tier", post(admin::topic_tier))
        .route("/channel/create", post(admin::channel_create))
        .route("/channel/delete", post(admin::channel_delete))
        .route("/channel/empty", post(admin::channel_empty))
        .route("/channel/pause", post(admin::channel_pause))
        .route("/channel/unpause", post(admin::channel_unpause))
        // Must follow the routes: it applies to the method routers that exist.
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .layer(axum::middleware::from_fn_with_state(
            broker.clone(),
            require_admin_token,
        ))
        // Outermost, so every response gets the header, whoever produced it.
        .layer(map_response(nsq_header))
        .with_state(broker)
}

/// With `admin_token` set, every request that may change something (any
/// method but GET and HEAD) must carry `Authorization: Bearer <token>`;
/// reads stay open, as nsqd's are. 401 `UNAUTHORIZED` otherwise.
async fn require_admin_token(
    axum::extract::State(broker): axum::extract::State<Arc<Broker>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &broker.config.admin_token else {
        return next.run(request).await;
    };
    let method = request.method();
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if same_secret(presented.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED").into_response(),
    }
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// nsqd's V1 response header; go-nsq and nsqadmin check for it. Set here
/// once for every response, errors and extractor rejections included.
async fn nsq_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        "X-NSQ-Content-Type",
        HeaderValue::from_static("nsq; version=1.0"),
    );
    response
}

/// A plain-text success, e.g. `OK`.
pub fn text(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// A JSON success.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("INTERNAL_ERROR: {e}"),
        )
        .into_response(),
    }
}

/// An nsqd-style error: `{"message": "<CODE>"}` with an HTTP status. Our own
/// extensions add a reason after the code (`CODE: reason`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

impl From<TopicError> for ApiError {
    fn from(err: TopicError) -> ApiError {
        match err {
            TopicError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"),
            TopicError::ChannelNotFound(..) => {
                ApiError::new(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND")
            }
            TopicError::TierConflict { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, format!("INVALID_TIER: {err}"))
            }
            TopicError::SettingsConflict { .. } | TopicError::InvalidSettings { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, format!("INVALID_SETTINGS: {err}"))
            }
            TopicError::TierChangeRefused { .. } => {
                ApiError::new(StatusCode::CONFLICT, format!("TIER_CHANGE_REFUSED: {err}"))
            }
            TopicError::Publish(crate::topic::PublishError::Exiting(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "EXITING")
            }
            TopicError::Publish(e) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("PUB_FAILED: {e}"))
            }
            TopicError::Store(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("STORE_FAILED: {e}"),
            ),
        }
    }
}

/// `?topic=`, validated as nsqd does.
pub fn topic_param(params: &Params) -> Result<&str, ApiError> {
    let topic = params
        .get("topic")
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
    if !triage_protocol::names::is_valid_topic_name(topic) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_TOPIC"));
    }
    Ok(topic)
}

/// `?channel=`, validated as nsqd does.
pub fn channel_param(params: &Params) -> Result<&str, ApiError> {
    let channel = params
        .get("channel")
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))?;
    if !triage_protocol::names::is_valid_channel_name(channel) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_CHANNEL"));
    }
    Ok(channel)
}

//! The HTTP side, nsqlookupd's API (`nsqlookupd/http.go`) with its status
//! codes, error codes and plain JSON bodies (1.x dropped the old
//! `{"status_code","status_txt","data"}` wrapper), plus the
//! `X-NSQ-Content-Type: nsq; version=1.0` header by which go-nsq and
//! nsqadmin know the body is not wrapped.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::Instant;
use triage_protocol::names::{is_valid_channel_name, is_valid_topic_name};

use crate::db::{PeerInfo, Registration};
use crate::server::Shared;

/// Query parameters in order; as Go's `url.Values.Get`, the first of a repeated name wins.
type Params = Vec<(String, String)>;

/// Serves until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown.clone();
    let result = axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/info", get(info))
        .route("/lookup", get(lookup))
        .route("/topics", get(topics))
        .route("/channels", get(channels))
        .route("/nodes", get(nodes))
        .route("/topic/create", post(topic_create))
        .route("/topic/delete", post(topic_delete))
        .route("/topic/tombstone", post(topic_tombstone))
        .route("/channel/create", post(channel_create))
        .route("/channel/delete", post(channel_delete))
        // Must follow the routes: it applies to the method routers that exist.
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .layer(map_response(nsq_header))
        .with_state(shared)
}

/// nsqlookupd sets it on every reply but `/ping`'s; here `/ping` has it too,
/// which no client minds.
async fn nsq_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        "X-NSQ-Content-Type",
        HeaderValue::from_static("nsq; version=1.0"),
    );
    response
}

/// nsqlookupd's error body `{"message":"<CODE>"}` with an HTTP status.
#[derive(Debug)]
struct ApiError(StatusCode, &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_with(self.0, &serde_json::json!({ "message": self.1 }))
    }
}

fn json_with<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR").into_response(),
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    json_with(StatusCode::OK, value)
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn params(query: Result<Query<Params>, QueryRejection>) -> Result<Params, ApiError> {
    query
        .map(|Query(params)| params)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "INVALID_REQUEST"))
}

/// `?topic=`, present (maybe empty: nsqlookupd only checks that it is there).
fn topic_param(params: &Params) -> Result<&str, ApiError> {
    param(params, "topic").ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))
}

/// nsqlookupd's `GetTopicChannelArgs`: both present and valid.
fn topic_channel_params(params: &Params) -> Result<(&str, &str), ApiError> {
    let bad = |code| ApiError(StatusCode::BAD_REQUEST, code);
    let topic = topic_param(params)?;
    if !is_valid_topic_name(topic) {
        return Err(bad("INVALID_ARG_TOPIC"));
    }
    let channel = param(params, "channel").ok_or(bad("MISSING_ARG_CHANNEL"))?;
    if !is_valid_channel_name(channel) {
        return Err(bad("INVALID_ARG_CHANNEL"));
    }
    Ok((topic, channel))
}

async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response()
}

async fn info() -> Response {
    json(&serde_json::json!({ "version": crate::VERSION }))
}

async fn topics(State(shared): State<Arc<Shared>>) -> Response {
    json(&serde_json::json!({ "topics": shared.db.topics() }))
}

async fn channels(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let topic = topic_param(&params)?;
    Ok(json(
        &serde_json::json!({ "channels": shared.db.channels(topic) }),
    ))
}

#[derive(Serialize)]
struct LookupReply<'a> {
    channels: Vec<String>,
    producers: Vec<&'a PeerInfo>,
}

async fn lookup(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let topic = topic_param(&params)?;
    let key = Registration::Topic(topic.to_owned());
    if !shared.db.has(&key) {
        return Err(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"));
    }
    let options = &shared.options;
    let now = Instant::now();
    let producers: Vec<_> = shared
        .db
        .producers(&key)
        .into_iter()
        .filter(|p| {
            p.is_active(
                options.inactive_producer_timeout,
                options.tombstone_lifetime,
                now,
            )
        })
        .collect();
    Ok(json(&LookupReply {
        channels: shared.db.channels(topic),
        producers: producers.iter().map(|p| &*p.peer).collect(),
    }))
}

#[derive(Serialize)]
struct Node<'a> {
    #[serde(flatten)]
    peer: &'a PeerInfo,
    tombstones: Vec<bool>,
    topics: Vec<String>,
    /// triage's extension, only for nodes that sent it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    triage_topic_tiers: BTreeMap<String, String>,
}

async fn nodes(State(shared): State<Arc<Shared>>) -> Response {
    let options = &shared.options;
    let now = Instant::now();
    // Tombstoned nodes are listed (with their tombstones); inactive ones are not.
    let peers: Vec<_> = shared
        .db
        .producers(&Registration::Node)
        .into_iter()
        .filter(|p| p.is_active(options.inactive_producer_timeout, Default::default(), now))
        .map(|p| p.peer)
        .collect();
    let mut nodes = Vec::with_capacity(peers.len());
    for peer in &peers {
        let mut topics = Vec::new();
        let mut tombstones = Vec::new();
        for key in shared.db.registrations_of(&peer.id) {
            let Registration::Topic(topic) = key else {
                continue;
            };
            let tombstoned = shared
                .db
                .producers(&Registration::Topic(topic.clone()))
                .iter()
                .find(|p| p.peer.id == peer.id)
                .is_some_and(|p| p.is_tombstoned(options.tombstone_lifetime, now));
            topics.push(topic);
            tombstones.push(tombstoned);
        }
        nodes.push(Node {
            peer,
            tombstones,
            topics,
            triage_topic_tiers: peer.tiers(),
        });
    }
    json(&serde_json::json!({ "producers": nodes }))
}

async fn topic_create(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let topic = topic_param(&params)?;
    if !is_valid_topic_name(topic) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"));
    }
    tracing::info!(topic, "adding topic");
    shared
        .db
        .add_registration(Registration::Topic(topic.to_owned()));
    Ok(StatusCode::OK.into_response())
}

async fn topic_delete(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let topic = topic_param(&params)?;
    tracing::info!(topic, "removing topic and its channels");
    shared.db.remove_topic(topic);
    Ok(StatusCode::OK.into_response())
}

async fn topic_tombstone(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let topic = topic_param(&params)?;
    let node =
        param(&params, "node").ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_NODE"))?;
    let count = shared.db.tombstone(topic, node, Instant::now());
    tracing::info!(topic, node, count, "tombstoned");
    Ok(StatusCode::OK.into_response())
}

async fn channel_create(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let (topic, channel) = topic_channel_params(&params)?;
    tracing::info!(topic, channel, "adding channel");
    shared.db.add_registration(Registration::Channel {
        topic: topic.to_owned(),
        channel: channel.to_owned(),
    });
    shared
        .db
        .add_registration(Registration::Topic(topic.to_owned()));
    Ok(StatusCode::OK.into_response())
}

async fn channel_delete(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let (topic, channel) = topic_channel_params(&params)?;
    let key = Registration::Channel {
        topic: topic.to_owned(),
        channel: channel.to_owned(),
    };
    if !shared.db.has(&key) {
        return Err(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
    }
    tracing::info!(topic, channel, "removing channel");
    shared.db.remove_registration(&key);
    Ok(StatusCode::OK.into_response())
}

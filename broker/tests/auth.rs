//! AUTH as nsqd does it, against a fake auth server speaking nsqd's auth
//! protocol and against static tokens; and the admin token on the HTTP API.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use common::{start_broker, Client, TestBroker};
use serde_json::{json, Value};
use triage_config::AuthHttpRequestMethod;
use triage_protocol::{Command, ErrorCode, Frame};

/// What the fake auth server was asked, and how it answers.
#[derive(Default)]
struct AuthServer {
    asked: Mutex<Vec<HashMap<String, String>>>,
    /// Answer per secret; unknown secrets get HTTP 403.
    answers: Mutex<HashMap<String, Value>>,
}

type Shared = Arc<AuthServer>;

async fn answer(server: &Shared, params: HashMap<String, String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secret = params.get("secret").cloned().unwrap_or_default();
    server.asked.lock().unwrap().push(params);
    match server.answers.lock().unwrap().get(&secret) {
        Some(answer) => Json(answer.clone()).into_response(),
        None => (axum::http::StatusCode::FORBIDDEN, "no").into_response(),
    }
}

async fn start_auth_server() -> (Shared, SocketAddr) {
    let server: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/auth",
            get(
                |State(s): State<Shared>, Query(q): Query<HashMap<String, String>>| async move {
                    answer(&s, q).await
                },
            )
            .post(|State(s): State<Shared>, body: Bytes| async move {
                let form = form_urlencoded::parse(&body).into_owned().collect();
                answer(&s, form).await
            }),
        )
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, addr)
}

fn grant(ttl: u64, authorizations: Value) -> Value {
    json!({ "ttl": ttl, "identity": "ticket-api", "identity_url": "https://id.example/ticket-api",
            "authorizations": authorizations })
}

/// Publish to `tickets*`; subscribe to `tickets` on channel `agents`.
fn ticket_api() -> Value {
    grant(
        3600,
        json!([
            { "topic": "^tickets", "channels": [".*"], "permissions": ["publish"] },
            { "topic": "^tickets$", "channels": ["^agents$"], "permissions": ["subscribe"] }
        ]),
    )
}

async fn broker_with(server: SocketAddr, method: AuthHttpRequestMethod) -> TestBroker {
    start_broker(|c| {
        c.auth_http_addresses = vec![server.to_string()];
        c.auth_http_request_method = method;
    })
    .await
}

async fn auth(client: &mut Client, secret: &str) -> Frame {
    client
        .send(&Command::Auth(Bytes::from(secret.to_owned())))
        .await;
    client.read_frame().await
}

async fn authed(tb: &TestBroker, secret: &str) -> Client {
    let mut client = tb.connect().await;
    let reply = client
        .identify_ok(json!({ "feature_negotiation": true }))
        .await
        .unwrap();
    assert_eq!(reply["auth_required"], true);
    let Frame::Response(body) = auth(&mut client, secret).await else {
        panic!("AUTH refused");
    };
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["identity"], "ticket-api");
    assert_eq!(body["identity_url"], "https://id.example/ticket-api");
    assert_eq!(body["permission_count"], 2);
    client
}

#[tokio::test]
async fn a_secret_allows_exactly_what_the_auth_server_says() {
    let (server, addr) = start_auth_server().await;
    server
        .answers
        .lock()
        .unwrap()
        .insert("s3cret".into(), ticket_api());
    let tb = broker_with(addr, AuthHttpRequestMethod::Get).await;

    let mut client = authed(&tb, "s3cret").await;
    client.publish("tickets", "ok").await;
    client.publish("tickets.urgent", "ok").await;
    client
        .send(&Command::Pub {
            topic: "billing".into(),
            body: Bytes::from("no"),
        })
        .await;
    let text = client.expect_fatal(ErrorCode::Unauthorized).await;
    assert_eq!(text, r#"AUTH failed for PUB on "billing" """#);

    let mut consumer = authed(&tb, "s3cret").await;
    consumer.sub("tickets", "agents").await;
    let mut other = authed(&tb, "s3cret").await;
    other
        .send(&Command::Sub {
            topic: "tickets".into(),
            channel: "audit".into(),
        })
        .await;
    let text = other.expect_fatal(ErrorCode::Unauthorized).await;
    assert_eq!(text, r#"AUTH failed for SUB on "tickets" "audit""#);

    // The auth server heard who asked, as nsqd tells it.
    let asked = server.asked.lock().unwrap()[0].clone();
    assert_eq!(asked["secret"], "s3cret");
    assert_eq!(asked["remote_ip"], "127.0.0.1");
    assert_eq!(asked["tls"], "false");
    tb.shutdown().await;
}

#[tokio::test]
async fn without_auth_the_publish_and_sub_commands_are_refused_first() {
    let (_server, addr) = start_auth_server().await;
    let tb = broker_with(addr, AuthHttpRequestMethod::Get).await;
    for (command, name) in [
        (
            Command::Pub {
                topic: "tickets".into(),
                body: Bytes::from("x"),
            },
            "PUB",
        ),
        (
            Command::Mpub {
                topic: "tickets".into(),
                bodies: vec![Bytes::from("x")],
            },
            "MPUB",
        ),
        (
            Command::Dpub {
                topic: "tickets".into(),
                defer_ms: 10,
                body: Bytes::from("x"),
            },
            "DPUB",
        ),
        (
            Command::Sub {
                topic: "tickets".into(),
                channel: "agents".into(),
            },
            "SUB",
        ),
    ] {
        let mut client = tb.connect().await;
        client.send(&command).await;
        let text = client.expect_fatal(ErrorCode::AuthFirst).await;
        assert_eq!(text, format!("AUTH required before {name}"));
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn bad_secrets_empty_grants_and_repeats_get_nsqds_errors() {
    let (server, addr) = start_auth_server().await;
    server
        .answers
        .lock()
        .unwrap()
        .insert("nothing".into(), grant(60, json!([])));
    server
        .answers
        .lock()
        .unwrap()
        .insert("s3cret".into(), ticket_api());
    let tb = broker_with(addr, AuthHttpRequestMethod::Post).await;

    let mut client = tb.connect().await;
    assert!(matches!(auth(&mut client, "wrong").await, Frame::Error(_)));
    client.expect_closed().await;
    let mut client = tb.connect().await;
    client.send(&Command::Auth(Bytes::from("wrong"))).await;
    assert_eq!(
        client.expect_fatal(ErrorCode::AuthFailed).await,
        "AUTH failed"
    );

    let mut client = tb.connect().await;
    client.send(&Command::Auth(Bytes::from("nothing"))).await;
    let text = client.expect_fatal(ErrorCode::Unauthorized).await;
    assert_eq!(text, "AUTH no authorizations found");

    let mut client = authed(&tb, "s3cret").await;
    client.send(&Command::Auth(Bytes::from("s3cret"))).await;
    let text = client.expect_fatal(ErrorCode::Invalid).await;
    assert_eq!(text, "AUTH already set");
    // POST keeps the secret out of the URL; the server still got it.
    assert!(server
        .asked
        .lock()
        .unwrap()
        .iter()
        .any(|a| a.get("secret").map(String::as_str) == Some("s3cret")));
    tb.shutdown().await;
}

#[tokio::test]
async fn an_expired_grant_is_asked_for_again() {
    let (server, addr) = start_auth_server().await;
    server.answers.lock().unwrap().insert(
        "short".into(),
        grant(
            1,
            json!([
                { "topic": ".*", "channels": [".*"], "permissions": ["publish"] },
                { "topic": ".*", "channels": [".*"], "permissions": ["subscribe"] }
            ]),
        ),
    );
    let tb = broker_with(addr, AuthHttpRequestMethod::Get).await;
    let mut client = tb.connect().await;
    client
        .identify_ok(json!({ "feature_negotiation": true }))
        .await;
    assert!(matches!(
        auth(&mut client, "short").await,
        Frame::Response(_)
    ));
    client.publish("anything", "while valid").await;
    // The secret is revoked; the grant's one-second TTL must run out before
    // the broker notices.
    server.answers.lock().unwrap().remove("short");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client
        .send(&Command::Pub {
            topic: "anything".into(),
            body: Bytes::from("after expiry"),
        })
        .await;
    assert_eq!(
        client.expect_fatal(ErrorCode::AuthFailed).await,
        "AUTH failed"
    );
    assert_eq!(server.asked.lock().unwrap().len(), 2, "asked again once");
    tb.shutdown().await;
}

#[tokio::test]
async fn static_tokens_need_no_auth_server_and_auth_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let tokens = json!({ "s3cret": ticket_api() });
    std::fs::write(&path, tokens.to_string()).unwrap();
    let tb = start_broker(|c| c.auth_tokens_file = Some(path.clone())).await;
    let mut client = authed(&tb, "s3cret").await;
    client.publish("tickets", "static").await;
    let mut stranger = tb.connect().await;
    stranger.send(&Command::Auth(Bytes::from("guess"))).await;
    stranger.expect_fatal(ErrorCode::AuthFailed).await;
    tb.shutdown().await;

    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.send(&Command::Auth(Bytes::from("s3cret"))).await;
    assert_eq!(
        client.expect_fatal(ErrorCode::AuthDisabled).await,
        "AUTH disabled"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn a_bad_tokens_file_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::fs::write(
        &path,
        r#"{"s3cret": {"authorizations": [{"topic": "(", "permissions": []}]}}"#,
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = triage_config::BrokerConfig {
        tcp_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        data_path: data.path().to_path_buf(),
        auth_tokens_file: Some(path),
        ..Default::default()
    };
    let text = triage_broker::Server::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("auth_tokens_file") && text.contains("compile"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret"),
        "the secret is not printed: {text}"
    );
}

/// One HTTP/1.1 request; returns the status.
async fn http_status(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply[9..12].parse().unwrap()
}

#[tokio::test]
async fn the_admin_token_guards_every_mutating_http_endpoint() {
    const TOKEN: &str = "0123456789abcdef-admin";
    let tb = start_broker(|c| c.admin_token = Some(TOKEN.into())).await;
    let http = tb.server.http_addr;
    for path in [
        "/topic/create?topic=t",
        "/pub?topic=t",
        "/channel/create?topic=t&channel=c",
    ] {
        assert_eq!(http_status(http, "POST", path, None).await, 401, "{path}");
        assert_eq!(
            http_status(http, "POST", path, Some("wrong")).await,
            401,
            "{path}"
        );
    }
    assert_eq!(
        http_status(http, "POST", "/topic/create?topic=t", Some(TOKEN)).await,
        200
    );
    assert_eq!(http_status(http, "GET", "/stats", None).await, 200);
    assert_eq!(http_status(http, "GET", "/ping", None).await, 200);
    tb.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_auth_server_refuses_the_client() {
    // A loopback port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tb = broker_with(closed, AuthHttpRequestMethod::Get).await;
    let mut client = tb.connect().await;
    client.send(&Command::Auth(Bytes::from("s3cret"))).await;
    assert_eq!(
        client.expect_fatal(ErrorCode::AuthFailed).await,
        "AUTH failed"
    );
    let mut other = tb.connect().await;
    other
        .send(&Command::Pub {
            topic: "t".into(),
            body: Bytes::from("x"),
        })
        .await;
    other.expect_fatal(ErrorCode::AuthFirst).await;
    tb.shutdown().await;
}

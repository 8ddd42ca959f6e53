//! The HTTP API against a hand-written HTTP/1.1 client: status codes, error
//! codes, headers and body shapes, as nsqlookupd 1.x sends them.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

const NSQ_HEADER: &str = "nsq; version=1.0";

#[tokio::test]
async fn ping_and_info() {
    let lookupd = start_lookupd(|_| {}).await;
    let ping = http(lookupd.http_addr, "GET", "/ping").await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    let info = http(lookupd.http_addr, "GET", "/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json(), json!({"version": triage_lookupd::VERSION}));
    lookupd.shutdown().await;
}

/// go-nsq reads a body as unwrapped JSON only when this header is present.
#[tokio::test]
async fn every_json_reply_carries_the_nsq_content_type_header() {
    let lookupd = start_lookupd(|_| {}).await;
    for (method, path) in [
        ("GET", "/info"),
        ("GET", "/topics"),
        ("GET", "/nodes"),
        ("GET", "/lookup?topic=missing"),
        ("GET", "/nowhere"),
        ("POST", "/topic/create?topic=t"),
    ] {
        let reply = http(lookupd.http_addr, method, path).await;
        assert_eq!(
            reply.header("x-nsq-content-type"),
            Some(NSQ_HEADER),
            "{method} {path}"
        );
    }
    let topics = http(lookupd.http_addr, "GET", "/topics").await;
    assert_eq!(
        topics.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    lookupd.shutdown().await;
}

#[tokio::test]
async fn errors_have_nsqlookupds_codes() {
    let lookupd = start_lookupd(|_| {}).await;
    let cases = [
        ("GET", "/lookup", 400, "MISSING_ARG_TOPIC"),
        ("GET", "/lookup?topic=nothing", 404, "TOPIC_NOT_FOUND"),
        ("GET", "/channels", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/create", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/create?topic=a*b", 400, "INVALID_ARG_TOPIC"),
        ("POST", "/topic/delete", 400, "MISSING_ARG_TOPIC"),
        ("POST", "/topic/tombstone?topic=t", 400, "MISSING_ARG_NODE"),
        (
            "POST",
            "/channel/create?topic=t",
            400,
            "MISSING_ARG_CHANNEL",
        ),
        (
            "POST",
            "/channel/create?topic=t&channel=a*b",
            400,
            "INVALID_ARG_CHANNEL",
        ),
        (
            "POST",
            "/channel/delete?topic=t&channel=c",
            404,
            "CHANNEL_NOT_FOUND",
        ),
        ("GET", "/topic/create?topic=t", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/nowhere", 404, "NOT_FOUND"),
    ];
    for (method, path, status, code) in cases {
        let reply = http(lookupd.http_addr, method, path).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert_eq!(reply.json(), json!({"message": code}), "{method} {path}");
    }
    lookupd.shutdown().await;
}

#[tokio::test]
async fn topics_and_channels_are_created_and_deleted_over_http() {
    let lookupd = start_lookupd(|_| {}).await;
    let http_addr = lookupd.http_addr;
    let empty = http(http_addr, "GET", "/topics").await;
    assert_eq!(empty.json(), json!({"topics": []}));

    let created = http(http_addr, "POST", "/topic/create?topic=orders").await;
    assert_eq!((created.status, created.body.as_str()), (200, ""));
    // A created topic is found even with no producer, as in nsqlookupd.
    assert_eq!(
        get_json(http_addr, "/lookup?topic=orders").await,
        json!({"channels": [], "producers": []})
    );
    let channel = http(http_addr, "POST", "/channel/create?topic=audit&channel=c1").await;
    assert_eq!(channel.status, 200);
    assert_eq!(
        get_json(http_addr, "/topics").await,
        json!({"topics": ["audit", "orders"]})
    );
    assert_eq!(
        get_json(http_addr, "/channels?topic=audit").await,
        json!({"channels": ["c1"]})
    );
    let deleted = http(http_addr, "POST", "/channel/delete?topic=audit&channel=c1").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        get_json(http_addr, "/channels?topic=audit").await,
        json!({"channels": []})
    );
    http(http_addr, "POST", "/channel/create?topic=audit&channel=c2").await;
    let deleted = http(http_addr, "POST", "/topic/delete?topic=audit").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        get_json(http_addr, "/topics").await,
        json!({"topics": ["orders"]})
    );
    assert_eq!(
        get_json(http_addr, "/channels?topic=audit").await,
        json!({"channels": []})
    );
    lookupd.shutdown().await;
}

#[tokio::test]
async fn nodes_lists_each_identified_node_with_nsqlookupds_fields() {
    let lookupd = start_lookupd(|_| {}).await;
    let mut client = identified(lookupd.tcp_addr, &node("10.0.0.7", 4150, 4151)).await;
    assert_eq!(client.command("REGISTER t").await, "OK");
    let nodes = get_json(lookupd.http_addr, "/nodes").await;
    let mut fields: Vec<_> = nodes["producers"][0]
        .as_object()
        .expect("a node")
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "broadcast_address",
            "hostname",
            "http_port",
            "remote_address",
            "tcp_port",
            "tombstones",
            "topics",
            "topology_region",
            "topology_zone",
            "version"
        ]
    );
    lookupd.shutdown().await;
}

//! Inactive producers and tombstones, with short configured timeouts. The
//! tests wait for conditions (polling with a deadline); the margins are the
//! configured durations, a thousand times a loopback round trip.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_producer_that_stops_pinging_is_hidden_until_it_pings_again() {
    let lookupd = start_lookupd(|o| o.inactive_producer_timeout = Duration::from_secs(2)).await;
    let http_addr = lookupd.http_addr;
    let mut client = identified(lookupd.tcp_addr, &node("10.0.0.1", 4150, 4151)).await;
    assert_eq!(client.command("REGISTER t c").await, "OK");
    assert_eq!(lookup_ports(http_addr, "t").await, [4150]);

    eventually(
        Duration::from_secs(10),
        "the silent producer to expire",
        || async { lookup_ports(http_addr, "t").await.is_empty().then_some(()) },
    )
    .await;
    // Hidden, not forgotten: the topic and channel stay, and /nodes hides it too.
    assert_eq!(
        get_json(http_addr, "/lookup?topic=t").await,
        json!({"channels": ["c"], "producers": []})
    );
    assert_eq!(
        get_json(http_addr, "/nodes").await,
        json!({"producers": []})
    );

    assert_eq!(client.command("PING").await, "OK");
    assert_eq!(lookup_ports(http_addr, "t").await, [4150]);
    lookupd.shutdown().await;
}

#[tokio::test]
async fn a_tombstone_hides_one_node_for_its_lifetime() {
    let lookupd = start_lookupd(|o| o.tombstone_lifetime = Duration::from_secs(2)).await;
    let http_addr = lookupd.http_addr;
    let mut first = identified(lookupd.tcp_addr, &node("10.0.0.1", 4150, 4151)).await;
    let mut second = identified(lookupd.tcp_addr, &node("10.0.0.2", 5150, 5151)).await;
    assert_eq!(first.command("REGISTER t").await, "OK");
    assert_eq!(second.command("REGISTER t").await, "OK");
    assert_eq!(first.command("REGISTER u").await, "OK");
    assert_eq!(lookup_ports(http_addr, "t").await, [4150, 5150]);

    let tombstone = http(
        http_addr,
        "POST",
        "/topic/tombstone?topic=t&node=10.0.0.1:4151",
    )
    .await;
    assert_eq!(tombstone.status, 200);
    assert_eq!(lookup_ports(http_addr, "t").await, [5150]);
    // Only for that topic; /nodes still lists the node, with its tombstone.
    assert_eq!(lookup_ports(http_addr, "u").await, [4150]);
    let nodes = get_json(http_addr, "/nodes").await;
    let tombstoned = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["broadcast_address"] == "10.0.0.1")
        .expect("the tombstoned node is listed")
        .clone();
    assert_eq!(tombstoned["topics"], json!(["t", "u"]));
    assert_eq!(tombstoned["tombstones"], json!([true, false]));
    // Re-registering does not lift it, as in nsqlookupd.
    assert_eq!(first.command("REGISTER t").await, "OK");
    assert_eq!(lookup_ports(http_addr, "t").await, [5150]);

    eventually(
        Duration::from_secs(10),
        "the tombstone to lapse",
        || async { (lookup_ports(http_addr, "t").await == [4150, 5150]).then_some(()) },
    )
    .await;
    lookupd.shutdown().await;
}

//! Protocol V1 over a real socket, against a hand-written client: replies,
//! error texts, and what each command does to the registrations.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn identify_replies_with_lookupds_own_details() {
    let lookupd = start_lookupd(|_| {}).await;
    let mut client = V1Client::connect(lookupd.tcp_addr).await;
    let reply: serde_json::Value =
        serde_json::from_str(&client.identify(&node("10.0.0.1", 4150, 4151)).await).unwrap();
    assert_eq!(reply["tcp_port"], lookupd.tcp_addr.port());
    assert_eq!(reply["http_port"], lookupd.http_addr.port());
    assert_eq!(reply["broadcast_address"], "lookupd.test");
    assert_eq!(reply["version"], triage_lookupd::VERSION);
    assert!(reply["hostname"].is_string());
    // triage's extension: this lookupd takes TIER commands.
    assert_eq!(reply["triage_tiers"], true);
    lookupd.shutdown().await;
}

#[tokio::test]
async fn register_makes_a_node_a_producer_of_the_topic_and_its_channel() {
    let lookupd = start_lookupd(|_| {}).await;
    let mut client = identified(lookupd.tcp_addr, &node("10.0.0.1", 4150, 4151)).await;
    assert_eq!(client.command("REGISTER orders billing").await, "OK");
    assert_eq!(client.command("REGISTER audit").await, "OK");
    assert_eq!(client.command("PING").await, "OK");

    let http = lookupd.http_addr;
    let lookup = get_json(http, "/lookup?topic=orders").await;
    assert_eq!(lookup["channels"], json!(["billing"]));
    let producer = &lookup["producers"][0];
    assert_eq!(lookup["producers"].as_array().unwrap().len(), 1);
    assert_eq!(producer["broadcast_address"], "10.0.0.1");
    assert_eq!(producer["tcp_port"], 4150);
    assert_eq!(producer["http_port"], 4151);
    assert_eq!(producer["version"], "1.3.0");
    assert_eq!(producer["hostname"], "node.test");
    assert_eq!(
        producer["remote_address"],
        client.stream.local_addr().unwrap().to_string()
    );
    assert_eq!(
        get_json(http, "/topics").await,
        json!({"topics": ["audit", "orders"]})
    );
    assert_eq!(
        get_json(http, "/channels?topic=orders").await,
        json!({"channels": ["billing"]})
    );
    let nodes = get_json(http, "/nodes").await;
    assert_eq!(nodes["producers"][0]["topics"], json!(["audit", "orders"]));
    assert_eq!(nodes["producers"][0]["tombstones"], json!([false, false]));
    lookupd.shutdown().await;
}

#[tokio::test]
async fn unregister_drops_a_channel_or_a_topic_with_the_nodes_channels() {
    let lookupd = start_lookupd(|_| {}).await;
    let http = lookupd.http_addr;
    let mut client = identified(lookupd.tcp_addr, &node("10.0.0.1", 4150, 4151)).await;
    for line in ["REGISTER t a", "REGISTER t b", "REGISTER t e#ephemeral"] {
        assert_eq!(client.command(line).await, "OK");
    }
    assert_eq!(client.command("UNREGISTER t e#ephemeral").await, "OK");
    // An ephemeral channel goes with its last producer; others stay listed.
    assert_eq!(
        get_json(http, "/channels?topic=t").await,
        json!({"channels": ["a", "b"]})
    );
    assert_eq!(client.command("UNREGISTER t").await, "OK");
    let lookup = get_json(http, "/lookup?topic=t").await;
    assert_eq!(lookup["producers"], json!([]));
    let nodes = get_json(http, "/nodes").await;
    assert_eq!(nodes["producers"][0]["topics"], json!([]));
    lookupd.shutdown().await;
}

#[tokio::test]
async fn a_closed_connection_takes_its_registrations_with_it() {
    let lookupd = start_lookupd(|_| {}).await;
    let http = lookupd.http_addr;
    let mut first = identified(lookupd.tcp_addr, &node("10.0.0.1", 4150, 4151)).await;
    let mut second = identified(lookupd.tcp_addr, &node("10.0.0.2", 4150, 4151)).await;
    assert_eq!(first.command("REGISTER t c").await, "OK");
    assert_eq!(second.command("REGISTER t c").await, "OK");
    assert_eq!(lookup_ports(http, "t").await.len(), 2);
    drop(first);
    let remaining = eventually(READ_TIMEOUT, "the closed node to go", || async {
        let lookup = get_json(http, "/lookup?topic=t").await;
        let producers = lookup["producers"].as_array().unwrap().clone();
        (producers.len() == 1).then_some(producers)
    })
    .await;
    assert_eq!(remaining[0]["broadcast_address"], "10.0.0.2");
    let nodes = get_json(http, "/nodes").await;
    assert_eq!(nodes["producers"].as_array().unwrap().len(), 1);
    lookupd.shutdown().await;
}

/// Each case: what is sent after the magic, and the error reply; every
/// error closes the connection, as nsqlookupd's are all fatal.
#[tokio::test]
async fn every_error_is_replied_and_closes_the_connection() {
    let lookupd = start_lookupd(|_| {}).await;
    let addr = lookupd.tcp_addr;
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "unknown command",
            b"HELLO\n",
            "E_INVALID invalid command HELLO",
        ),
        ("empty line", b"\n", "E_INVALID invalid command "),
        (
            "REGISTER first",
            b"REGISTER t\n",
            "E_INVALID client must IDENTIFY",
        ),
        (
            "UNREGISTER first",
            b"UNREGISTER t\n",
            "E_INVALID client must IDENTIFY",
        ),
        (
            "IDENTIFY without fields",
            b"IDENTIFY\n\x00\x00\x00\x02{}",
            "E_BAD_BODY IDENTIFY missing fields",
        ),
        (
            "IDENTIFY not JSON",
            b"IDENTIFY\n\x00\x00\x00\x03{x}",
            "E_BAD_BODY IDENTIFY failed to decode JSON body",
        ),
        (
            "IDENTIFY negative size",
            b"IDENTIFY\n\xff\xff\xff\xff",
            "E_BAD_BODY IDENTIFY body size -1 is not within 1..=1048576",
        ),
        (
            "IDENTIFY huge size",
            b"IDENTIFY\n\x7f\xff\xff\xff",
            "E_BAD_BODY IDENTIFY body size 2147483647 is not within 1..=1048576",
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut client = V1Client::connect(addr).await;
        client.send(bytes).await;
        assert_eq!(client.reply().await, *expected, "{what}");
        client.expect_closed().await;
    }

    let identified_cases: &[(&str, &str)] = &[
        (
            "REGISTER",
            "E_INVALID REGISTER insufficient number of params",
        ),
        (
            "REGISTER bad*topic",
            "E_BAD_TOPIC REGISTER topic name 'bad*topic' is not valid",
        ),
        (
            "UNREGISTER t bad*channel",
            "E_BAD_CHANNEL UNREGISTER channel name 'bad*channel' is not valid",
        ),
    ];
    for (line, expected) in identified_cases {
        let mut client = identified(addr, &node("10.0.0.1", 4150, 4151)).await;
        assert_eq!(client.command(line).await, *expected, "{line}");
        client.expect_closed().await;
    }

    let mut twice = identified(addr, &node("10.0.0.1", 4150, 4151)).await;
    assert_eq!(
        twice.identify(&node("10.0.0.1", 4150, 4151)).await,
        "E_INVALID cannot IDENTIFY again"
    );
    twice.expect_closed().await;

    let mut long_line = V1Client::connect(addr).await;
    long_line.send(&vec![b'A'; 2000]).await;
    assert_eq!(
        long_line.reply().await,
        "E_INVALID command line longer than 1024 bytes"
    );
    long_line.expect_closed().await;
    lookupd.shutdown().await;
}

#[tokio::test]
async fn a_wrong_magic_gets_e_bad_protocol() {
    let lookupd = start_lookupd(|_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(lookupd.tcp_addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"  V2")
        .await
        .unwrap();
    let mut client = V1Client { stream };
    assert_eq!(client.reply().await, "E_BAD_PROTOCOL");
    client.expect_closed().await;
    lookupd.shutdown().await;
}

#[tokio::test]
async fn ping_before_identify_is_fine_and_extra_params_are_ignored() {
    let lookupd = start_lookupd(|_| {}).await;
    let mut client = V1Client::connect(lookupd.tcp_addr).await;
    assert_eq!(client.command("PING").await, "OK");
    client.identify(&node("10.0.0.1", 4150, 4151)).await;
    // nsqlookupd reads two parameters and ignores the rest; "\r\n" is trimmed.
    assert_eq!(client.command("REGISTER t c extra\r").await, "OK");
    assert_eq!(
        get_json(lookupd.http_addr, "/channels?topic=t").await,
        json!({"channels": ["c"]})
    );
    lookupd.shutdown().await;
}

#[tokio::test]
async fn triage_tiers_in_identify_show_in_nodes_only() {
    let lookupd = start_lookupd(|_| {}).await;
    let mut body = node("10.0.0.1", 4150, 4151);
    body["triage_topic_tiers"] = json!({"orders": "persistent"});
    let mut client = identified(lookupd.tcp_addr, &body).await;
    assert_eq!(client.command("REGISTER orders").await, "OK");
    let nodes = get_json(lookupd.http_addr, "/nodes").await;
    assert_eq!(
        nodes["producers"][0]["triage_topic_tiers"],
        json!({"orders": "persistent"})
    );
    let lookup = get_json(lookupd.http_addr, "/lookup?topic=orders").await;
    assert!(lookup["producers"][0].get("triage_topic_tiers").is_none());

    // TIER updates the map, and a topic's UNREGISTER forgets its tier.
    assert_eq!(client.command("TIER alerts MEMORY").await, "OK");
    assert_eq!(client.command("UNREGISTER orders").await, "OK");
    let nodes = get_json(lookupd.http_addr, "/nodes").await;
    assert_eq!(
        nodes["producers"][0]["triage_topic_tiers"],
        json!({"alerts": "memory"})
    );
    lookupd.shutdown().await;
}

#[tokio::test]
async fn tier_errors_close_the_connection() {
    let lookupd = start_lookupd(|_| {}).await;
    let addr = lookupd.tcp_addr;
    let mut anonymous = V1Client::connect(addr).await;
    assert_eq!(
        anonymous.command("TIER t memory").await,
        "E_INVALID client must IDENTIFY"
    );
    anonymous.expect_closed().await;
    for (line, expected) in [
        ("TIER t", "E_INVALID TIER needs a topic and a tier"),
        ("TIER t fast", "E_INVALID TIER unknown tier 'fast'"),
        (
            "TIER bad*topic memory",
            "E_BAD_TOPIC TIER topic name 'bad*topic' is not valid",
        ),
    ] {
        let mut client = identified(addr, &node("10.0.0.1", 4150, 4151)).await;
        assert_eq!(client.command(line).await, expected, "{line}");
        client.expect_closed().await;
    }
    lookupd.shutdown().await;
}

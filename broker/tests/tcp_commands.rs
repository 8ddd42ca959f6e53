//! Every V2 command and every error path, over real sockets against a real
//! broker: what it replies, and whether it keeps or closes the connection
//! (only E_FIN_FAILED, E_REQ_FAILED and E_TOUCH_FAILED keep it).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{body_frame, body_str, start_broker, timed, Client, TestBroker};
use serde_json::{json, Value};
use triage_protocol::{Command, ErrorCode, MessageId};

/// A connection with `bytes` sent after the magic must get `code` and be closed.
async fn expect_fatal_after(tb: &TestBroker, bytes: &[u8], code: ErrorCode) -> String {
    let mut client = tb.connect().await;
    client.send_raw(bytes).await;
    client.expect_fatal(code).await
}

// ---------------------------------------------------------------- magic

#[tokio::test]
async fn wrong_magic_is_bad_protocol_and_closes() {
    let tb = start_broker(|_| {}).await;
    for magic in [&b"  V1"[..], b"V2  ", b"GET / HTTP/1.1\r\n"] {
        let mut client = Client::connect_raw(tb.tcp_addr()).await;
        client.send_raw(magic).await;
        client.expect_fatal(ErrorCode::BadProtocol).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn magic_split_across_writes_and_pipelined_commands_work() {
    let tb = start_broker(|_| {}).await;
    let mut client = Client::connect_raw(tb.tcp_addr()).await;
    client.send_raw(b"  ").await;
    client.expect_nothing_for(Duration::from_millis(50)).await;
    // The rest of the magic, and two commands, in one write.
    let mut rest = b"V2PUB t\n".to_vec();
    rest.extend(body_frame(b"one"));
    rest.extend(b"PUB t\r\n"); // a trailing \r is stripped, as nsqd does
    rest.extend(body_frame(b"two"));
    client.send_raw(&rest).await;
    client.expect_ok().await;
    client.expect_ok().await;
    let mut consumer = tb.consumer("t", "c", 10).await;
    let msgs = consumer.read_messages(2).await;
    assert_eq!(
        msgs.iter().map(body_str).collect::<Vec<_>>(),
        ["one", "two"]
    );
    tb.shutdown().await;
}

// ---------------------------------------------------------------- IDENTIFY

#[tokio::test]
async fn identify_without_feature_negotiation_replies_plain_ok() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    let reply = client
        .identify_ok(json!({"client_id": "c1", "hostname": "h", "user_agent": "test/1"}))
        .await;
    assert_eq!(reply, None);
    client.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn identify_with_feature_negotiation_replies_all_13_fields() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    let reply = client
        .identify_ok(json!({"feature_negotiation": true}))
        .await
        .expect("JSON reply");
    let fields: Vec<&str> = reply
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "max_rdy_count",
        "version",
        "max_msg_timeout",
        "msg_timeout",
        "tls_v1",
        "deflate",
        "deflate_level",
        "max_deflate_level",
        "snappy",
        "sample_rate",
        "auth_required",
        "output_buffer_size",
        "output_buffer_timeout",
    ] {
        assert!(
            fields.contains(&field),
            "IDENTIFY reply lacks {field}: {reply}"
        );
    }
    assert_eq!(fields.len(), 13, "{reply}");
    assert_eq!(reply["max_rdy_count"], 2500);
    assert_eq!(reply["version"], triage_broker::VERSION);
    assert_eq!(reply["max_msg_timeout"], 900_000);
    assert_eq!(reply["msg_timeout"], 60_000);
    assert_eq!(reply["tls_v1"], false);
    assert_eq!(reply["deflate"], false);
    assert_eq!(reply["snappy"], false);
    assert_eq!(reply["max_deflate_level"], 6);
    assert_eq!(reply["sample_rate"], 0);
    assert_eq!(reply["auth_required"], false);
    assert_eq!(reply["output_buffer_size"], 16384);
    assert_eq!(reply["output_buffer_timeout"], 250);
    // tokio-nsq parses the reply strictly into this shape.
    serde_json::from_value::<triage_protocol::IdentifyResponse>(reply).unwrap();
    client.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn identify_reply_reflects_negotiated_values() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    let reply = client
        .identify_ok(json!({
            "feature_negotiation": true,
            "heartbeat_interval": 5000,
            "output_buffer_size": 1024,
            "output_buffer_timeout": 100,
            "sample_rate": 10,
            "msg_timeout": 5000,
            // deprecated fields real clients still send: ignored, not an error
            "short_id": "s",
            "long_id": "l",
            "topology_zone": "z",
        }))
        .await
        .unwrap();
    assert_eq!(reply["msg_timeout"], 5000);
    assert_eq!(reply["sample_rate"], 10);
    assert_eq!(reply["output_buffer_size"], 1024);
    assert_eq!(reply["output_buffer_timeout"], 100);
    client.assert_alive().await;
    tb.shutdown().await;
}

/// nsqd reports `deflate_level` 6 (capped at max-deflate-level) even when
/// deflate is not negotiated (`protocol_v2.go` IDENTIFY: `deflateLevel := 6`).
#[tokio::test]
async fn identify_reports_deflate_level_like_nsqd() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    let reply = client
        .identify_ok(json!({"feature_negotiation": true}))
        .await
        .unwrap();
    assert_eq!(reply["deflate_level"], 6, "{reply}");
    tb.shutdown().await;
}

#[tokio::test]
async fn identify_invalid_values_are_bad_body_and_close() {
    let tb = start_broker(|_| {}).await;
    let cases: Vec<Value> = vec![
        json!({"heartbeat_interval": 999}),
        json!({"heartbeat_interval": 60_001}),
        json!({"heartbeat_interval": -2}),
        json!({"output_buffer_size": 63}),
        json!({"output_buffer_size": 65_537}),
        json!({"output_buffer_size": -2}),
        json!({"output_buffer_timeout": 24}),
        json!({"output_buffer_timeout": 30_001}),
        json!({"output_buffer_timeout": -2}),
        json!({"sample_rate": -1}),
        json!({"sample_rate": 100}),
        json!({"msg_timeout": 999}),
        json!({"msg_timeout": 900_001}),
        json!({"msg_timeout": -1}),
        // wrong JSON types
        json!({"snappy": "yes"}),
        json!({"heartbeat_interval": 1.5}),
        json!({"client_id": 7}),
        json!([1, 2]),
        json!("just a string"),
    ];
    for case in cases {
        for feature_negotiation in [false, true] {
            let mut case = case.clone();
            if let Some(fields) = case.as_object_mut() {
                fields.insert("feature_negotiation".into(), feature_negotiation.into());
            }
            let mut client = tb.connect().await;
            match client.identify(case.clone()).await {
                triage_protocol::Frame::Error(data) => {
                    let text = String::from_utf8_lossy(&data);
                    assert!(text.starts_with("E_BAD_BODY "), "{case}: {text}");
                }
                other => panic!(
                    "{case}: expected E_BAD_BODY, got {}",
                    common::describe(&other)
                ),
            }
            client.expect_closed().await;
        }
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn identify_body_not_json_or_badly_sized_is_bad_body() {
    let tb = start_broker(|c| c.max_body_size = 1024).await;
    let mut not_json = b"IDENTIFY\n".to_vec();
    not_json.extend(body_frame(b"{not json"));
    expect_fatal_after(&tb, &not_json, ErrorCode::BadBody).await;
    for size in [0u32, 1025, u32::MAX] {
        let mut bytes = b"IDENTIFY\n".to_vec();
        bytes.extend(size.to_be_bytes());
        expect_fatal_after(&tb, &bytes, ErrorCode::BadBody).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn identify_snappy_and_deflate_together_is_identify_failed() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    let frame = client
        .identify(json!({"feature_negotiation": true, "snappy": true, "deflate": true}))
        .await;
    match frame {
        triage_protocol::Frame::Error(data) => {
            assert!(
                String::from_utf8_lossy(&data).starts_with("E_IDENTIFY_FAILED "),
                "{data:?}"
            )
        }
        other => panic!(
            "expected E_IDENTIFY_FAILED, got {}",
            common::describe(&other)
        ),
    }
    client.expect_closed().await;
    tb.shutdown().await;
}

/// nsqd "bails out early" without feature negotiation: it replies `OK` and
/// negotiates nothing, so the stream stays plain even if snappy or deflate
/// was asked for (`protocol_v2.go` IDENTIFY).
#[tokio::test]
async fn identify_compression_without_feature_negotiation_is_ignored() {
    let tb = start_broker(|_| {}).await;
    for request in [
        json!({"snappy": true}),
        json!({"deflate": true}),
        json!({"snappy": true, "deflate": true}),
    ] {
        let mut client = tb.connect().await;
        let reply = client.identify(request.clone()).await;
        assert!(
            matches!(&reply, triage_protocol::Frame::Response(d) if d == "OK"),
            "{request}: {}",
            common::describe(&reply)
        );
        // Plain PUB, and the next bytes on the wire are a plain OK frame.
        client
            .send(&Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"x"),
            })
            .await;
        let plain_ok = [0, 0, 0, 6, 0, 0, 0, 0, b'O', b'K'];
        let wire = client.read_raw(plain_ok.len()).await;
        assert_eq!(
            wire, plain_ok,
            "{request}: the stream was switched to compression without feature_negotiation"
        );
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn identify_twice_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.identify_ok(json!({})).await;
    let reply = client.identify(json!({})).await;
    assert!(
        matches!(&reply, triage_protocol::Frame::Error(d) if d.starts_with(b"E_INVALID ")),
        "{reply:?}"
    );
    client.expect_closed().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn identify_after_sub_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.sub("t", "c").await;
    let reply = client.identify(json!({})).await;
    assert!(
        matches!(&reply, triage_protocol::Frame::Error(d) if d.starts_with(b"E_INVALID ")),
        "{reply:?}"
    );
    client.expect_closed().await;
    tb.shutdown().await;
}

// ---------------------------------------------------------------- PUB, MPUB, DPUB

#[tokio::test]
async fn pub_is_acknowledged_and_delivered() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 1).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let mut producer = tb.connect().await;
    producer.publish("t", "hello").await;
    let msg = consumer.read_message().await;
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert_eq!(&msg.body[..], b"hello");
    assert_eq!(msg.attempts, 1);
    assert!(
        msg.id.as_bytes().iter().all(u8::is_ascii_hexdigit),
        "id {:?}",
        msg.id
    );
    assert!(
        (before..=after).contains(&msg.timestamp_ns),
        "timestamp {} not in {before}..={after}",
        msg.timestamp_ns
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn mpub_is_acknowledged_and_delivered_in_order() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 10).await;
    let mut producer = tb.connect().await;
    producer.mpub("t", common::bodies("m", 3)).await;
    let msgs = consumer.read_messages(3).await;
    assert_eq!(
        msgs.iter().map(body_str).collect::<Vec<_>>(),
        ["m-0", "m-1", "m-2"]
    );
    let ids: std::collections::HashSet<MessageId> = msgs.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 3, "ids must differ");
    tb.shutdown().await;
}

#[tokio::test]
async fn dpub_zero_delivers_at_once() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 1).await;
    let mut producer = tb.connect().await;
    producer.dpub("t", 0, "now").await;
    assert_eq!(&consumer.read_message().await.body[..], b"now");
    tb.shutdown().await;
}

#[tokio::test]
async fn bad_topic_names_are_bad_topic_and_close() {
    let tb = start_broker(|_| {}).await;
    let long = "a".repeat(65);
    for name in ["bad/name", "", "x#ephemeralx", "ä", long.as_str()] {
        let mut pub_cmd = format!("PUB {name}\n").into_bytes();
        pub_cmd.extend(body_frame(b"x"));
        expect_fatal_after(&tb, &pub_cmd, ErrorCode::BadTopic).await;
        let mut dpub_cmd = format!("DPUB {name} 10\n").into_bytes();
        dpub_cmd.extend(body_frame(b"x"));
        expect_fatal_after(&tb, &dpub_cmd, ErrorCode::BadTopic).await;
        let mut mpub_cmd = format!("MPUB {name}\n").into_bytes();
        mpub_cmd.extend(body_frame(&[0, 0, 0, 1, 0, 0, 0, 1, b'x']));
        expect_fatal_after(&tb, &mpub_cmd, ErrorCode::BadTopic).await;
        expect_fatal_after(
            &tb,
            format!("SUB {name} c\n").as_bytes(),
            ErrorCode::BadTopic,
        )
        .await;
    }
    // No topic was created by any of them.
    assert!(
        tb.broker().topics().is_empty(),
        "{:?}",
        tb.broker().topics()
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn missing_parameters_are_invalid() {
    let tb = start_broker(|_| {}).await;
    for line in [
        "PUB\n",
        "MPUB\n",
        "DPUB t\n",
        "SUB t\n",
        "FIN\n",
        "REQ 0123456789abcdef\n",
        "TOUCH\n",
    ] {
        let description = expect_fatal_after(&tb, line.as_bytes(), ErrorCode::Invalid).await;
        assert!(!description.is_empty(), "{line:?}");
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn pub_empty_body_is_bad_message() {
    let tb = start_broker(|_| {}).await;
    let mut bytes = b"PUB t\n".to_vec();
    bytes.extend(0u32.to_be_bytes());
    expect_fatal_after(&tb, &bytes, ErrorCode::BadMessage).await;
    let mut bytes = b"DPUB t 10\n".to_vec();
    bytes.extend(0u32.to_be_bytes());
    expect_fatal_after(&tb, &bytes, ErrorCode::BadMessage).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn pub_over_max_msg_size_is_bad_message_and_at_max_is_fine() {
    let tb = start_broker(|c| c.max_msg_size = 1024).await;
    let mut client = tb.connect().await;
    client.publish("t", vec![b'x'; 1024]).await;
    let mut bytes = b"PUB t\n".to_vec();
    bytes.extend(body_frame(&[b'x'; 1025]));
    client.send_raw(&bytes).await;
    client.expect_fatal(ErrorCode::BadMessage).await;
    let mut bytes = b"DPUB t 5\n".to_vec();
    bytes.extend(body_frame(&[b'x'; 1025]));
    expect_fatal_after(&tb, &bytes, ErrorCode::BadMessage).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn mpub_count_disagreeing_with_body_is_bad_body_without_waiting_for_it() {
    let tb = start_broker(|_| {}).await;
    // Only the header is sent: the broker must answer from the header alone.
    for (size, count) in [(14u32, 0i32), (14, -1), (14, 3), (100, 1_000_000)] {
        let mut bytes = b"MPUB t\n".to_vec();
        bytes.extend(size.to_be_bytes());
        bytes.extend(count.to_be_bytes());
        let (_, took) = timed(expect_fatal_after(&tb, &bytes, ErrorCode::BadBody)).await;
        assert!(
            took < Duration::from_secs(2),
            "size {size} count {count}: took {took:?}"
        );
    }
    // Whole bodies whose messages do not fill them exactly: one message and
    // bytes left over, or a second message with no room left for it.
    let leftover: Vec<u8> = [
        &1i32.to_be_bytes()[..],
        &[0, 0, 0, 1, b'a'],
        &[0, 0, 0, 1, b'b'],
    ]
    .concat();
    let overrun: Vec<u8> = [&2i32.to_be_bytes()[..], &[0, 0, 0, 6], b"aaaaaa"].concat();
    for body in [leftover, overrun] {
        let mut bytes = b"MPUB t\n".to_vec();
        bytes.extend(body_frame(&body));
        let (_, took) = timed(expect_fatal_after(&tb, &bytes, ErrorCode::BadBody)).await;
        assert!(
            took < Duration::from_secs(2),
            "body {body:?}: took {took:?}"
        );
    }
    assert_eq!(
        tb.broker()
            .existing_topic("t")
            .map(|t| t.snapshot().depth)
            .unwrap_or(0),
        0,
        "nothing was published"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn mpub_bad_sizes() {
    let tb = start_broker(|c| {
        c.max_msg_size = 100;
        c.max_body_size = 1000;
    })
    .await;
    // Body size 0 and body over max_body_size: E_BAD_BODY.
    for size in [0u32, 1001] {
        let mut bytes = b"MPUB t\n".to_vec();
        bytes.extend(size.to_be_bytes());
        bytes.extend(1u32.to_be_bytes());
        expect_fatal_after(&tb, &bytes, ErrorCode::BadBody).await;
    }
    // An empty message and one over max_msg_size inside the body: E_BAD_MESSAGE.
    for message_size in [0usize, 101] {
        let mut body = 2u32.to_be_bytes().to_vec();
        body.extend(body_frame(b"ok"));
        body.extend(body_frame(&vec![b'x'; message_size]));
        let mut bytes = b"MPUB t\n".to_vec();
        bytes.extend(body_frame(&body));
        expect_fatal_after(&tb, &bytes, ErrorCode::BadMessage).await;
    }
    // MPUB is all or nothing: the good first message was not published either.
    assert_eq!(
        tb.broker()
            .existing_topic("t")
            .map(|t| t.snapshot().depth)
            .unwrap_or(0),
        0
    );
    tb.shutdown().await;
}

/// A declared size of 4 GiB (or 2 GiB) must be refused as soon as its four
/// bytes arrive: the broker neither waits for the body nor allocates for it.
#[tokio::test]
async fn huge_declared_sizes_are_refused_at_once() {
    let tb = start_broker(|_| {}).await;
    let cases: [(&[u8], ErrorCode); 8] = [
        (b"PUB t\n", ErrorCode::BadMessage),
        (b"DPUB t 10\n", ErrorCode::BadMessage),
        (b"MPUB t\n", ErrorCode::BadBody),
        (b"IDENTIFY\n", ErrorCode::BadBody),
        (b"AUTH\n", ErrorCode::BadBody),
        (b"PUB t\n", ErrorCode::BadMessage),
        (b"MPUB t\n", ErrorCode::BadBody),
        (b"IDENTIFY\n", ErrorCode::BadBody),
    ];
    for (i, (line, code)) in cases.into_iter().enumerate() {
        let size: u32 = if i < 5 { u32::MAX } else { i32::MAX as u32 };
        let mut bytes = line.to_vec();
        bytes.extend(size.to_be_bytes());
        bytes.extend(b"some body bytes follow");
        let (_, took) = timed(expect_fatal_after(&tb, &bytes, code)).await;
        assert!(
            took < Duration::from_secs(2),
            "{:?} size {size}: took {took:?}",
            String::from_utf8_lossy(line)
        );
    }
    // The broker is still fine.
    tb.connect().await.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn dpub_out_of_range_or_unparseable_defer_is_invalid() {
    let tb = start_broker(|c| c.max_req_timeout = Duration::from_secs(10)).await;
    let mut client = tb.connect().await;
    client.dpub("t", 10_000, "at the max").await;
    for defer in ["10001", "-1", "abc", "1.5"] {
        let mut bytes = format!("DPUB t {defer}\n").into_bytes();
        bytes.extend(body_frame(b"x"));
        expect_fatal_after(&tb, &bytes, ErrorCode::Invalid).await;
    }
    tb.shutdown().await;
}

// ---------------------------------------------------------------- SUB

#[tokio::test]
async fn sub_twice_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.sub("t", "c").await;
    client
        .send(&Command::Sub {
            topic: "t".into(),
            channel: "d".into(),
        })
        .await;
    client.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn sub_after_cls_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.consumer("t", "c", 0).await;
    client.cls().await;
    client.expect_response(triage_protocol::CLOSE_WAIT).await;
    client
        .send(&Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        })
        .await;
    client.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn sub_with_heartbeats_disabled_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.identify_ok(json!({"heartbeat_interval": -1})).await;
    client
        .send(&Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        })
        .await;
    client.expect_fatal(ErrorCode::Invalid).await;
    // Publishing without heartbeats is fine.
    let mut producer = tb.connect().await;
    producer
        .identify_ok(json!({"heartbeat_interval": -1}))
        .await;
    producer.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn sub_bad_channel_is_bad_channel() {
    let tb = start_broker(|_| {}).await;
    let long = "c".repeat(65);
    for channel in ["bad/chan", "", "c#ephemeralx", long.as_str()] {
        expect_fatal_after(
            &tb,
            format!("SUB t {channel}\n").as_bytes(),
            ErrorCode::BadChannel,
        )
        .await;
    }
    assert!(
        tb.broker().existing_topic("t").is_err(),
        "a refused SUB creates nothing"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn sub_limited_by_max_channel_consumers_is_sub_failed() {
    let tb = start_broker(|c| c.max_channel_consumers = 1).await;
    let mut first = tb.consumer("t", "c", 0).await;
    let mut second = tb.connect().await;
    second
        .send(&Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        })
        .await;
    second.expect_fatal(ErrorCode::SubFailed).await;
    first.assert_alive().await;
    tb.shutdown().await;
}

// ---------------------------------------------------------------- RDY

#[tokio::test]
async fn rdy_before_sub_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.rdy(1).await;
    client.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn rdy_over_max_rdy_count_is_invalid_and_max_is_fine() {
    let tb = start_broker(|c| c.max_rdy_count = 100).await;
    let mut client = tb.consumer("t", "c", 100).await;
    client.assert_alive().await;
    client.rdy(101).await;
    client.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn rdy_unparseable_is_invalid_and_bare_rdy_means_one() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.sub("t", "c").await;
    client.send_raw(b"RDY\n").await;
    tb.publish_all("t", ["a", "b"]).await;
    assert_eq!(&client.read_message().await.body[..], b"a");
    client.expect_nothing_for(common::QUIET).await; // RDY 1: one at a time
    for bad in ["RDY x\n", "RDY -1\n", "RDY 99999999999999999999999\n"] {
        let mut client = tb.connect().await;
        client.sub("t", "c2").await;
        client.send_raw(bad.as_bytes()).await;
        client.expect_fatal(ErrorCode::Invalid).await;
    }
    tb.shutdown().await;
}

// ---------------------------------------------------------------- FIN, REQ, TOUCH

#[tokio::test]
async fn fin_req_touch_of_unknown_id_fail_but_keep_the_connection() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.consumer("t", "c", 0).await;
    let unknown = MessageId::from_u64(0xdead_beef);
    client.fin(&unknown).await;
    client.expect_error(ErrorCode::FinFailed).await;
    client.assert_alive().await;
    client.req(&unknown, 0).await;
    client.expect_error(ErrorCode::ReqFailed).await;
    client.assert_alive().await;
    client.touch(&unknown).await;
    client.expect_error(ErrorCode::TouchFailed).await;
    client.assert_alive().await;
    // Not hex at all, but 16 bytes: still only "not in flight".
    client.send_raw(b"FIN zzzzzzzzzzzzzzzz\n").await;
    client.expect_error(ErrorCode::FinFailed).await;
    // And the connection still consumes normally.
    tb.publish_all("t", ["after"]).await;
    client.rdy(1).await;
    let msg = client.read_message().await;
    assert_eq!(&msg.body[..], b"after");
    client.fin(&msg.id).await;
    client.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn fin_twice_fails_the_second_time() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", ["x"]).await;
    let msg = client.read_message().await;
    client.fin(&msg.id).await;
    client.fin(&msg.id).await;
    client.expect_error(ErrorCode::FinFailed).await;
    client.assert_alive().await;
    tb.shutdown().await;
}

/// FINs that arrive in one read are finished together; each bad one still
/// gets its own E_FIN_FAILED, in order, and the good ones around it count.
#[tokio::test]
async fn fins_sent_together_finish_each_and_fail_each_bad_one() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.consumer("t", "c", 3).await;
    tb.publish_all("t", ["a", "b", "c"]).await;
    let msgs = client.read_messages(3).await;
    let id = |i: usize| String::from_utf8_lossy(msgs[i].id.as_bytes()).into_owned();
    let unknown = String::from_utf8_lossy(MessageId::from_u64(0xdead_beef).as_bytes()).into_owned();
    let lines = format!(
        "FIN {}\nFIN {unknown}\nFIN {}\nFIN {}\nFIN {}\n",
        id(0),
        id(0),
        id(1),
        id(2)
    );
    client.send_raw(lines.as_bytes()).await;
    let first = client.expect_error(ErrorCode::FinFailed).await;
    let second = client.expect_error(ErrorCode::FinFailed).await;
    assert!(first.contains(&unknown), "{first}");
    assert!(second.contains(&id(0)), "{second}");
    client.assert_alive().await;
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    assert_eq!(channel.snapshot().in_flight, 0);
    assert_eq!(
        channel
            .counters
            .finish_count
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn fin_req_touch_before_sub_are_invalid() {
    let tb = start_broker(|_| {}).await;
    let id = MessageId::from_u64(1);
    for command in [
        Command::Fin(id),
        Command::Req { id, timeout_ms: 0 },
        Command::Touch(id),
    ] {
        let mut client = tb.connect().await;
        client.send(&command).await;
        client.expect_fatal(ErrorCode::Invalid).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn message_id_of_wrong_length_is_invalid() {
    let tb = start_broker(|_| {}).await;
    for line in ["FIN 0123\n", "TOUCH 0123456789abcdef0\n", "REQ abc 0\n"] {
        let mut client = tb.consumer("t", "c", 0).await;
        client.send_raw(line.as_bytes()).await;
        client.expect_fatal(ErrorCode::Invalid).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn req_unparseable_timeout_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.consumer("t", "c", 0).await;
    client.send_raw(b"REQ 0123456789abcdef soon\n").await;
    client.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn fin_req_touch_of_another_clients_message_fail() {
    let tb = start_broker(|_| {}).await;
    let mut owner = tb.consumer("t", "c", 1).await;
    let mut other = tb.consumer("t", "c", 0).await;
    tb.publish_all("t", ["mine"]).await;
    let msg = owner.read_message().await;
    other.touch(&msg.id).await;
    other.expect_error(ErrorCode::TouchFailed).await;
    other.req(&msg.id, 0).await;
    other.expect_error(ErrorCode::ReqFailed).await;
    other.fin(&msg.id).await;
    other.expect_error(ErrorCode::FinFailed).await;
    other.assert_alive().await;
    // The owner's message is untouched by all that: its FIN works.
    owner.fin(&msg.id).await;
    owner.assert_alive().await;
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    assert_eq!(channel.snapshot().in_flight, 0);
    assert_eq!(channel.snapshot().depth, 0);
    tb.shutdown().await;
}

// ---------------------------------------------------------------- CLS

#[tokio::test]
async fn cls_replies_close_wait_stops_delivery_and_fin_still_works() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.consumer("t", "c", 10).await;
    tb.publish_all("t", ["one", "two"]).await;
    let held = client.read_messages(2).await;
    client.cls().await;
    client.expect_response(triage_protocol::CLOSE_WAIT).await;
    tb.publish_all("t", ["three", "four"]).await;
    client.expect_nothing_for(common::QUIET).await;
    // RDY while closing is ignored, not an error, and delivers nothing.
    client.rdy(10).await;
    client.expect_nothing_for(common::QUIET).await;
    // FIN, TOUCH and REQ still work while closing; a REQ'd message is not
    // sent back to the closing client.
    client.fin(&held[0].id).await;
    client.touch(&held[1].id).await;
    client.req(&held[1].id, 0).await;
    client.assert_alive().await;
    client.expect_nothing_for(Duration::from_millis(100)).await;
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    assert_eq!(
        channel.snapshot().in_flight,
        0,
        "FIN and REQ after CLS took effect"
    );
    // What is left goes to someone else.
    let mut other = tb.consumer("t", "c", 10).await;
    let rest = other.read_messages(3).await;
    let mut got: Vec<(String, u16)> = rest.iter().map(|m| (body_str(m), m.attempts)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("four".to_owned(), 1),
            ("three".to_owned(), 1),
            ("two".to_owned(), 2)
        ]
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn max_connections_bounds_concurrent_clients() {
    let tb = start_broker(|c| c.max_connections = 1).await;
    let mut first = tb.connect().await;
    first.assert_alive().await;
    // The second is accepted by the kernel but not served while the first holds the slot.
    let mut second = tb.connect().await;
    second
        .send(&Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"x"),
        })
        .await;
    second.expect_nothing_for(common::QUIET).await;
    drop(first);
    second.expect_ok().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn cls_before_sub_is_invalid() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.cls().await;
    client.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

// ---------------------------------------------------------------- everything else

#[tokio::test]
async fn nop_has_no_reply() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    client.nop().await;
    client.nop().await;
    client.expect_nothing_for(Duration::from_millis(100)).await;
    client.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn unknown_command_is_invalid() {
    let tb = start_broker(|_| {}).await;
    for line in ["FOO\n", "pub t\n", "BACKPRESSURE_NOT_A_COMMAND 1\n", "\n"] {
        expect_fatal_after(&tb, line.as_bytes(), ErrorCode::Invalid).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn auth_is_disabled() {
    let tb = start_broker(|_| {}).await;
    let mut bytes = b"AUTH\n".to_vec();
    bytes.extend(body_frame(b"secret"));
    expect_fatal_after(&tb, &bytes, ErrorCode::AuthDisabled).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn line_longer_than_max_line_len_is_invalid_and_closes() {
    let tb = start_broker(|c| c.max_line_len = 200).await;
    // Long enough, and no newline at all: the broker must not wait for one.
    let (_, took) = timed(expect_fatal_after(&tb, &[b'A'; 300], ErrorCode::Invalid)).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // In pieces, too.
    let mut client = tb.connect().await;
    for _ in 0..4 {
        if client.try_send_raw(&[b'B'; 60]).await.is_err() {
            break;
        }
    }
    client.expect_fatal(ErrorCode::Invalid).await;
    // A line within the limit is fine.
    let mut ok = tb.connect().await;
    let topic = "t".repeat(64);
    ok.publish(&topic, "x").await;
    tb.shutdown().await;
}

#[tokio::test]
async fn a_fatal_error_does_not_disturb_other_clients() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 5).await;
    expect_fatal_after(&tb, b"GARBAGE\n", ErrorCode::Invalid).await;
    tb.publish_all("t", ["still here"]).await;
    assert_eq!(&consumer.read_message().await.body[..], b"still here");
    tb.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connected_clients() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 5).await;
    let mut idle = tb.connect().await;
    let shutdown = tokio::spawn(tb.shutdown());
    consumer.expect_closed().await;
    idle.expect_closed().await;
    shutdown.await.unwrap();
}

#[tokio::test]
async fn output_with_many_and_large_messages_arrives_intact() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 2500).await;
    let mut producer = tb.connect().await;
    let big = Bytes::from(vec![b'z'; 512 * 1024]);
    producer.publish("t", big.clone()).await;
    producer.mpub("t", common::bodies("n", 2000)).await;
    let first = consumer.read_message().await;
    assert_eq!(first.body, big);
    let rest = consumer.read_messages(2000).await;
    for (i, msg) in rest.iter().enumerate() {
        assert_eq!(body_str(msg), format!("n-{i}"));
    }
    tb.shutdown().await;
}

//! triage-bench against an in-process triaged: exact counts, sane latency
//! percentiles, a parseable report, a real PNG, and one-sentence errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;

use common::{assert_success, read_json, run_tool, start_broker};
use serde_json::Value;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing in {v:#}"))
}

fn f64_at(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_then_sub_counts_exactly_what_was_published() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let pub_json = dir.path().join("pub.json");
    let sub_json = dir.path().join("sub.json");

    let args = broker.tool_args(
        "pub",
        "--topic counted --tier memory --channel ch --count 1000 --batch 30 --connections 3 --duration 60s",
        &pub_json,
    );
    assert_success(&run_tool(&args).await);
    let report = read_json(&pub_json);
    assert_eq!(u64_at(&report, "/streams/0/published"), 1000);
    let channel = broker.broker().existing_channel("counted", "ch").unwrap();
    assert_eq!(
        channel.snapshot().depth,
        1000,
        "the broker holds what was published"
    );

    let args = broker.tool_args(
        "sub",
        "--topic counted --channel ch --count 1000 --connections 2 --duration 60s",
        &sub_json,
    );
    assert_success(&run_tool(&args).await);
    let report = read_json(&sub_json);
    assert_eq!(u64_at(&report, "/streams/0/received"), 1000);
    assert_eq!(u64_at(&report, "/streams/0/finished"), 1000);
    let snapshot = channel.snapshot();
    assert_eq!(
        (snapshot.depth, snapshot.in_flight),
        (0, 0),
        "every message was received once and finished"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_latencies_are_ordered_and_the_plot_is_a_png() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("pubsub.json");
    let png = dir.path().join("latency.png");

    let mut args = broker.tool_args(
        "pubsub",
        "--topic e2e --tier memory --count 2000 --rate 20000 --batch 10 --duration 60s",
        &json,
    );
    args.push("--plot".to_owned());
    args.push(png.display().to_string());
    assert_success(&run_tool(&args).await);

    let report = read_json(&json);
    assert_eq!(report["mode"], "pubsub");
    assert_eq!(u64_at(&report, "/streams/0/published"), 2000);
    assert_eq!(u64_at(&report, "/streams/0/received"), 2000);
    assert_eq!(u64_at(&report, "/streams/0/latency/end_to_end/count"), 2000);
    let percentiles: Vec<f64> = ["min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|p| f64_at(&report, &format!("/streams/0/latency/end_to_end/{p}")))
        .collect();
    assert!(percentiles[0] >= 0.0, "{percentiles:?}");
    assert!(
        percentiles.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {percentiles:?}"
    );
    assert_eq!(report["settings"]["mode"]["pubsub"]["load"]["rate"], 20000);

    let image = std::fs::read(&png).expect("the plot was written");
    assert!(image.starts_with(PNG_MAGIC), "not a PNG");
    // IHDR follows the magic: width and height, big-endian.
    assert_eq!(&image[16..24], &[0, 0, 3, 192, 0, 0, 2, 28], "960×540");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_reports_urgent_latency_while_the_flood_runs() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("isolation.json");

    let args = broker.tool_args(
        "isolation",
        "--probe-rate 200 --flood-batch 50 --duration 1s",
        &json,
    );
    assert_success(&run_tool(&args).await);

    let report = read_json(&json);
    let urgent = &report["streams"][0];
    let flood = &report["streams"][1];
    assert_eq!(
        (&urgent["name"], &urgent["tier"]),
        (&"urgent".into(), &"memory".into())
    );
    assert_eq!(
        (&flood["name"], &flood["tier"]),
        (&"flood".into(), &"persistent".into())
    );
    let probes = u64_at(urgent, "/published");
    assert!(probes > 0, "no probe was published");
    assert_eq!(u64_at(urgent, "/received"), probes, "every probe arrived");
    assert!(f64_at(urgent, "/latency/end_to_end/p99_us") > 0.0);
    assert!(
        u64_at(flood, "/published") > 0,
        "the flood published nothing"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_arguments_exit_non_zero_with_one_sentence() {
    // A port nothing listens on: bind one, then free it.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["flood"],
        vec!["pub", "--connections", "0"],
        vec!["pub", "--size", "4"],
        vec!["pub", "--tier", "memory"],
        vec!["pub", "--duration", "forever"],
        vec!["sub", "--topic", "bad topic"],
        vec!["pub", "--no-such-flag"],
        vec!["pub", "--tcp", &closed, "--duration", "1s", "--quiet"],
    ];
    for args in cases {
        let output = run_tool(&args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.starts_with("triage-bench: ") && stderr.trim_end().lines().count() == 1,
            "{args:?}: not one sentence: {stderr:?}"
        );
        assert!(output.stdout.is_empty(), "{args:?} printed a report");
    }
}

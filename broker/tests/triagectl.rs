//! `triagectl`, the real binary, against an in-process broker on
//! `127.0.0.1:0`: each command's effect is checked on the broker itself, and
//! the error cases (unreachable broker, unknown topic, bad name, bad config)
//! by exit code and message.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use triage_broker::Server;
use triage_config::BrokerConfig;

const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// A broker on its own multi-threaded runtime, so it keeps serving while the
/// test thread blocks on a `triagectl` process.
struct TestBroker {
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
    _data: tempfile::TempDir,
}

impl TestBroker {
    fn start() -> TestBroker {
        TestBroker::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            tcp_address: "127.0.0.1:0".parse().unwrap(),
            http_address: "127.0.0.1:0".parse().unwrap(),
            data_path: data.path().to_owned(),
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        let server = runtime.block_on(Server::start(config)).unwrap();
        TestBroker {
            runtime,
            server: Some(server),
            _data: data,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    fn ctl(&self, args: &[&str]) -> Run {
        ctl_at(&self.server().http_addr.to_string(), args, None)
    }

    /// Runs `args` and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.ctl(args);
        assert_eq!(run.code, 0, "triagectl {args:?} failed: {}", run.stderr);
        run.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"))
    }

    fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .server()
            .broker
            .topics()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // The timer needs the runtime's context: build it inside block_on.
            let stopped = self.runtime.block_on(async {
                tokio::time::timeout(SHUTDOWN_DEADLINE, server.shutdown()).await
            });
            // Don't turn a failing test's panic into an abort.
            if !std::thread::panicking() {
                stopped.expect("broker shut down in time");
            }
        }
    }
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl_at(addr: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triagectl"));
    command
        .arg("--http-address")
        .arg(addr)
        .args(args)
        .env_remove("TRIAGECTL_HTTP_ADDRESS")
        .env_remove("TRIAGECTL_ADMIN_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    finish(child.wait_with_output().unwrap())
}

fn ctl_offline(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_triagectl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    finish(output)
}

fn finish(output: Output) -> Run {
    Run {
        code: output.status.code().expect("triagectl exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A loopback address nothing listens on: bound, then released.
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

fn entry<'a>(list: &'a Value, key: &str, name: &str) -> Option<&'a Value> {
    list.as_array().unwrap().iter().find(|e| e[key] == name)
}

fn example_config() -> PathBuf {
    manifest_dir().join("../config/triaged.example.toml")
}

// ---------------------------------------------------------------------------
// Topics and channels
// ---------------------------------------------------------------------------

#[test]
fn topic_create_list_pause_delete() {
    let broker = TestBroker::start();
    assert_eq!(broker.ok(&["topic", "list"]), "no topics\n");

    let out = broker.ok(&["topic", "create", "orders", "--tier", "memory"]);
    assert_eq!(out, "topic orders created (memory)\n");
    broker.ok(&["topic", "create", "audit"]);
    assert_eq!(broker.topic_names(), ["audit", "orders"]);
    let orders = broker.server().broker.existing_topic("orders").unwrap();
    assert_eq!(orders.tier().as_str(), "memory");

    let table = broker.ok(&["topic", "list"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["TOPIC", "TIER", "CHANNELS", "PAUSED"]);
    assert!(
        lines.contains(&vec!["orders", "memory", "0", "no"]),
        "{table}"
    );
    assert!(
        lines.contains(&vec!["audit", "persistent", "0", "no"]),
        "{table}"
    );

    broker.ok(&["topic", "pause", "orders"]);
    assert!(orders.is_paused());
    let list = broker.json(&["topic", "list"]);
    assert_eq!(entry(&list, "topic", "orders").unwrap()["paused"], true);
    assert_eq!(entry(&list, "topic", "audit").unwrap()["paused"], false);

    broker.ok(&["topic", "unpause", "orders"]);
    assert!(!orders.is_paused());

    let deleted = broker.json(&["topic", "delete", "orders"]);
    assert_eq!(deleted["result"], "deleted");
    assert_eq!(deleted["topic"], "orders");
    assert_eq!(broker.topic_names(), ["audit"]);
    let list = broker.json(&["topic", "list"]);
    assert!(entry(&list, "topic", "orders").is_none(), "{list}");
}

#[test]
fn unknown_topic_is_the_brokers_error_and_exit_1() {
    let broker = TestBroker::start();
    let run = broker.ctl(&["topic", "delete", "ghost"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.starts_with("triagectl: TOPIC_NOT_FOUND"),
        "{run:?}"
    );

    let run = broker.ctl(&["channel", "list", "ghost"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "triagectl: topic \"ghost\" does not exist\n");
}

#[test]
fn topic_create_sets_delayed_tier_settings() {
    let broker = TestBroker::start();
    broker.ok(&[
        "topic",
        "create",
        "sla",
        "--tier",
        "delayed",
        "--delay",
        "30m",
        "--batch-window",
        "1m",
        "--max-attempts",
        "5",
    ]);
    let topic = broker.server().broker.existing_topic("sla").unwrap();
    assert_eq!(topic.settings().delay, std::time::Duration::from_secs(1800));
    assert_eq!(
        topic.settings().batch_window,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(topic.settings().max_attempts, 5);
    let run = broker.ctl(&[
        "topic",
        "create",
        "p",
        "--tier",
        "persistent",
        "--delay",
        "5s",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("INVALID_SETTINGS"), "{run:?}");
}

#[test]
fn the_admin_token_is_sent_when_the_broker_wants_one() {
    const TOKEN: &str = "0123456789abcdef-admin";
    let broker = TestBroker::start_with(|c| c.admin_token = Some(TOKEN.into()));
    let run = broker.ctl(&["topic", "create", "guarded"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("triagectl: UNAUTHORIZED"), "{run:?}");
    let run = broker.ctl(&["--admin-token", TOKEN, "topic", "create", "guarded"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(broker.topic_names(), ["guarded"]);
    // Reads need no token.
    assert_eq!(broker.ctl(&["topic", "list"]).code, 0);
}

#[test]
fn channel_create_list_pause_delete() {
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "orders"]);
    let out = broker.ok(&["channel", "create", "orders", "billing"]);
    assert_eq!(out, "channel orders/billing created\n");
    broker.ok(&["channel", "create", "orders", "shipping#ephemeral"]);
    let topic = broker.server().broker.existing_topic("orders").unwrap();
    assert!(topic.existing_channel("billing").is_some());
    assert!(topic.existing_channel("shipping#ephemeral").is_some());

    let table = broker.ok(&["channel", "list", "orders"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["CHANNEL", "DEPTH", "IN-FLIGHT", "CLIENTS", "PAUSED"]
    );
    assert!(
        lines.contains(&vec!["billing", "0", "0", "0", "no"]),
        "{table}"
    );

    broker.ok(&["channel", "pause", "orders", "billing"]);
    assert!(topic.existing_channel("billing").unwrap().snapshot().paused);
    let list = broker.json(&["channel", "list", "orders"]);
    assert_eq!(entry(&list, "channel", "billing").unwrap()["paused"], true);
    assert!(
        entry(&list, "channel", "shipping#ephemeral").is_some(),
        "{list}"
    );

    broker.ok(&["channel", "delete", "orders", "billing"]);
    assert!(topic.existing_channel("billing").is_none());
    let run = broker.ctl(&["channel", "delete", "orders", "billing"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("triagectl: CHANNEL_NOT_FOUND"),
        "{run:?}"
    );
}

// ---------------------------------------------------------------------------
// Publishing and stats
// ---------------------------------------------------------------------------

#[test]
fn pub_from_args_and_stdin_then_stats_shows_depth() {
    let broker = TestBroker::start();
    broker.ok(&["channel", "create", "orders", "billing"]);

    let out = broker.ok(&["pub", "orders", "one", "two", "three"]);
    assert_eq!(out, "published 3 messages to orders\n");
    let out = broker.ok(&["pub", "orders", "four"]);
    assert_eq!(out, "published 1 message to orders\n");
    let run = ctl_at(
        &broker.server().http_addr.to_string(),
        &["pub", "orders"],
        Some("five\n\nsix\r\n"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "published 2 messages to orders\n");

    let channel = broker
        .server()
        .broker
        .existing_channel("orders", "billing")
        .unwrap();
    assert_eq!(channel.snapshot().depth, 6);

    let table = broker.ok(&["stats"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][0], "TOPIC");
    assert_eq!(lines[1][..4], ["orders", "persistent", "0", "0"], "{table}");
    assert_eq!(lines[1][5], "6", "messages: {table}");
    assert_eq!(
        lines[2],
        ["billing", "6", "0", "0", "6", "0", "clients", "no"],
        "{table}"
    );

    let stats = broker.json(&["stats"]);
    let topic = entry(&stats["topics"], "topic_name", "orders").unwrap();
    assert_eq!(topic["tier"], "persistent");
    assert_eq!(topic["message_count"], 6);
    let billing = entry(&topic["channels"], "channel_name", "billing").unwrap();
    assert_eq!(billing["depth"], 6);

    broker.ok(&["channel", "empty", "orders", "billing"]);
    assert_eq!(channel.snapshot().depth, 0);
}

// ---------------------------------------------------------------------------
// Usage errors, unreachable broker, config check
// ---------------------------------------------------------------------------

#[test]
fn bad_names_and_tiers_are_refused_before_any_request() {
    // A closed port: a usage error must not even try the network (exit 2, not 1).
    let addr = closed_address();
    for args in [
        &["topic", "create", "no spaces"][..],
        &["channel", "create", "orders", "a/b"],
        &["pub", &"x".repeat(65), "hello"],
        &["topic", "create", "orders", "--tier", "fast"],
        &["topic", "frobnicate"],
    ] {
        let run = ctl_at(&addr, args, None);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{args:?}: {run:?}");
        assert!(!run.stderr.contains("cannot reach"), "{args:?}: {run:?}");
    }
}

#[test]
fn unreachable_broker_is_one_line_and_exit_1() {
    let addr = closed_address();
    for args in [&["topic", "list"][..], &["stats"], &["pub", "orders", "hi"]] {
        let run = ctl_at(&addr, args, None);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        let prefix = format!("triagectl: cannot reach the broker at {addr}: ");
        assert!(run.stderr.starts_with(&prefix), "{run:?}");
        assert!(run.stderr.len() > prefix.len() + 1, "no reason: {run:?}");
    }
}

#[test]
fn config_check_accepts_the_example_file() {
    let run = ctl_offline(&["config", "check", example_config().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "ok\n");
}

#[test]
fn config_check_names_the_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("max_msg_sise = 1024\n", "\"max_msg_sise\""),
        ("max_msg_size = \"lots\"\n", "max_msg_size"),
        ("default_tier = \"fast\"\n", "default_tier"),
    ];
    for (i, (text, key)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let run = ctl_offline(&["config", "check", path.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{text}: {run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(run.stderr.contains(key), "{text}: {run:?}");
    }
    let path = dir.path().join("bad0.toml");
    let run = ctl_offline(&["config", "check", path.to_str().unwrap()]);
    assert!(
        run.stderr.contains(path.to_str().unwrap()),
        "names the file: {run:?}"
    );

    let run = ctl_offline(&["config", "check", "/nonexistent/triaged.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("cannot read /nonexistent/triaged.toml"),
        "{run:?}"
    );
}

// ---------------------------------------------------------------------------
// tail, set-tier, completions, every bad key
// ---------------------------------------------------------------------------

/// How long a `triagectl` child may run before the test gives up on it.
const CHILD_DEADLINE: Duration = Duration::from_secs(20);

/// Waits for `child` within [`CHILD_DEADLINE`], killing it if it hangs.
fn wait_bounded(mut child: std::process::Child) -> Run {
    let deadline = std::time::Instant::now() + CHILD_DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "triagectl did not exit within {CHILD_DEADLINE:?}; stdout {:?}, stderr {:?}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    finish(child.wait_with_output().unwrap())
}

impl TestBroker {
    /// Starts `triagectl` without waiting for it.
    fn spawn_ctl(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_triagectl"))
            .arg("--http-address")
            .arg(self.server().http_addr.to_string())
            .args(args)
            .env_remove("TRIAGECTL_HTTP_ADDRESS")
            .env_remove("TRIAGECTL_ADMIN_TOKEN")
            .env_remove("TRIAGECTL_TCP_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits until `topic` has a `tail…#ephemeral` channel with a consumer.
    fn wait_for_tail(&self, topic: &str, child: &mut std::process::Child) {
        let deadline = std::time::Instant::now() + CHILD_DEADLINE;
        loop {
            let subscribed = self.server().broker.existing_topic(topic).is_ok_and(|t| {
                t.snapshot().channels.iter().any(|c| {
                    c.name.starts_with("tail")
                        && c.name.ends_with("#ephemeral")
                        && c.snapshot().clients.len() == 1
                })
            });
            if subscribed {
                return;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("tail exited before subscribing: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tail never subscribed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn tail_prints_n_bodies_then_exits_and_leaves_no_channel() {
    let broker = TestBroker::start();
    // A channel of its own keeps what was published before the tail.
    broker.ok(&["channel", "create", "orders", "billing"]);
    broker.ok(&["pub", "orders", "before"]);

    let mut child = broker.spawn_ctl(&["tail", "orders", "-n", "2"]);
    broker.wait_for_tail("orders", &mut child);
    broker.ok(&["pub", "orders", "first", "second", "third"]);
    let run = wait_bounded(child);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "first\nsecond\n");

    // The ephemeral channel went with the tail; billing has everything.
    let topic = broker.server().broker.existing_topic("orders").unwrap();
    let deadline = std::time::Instant::now() + CHILD_DEADLINE;
    while topic.snapshot().channels.len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tail's channel stayed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let billing = topic.existing_channel("billing").unwrap();
    assert_eq!(billing.snapshot().depth, 4);
}

#[test]
fn tail_with_an_explicit_tcp_address() {
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "alerts", "--tier", "memory"]);
    let tcp = broker.server().tcp_addr.to_string();
    let mut child = broker.spawn_ctl(&["tail", "alerts", "--count", "1", "--tcp-address", &tcp]);
    broker.wait_for_tail("alerts", &mut child);
    broker.ok(&["pub", "alerts", "disk full on db-3"]);
    let run = wait_bounded(child);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "disk full on db-3\n");
}

#[test]
fn tail_errors_unknown_topic_unreachable_and_bad_name() {
    let broker = TestBroker::start();
    let run = broker.ctl(&["tail", "ghost", "-n", "1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "triagectl: topic \"ghost\" does not exist\n");
    assert!(
        broker.server().broker.existing_topic("ghost").is_err(),
        "tailing must not create the topic"
    );

    let addr = closed_address();
    let run = ctl_at(&addr, &["tail", "orders"], None);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("triagectl: cannot reach the broker at {addr}: ")),
        "{run:?}"
    );

    // The HTTP API answers but nothing listens on the TCP address given.
    broker.ok(&["topic", "create", "orders"]);
    let run = broker.ctl(&["tail", "orders", "--tcp-address", &addr]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("triagectl: cannot reach the broker at {addr}: ")),
        "{run:?}"
    );

    for args in [
        &["tail", "no spaces"][..],
        &["tail", "orders", "-n", "many"],
    ] {
        let run = ctl_at(&addr, args, None);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{run:?}");
    }
}

#[test]
fn set_tier_changes_a_topic_in_place_and_refuses_bad_input_clearly() {
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "orders"]);
    let out = broker.ok(&["topic", "set-tier", "orders", "persistent"]);
    assert_eq!(out, "topic orders tier set to persistent\n");
    let out = broker.json(&["topic", "set-tier", "orders", "persistent"]);
    assert_eq!(out["tier"], "persistent");
    let orders = broker.server().broker.existing_topic("orders").unwrap();

    let out = broker.ok(&["topic", "set-tier", "orders", "memory"]);
    assert_eq!(out, "topic orders tier set to memory\n");
    assert_eq!(orders.tier().as_str(), "memory");
    let out = broker.ok(&[
        "topic",
        "set-tier",
        "orders",
        "delayed",
        "--delay",
        "30s",
        "--batch-window",
        "1s",
        "--max-attempts",
        "4",
    ]);
    assert_eq!(out, "topic orders tier set to delayed\n");
    assert_eq!(orders.tier().as_str(), "delayed");
    let settings = orders.settings();
    assert_eq!(settings.delay, Duration::from_secs(30));
    assert_eq!(settings.batch_window, Duration::from_secs(1));
    assert_eq!(settings.max_attempts, 4);
    let stats = broker.json(&["topic", "list"]);
    assert!(stats.to_string().contains("delayed"), "{stats}");
    // Leaving delayed drops the delay, keeps max_attempts.
    broker.ok(&["topic", "set-tier", "orders", "persistent"]);
    let settings = orders.settings();
    assert_eq!(settings.delay, Duration::ZERO);
    assert_eq!(settings.max_attempts, 4);

    // A delay on a tier other than delayed is refused, and changes nothing.
    let run = broker.ctl(&["topic", "set-tier", "orders", "memory", "--delay", "5s"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.starts_with("triagectl: INVALID_SETTINGS"),
        "{run:?}"
    );
    assert_eq!(orders.tier().as_str(), "persistent", "nothing changed");

    // An ephemeral topic never leaves memory.
    broker.ok(&["topic", "create", "scratch#ephemeral"]);
    let run = broker.ctl(&["topic", "set-tier", "scratch#ephemeral", "persistent"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("triagectl: TIER_CHANGE_REFUSED")
            && run.stderr.contains("ephemeral")
            && run.stderr.contains("HTTP 409"),
        "{run:?}"
    );
    broker.ok(&["topic", "set-tier", "scratch#ephemeral", "memory"]);
    broker.ok(&["topic", "create", "_triage.backpressure"]);
    let run = broker.ctl(&["topic", "set-tier", "_triage.backpressure", "delayed"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("triagectl: TIER_CHANGE_REFUSED") && run.stderr.contains("system"),
        "{run:?}"
    );

    let run = broker.ctl(&["topic", "set-tier", "ghost", "memory"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("triagectl: TOPIC_NOT_FOUND"),
        "{run:?}"
    );

    let addr = closed_address();
    for args in [
        &["topic", "set-tier", "orders", "fast"][..],
        &["topic", "set-tier", "no spaces", "memory"],
        &["topic", "set-tier", "orders"],
        &[
            "topic",
            "set-tier",
            "orders",
            "delayed",
            "--max-attempts",
            "-1",
        ],
    ] {
        let run = ctl_at(&addr, args, None);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
    }
    let run = ctl_at(&addr, &["topic", "set-tier", "orders", "memory"], None);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot reach the broker"), "{run:?}");
}

#[test]
fn set_tier_refuses_to_give_a_memory_topic_without_a_log_a_tier_that_needs_one() {
    let broker = TestBroker::start_with(|config| {
        config.memory_overflow = triage_config::OverflowPolicy::Reject;
    });
    broker.ok(&["topic", "create", "fast", "--tier", "memory"]);
    let run = broker.ctl(&["topic", "set-tier", "fast", "persistent"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("triagectl: TIER_CHANGE_REFUSED")
            && run.stderr.contains("memory_overflow = reject"),
        "{run:?}"
    );
    let fast = broker.server().broker.existing_topic("fast").unwrap();
    assert_eq!(fast.tier().as_str(), "memory", "nothing changed");
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let run = ctl_offline(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        for word in ["triagectl", "set-tier", "tail", "completions"] {
            assert!(run.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    let run = ctl_offline(&["completions", "tcsh"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn config_check_names_every_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("triaged.toml");
    std::fs::write(
        &path,
        "colour = \"blue\"\nmsg_timeout = \"soon\"\nmax_rdy_count = -1\nsnappy = true\n",
    )
    .unwrap();
    let run = ctl_offline(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    for key in ["\"colour\"", "msg_timeout", "max_rdy_count"] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(key)).count(),
            1,
            "{key}: {run:?}"
        );
    }
    assert!(
        lines.iter().all(|l| l.starts_with("triagectl: ")),
        "{run:?}"
    );
    assert!(
        lines.iter().all(|l| l.contains(path.to_str().unwrap())),
        "each line names the file: {run:?}"
    );
}

/// This package's directory, read when the test runs: the path compiled in
/// by `env!` goes stale when the same target dir serves a clone elsewhere.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

//! `triagectl --lookupd-http-address`, the real binary, against three
//! in-process brokers registered with an in-process triage-lookupd, all on
//! loopback with ephemeral ports. Effects are checked on the brokers
//! themselves; every wait for a registration polls lookupd with a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{start_broker, TestBroker};
use serde_json::Value;
use triage_broker::ctl::client::AdminClient;
use triage_config::BrokerConfig;
use triage_lookupd::{Lookupd, Options};

/// Longest any registration may take to reach lookupd.
const WITHIN: Duration = Duration::from_secs(20);

/// Three brokers and a lookupd on a runtime of their own, so they keep
/// serving while the test thread waits on a `triagectl` process.
struct TestCluster {
    runtime: tokio::runtime::Runtime,
    lookupd: Option<Lookupd>,
    brokers: Vec<TestBroker>,
}

impl TestCluster {
    fn start() -> TestCluster {
        TestCluster::start_with(|_, _| {})
    }

    /// `tweak(i, config)` adjusts broker `i`'s config before it starts.
    fn start_with(tweak: impl Fn(usize, &mut BrokerConfig)) -> TestCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (lookupd, brokers) = runtime.block_on(async {
            let lookupd = Lookupd::start(Options {
                tcp_address: "127.0.0.1:0".parse().unwrap(),
                http_address: "127.0.0.1:0".parse().unwrap(),
                broadcast_address: "127.0.0.1".into(),
                ..Options::default()
            })
            .await
            .unwrap();
            let mut brokers = Vec::new();
            for i in 0..3 {
                let lookupd_tcp = lookupd.tcp_addr.to_string();
                brokers.push(
                    start_broker(|config| {
                        config.broadcast_address = "127.0.0.1".into();
                        config.lookupd_tcp_addresses = vec![lookupd_tcp];
                        tweak(i, config);
                    })
                    .await,
                );
            }
            (lookupd, brokers)
        });
        let cluster = TestCluster {
            runtime,
            lookupd: Some(lookupd),
            brokers,
        };
        let all = cluster.http_addresses(&[0, 1, 2]);
        cluster.wait_until("all three brokers under /nodes", "/nodes", &all);
        cluster
    }

    fn lookupd_http(&self) -> String {
        self.lookupd.as_ref().unwrap().http_addr.to_string()
    }

    /// `127.0.0.1:http_port` of the brokers at `indexes`, sorted.
    fn http_addresses(&self, indexes: &[usize]) -> Vec<String> {
        let mut addrs: Vec<String> = indexes
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.brokers[i].server.http_addr.port()))
            .collect();
        addrs.sort();
        addrs
    }

    /// Polls lookupd's `path` until its producers are exactly `expected`.
    fn wait_until(&self, what: &str, path: &str, expected: &[String]) {
        let lookupd = AdminClient::new(self.lookupd_http());
        let deadline = Instant::now() + WITHIN;
        loop {
            let listed = self.runtime.block_on(async {
                let body = lookupd.get(path).await.ok()?;
                let reply: Value = serde_json::from_slice(&body).ok()?;
                let mut addrs: Vec<String> = reply["producers"]
                    .as_array()?
                    .iter()
                    .map(|p| format!("{}:{}", p["broadcast_address"], p["http_port"]))
                    .map(|a| a.replace('"', ""))
                    .collect();
                addrs.sort();
                Some(addrs)
            });
            if listed.as_deref() == Some(expected) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctl(&self, args: &[&str]) -> Run {
        ctl_through(&self.lookupd_http(), args)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let brokers = std::mem::take(&mut self.brokers);
        let lookupd = self.lookupd.take();
        self.runtime.block_on(async {
            for broker in brokers {
                broker.shutdown().await;
            }
            if let Some(lookupd) = lookupd {
                let stopped =
                    tokio::time::timeout(Duration::from_secs(5), lookupd.shutdown()).await;
                // Don't turn a failing test's panic into an abort.
                if !std::thread::panicking() {
                    stopped.expect("lookupd shut down within 5 s");
                }
            }
        });
    }
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl_through(lookupd: &str, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_triagectl"))
        .arg("--lookupd-http-address")
        .arg(lookupd)
        .args(args)
        .env_remove("TRIAGECTL_HTTP_ADDRESS")
        .env_remove("TRIAGECTL_ADMIN_TOKEN")
        .env_remove("TRIAGECTL_LOOKUPD_HTTP_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: output.status.code().expect("triagectl exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Topic `jobs` with channel `workers` on brokers 0 and 1 (not 2), once
/// lookupd lists both; returns their HTTP addresses.
fn jobs_on_two_brokers(cluster: &TestCluster) -> Vec<String> {
    cluster.runtime.block_on(async {
        for broker in &cluster.brokers[..2] {
            broker.broker().channel("jobs", "workers").await.unwrap();
        }
    });
    let holders = cluster.http_addresses(&[0, 1]);
    cluster.wait_until("jobs on two brokers", "/lookup?topic=jobs", &holders);
    holders
}

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == name)
        .unwrap_or_else(|| panic!("no {key} {name} in {list}"))
}

#[test]
fn stats_sum_every_broker_lookupd_knows() {
    let cluster = TestCluster::start();
    cluster.runtime.block_on(async {
        for (i, broker) in cluster.brokers.iter().enumerate() {
            broker.broker().channel("orders", "billing").await.unwrap();
            let bodies: Vec<String> = (0..=i).map(|m| format!("b{i}-m{m}")).collect();
            broker.publish_all("orders", bodies).await;
        }
        // A topic on one broker only: `topic list` is the union.
        cluster.brokers[1].publish_all("audit", ["a"]).await;
    });

    let run = cluster.ctl(&["--json", "stats"]);
    assert_eq!(run.code, 0, "{run:?}");
    let stats: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(stats["brokers"].as_array().unwrap().len(), 3, "{stats}");
    let orders = find(&stats["topics"], "topic_name", "orders");
    assert_eq!(orders["message_count"], 6, "{orders}");
    let billing = find(&orders["channels"], "channel_name", "billing");
    assert_eq!(billing["depth"], 6, "{billing}");
    assert_eq!(billing["in_flight_count"], 0, "{billing}");
    // The per-broker breakdown: 1, 2 and 3 messages.
    let mut depths: Vec<u64> = billing["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["depth"].as_u64().unwrap())
        .collect();
    depths.sort_unstable();
    assert_eq!(depths, [1, 2, 3]);
    let share = find(
        &billing["brokers"],
        "address",
        &cluster.http_addresses(&[2])[0],
    );
    assert_eq!(share["depth"], 3, "{share}");

    let run = cluster.ctl(&["stats"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = rows.iter().find(|r| r[0] == "billing").unwrap();
    assert_eq!(row[1..5], ["6", "0", "0", "6"], "{}", run.stdout);

    let run = cluster.ctl(&["--json", "topic", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    let topics: Value = serde_json::from_str(&run.stdout).unwrap();
    let mut names: Vec<&str> = topics
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["audit", "orders"]);
}

#[test]
fn pause_reaches_every_broker_holding_the_topic() {
    let cluster = TestCluster::start();
    let holders = jobs_on_two_brokers(&cluster);

    let run = cluster.ctl(&["topic", "pause", "jobs"]);
    assert_eq!(run.code, 0, "{run:?}");
    let expected: String = holders
        .iter()
        .map(|addr| format!("topic jobs paused on {addr}\n"))
        .collect();
    assert_eq!(run.stdout, expected);
    for broker in &cluster.brokers[..2] {
        assert!(broker.broker().existing_topic("jobs").unwrap().is_paused());
    }
    // The third broker was not asked, so it did not create the topic.
    assert!(cluster.brokers[2].broker().existing_topic("jobs").is_err());

    let run = cluster.ctl(&["--json", "channel", "pause", "jobs", "workers"]);
    assert_eq!(run.code, 0, "{run:?}");
    let reply: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(reply["result"], "paused");
    assert_eq!(reply["brokers"].as_array().unwrap().len(), 2, "{reply}");
    for broker in &cluster.brokers[..2] {
        let channel = broker.broker().existing_channel("jobs", "workers").unwrap();
        assert!(channel.is_paused());
    }

    // Creating goes to every broker lookupd knows.
    let run = cluster.ctl(&["topic", "create", "fresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.lines().count(), 3, "{run:?}");
    for broker in &cluster.brokers {
        assert!(broker.broker().existing_topic("fresh").is_ok());
    }
}

#[test]
fn set_tier_reaches_every_broker_holding_the_topic() {
    let cluster = TestCluster::start();
    let holders = jobs_on_two_brokers(&cluster);

    let run = cluster.ctl(&["topic", "set-tier", "jobs", "delayed", "--delay", "2m"]);
    assert_eq!(run.code, 0, "{run:?}");
    let expected: String = holders
        .iter()
        .map(|addr| format!("topic jobs tier set to delayed on {addr}\n"))
        .collect();
    assert_eq!(run.stdout, expected);
    for broker in &cluster.brokers[..2] {
        let jobs = broker.broker().existing_topic("jobs").unwrap();
        assert_eq!(jobs.tier().as_str(), "delayed");
        assert_eq!(jobs.settings().delay, Duration::from_secs(120));
    }
    assert!(cluster.brokers[2].broker().existing_topic("jobs").is_err());

    let run = cluster.ctl(&["--json", "topic", "set-tier", "jobs", "memory"]);
    assert_eq!(run.code, 0, "{run:?}");
    let reply: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(reply["result"], "tier set");
    assert_eq!(reply["tier"], "memory");
    assert_eq!(reply["brokers"].as_array().unwrap().len(), 2, "{reply}");
}

#[test]
fn an_unreachable_lookupd_is_one_line_and_exit_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap().to_string();
    drop(listener);
    for args in [
        &["stats"][..],
        &["topic", "list"],
        &["topic", "pause", "jobs"],
        &["channel", "empty", "jobs", "workers"],
    ] {
        let run = ctl_through(&closed, args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
        let prefix = format!("triagectl: cannot use lookupd at {closed}: ");
        assert!(run.stderr.starts_with(&prefix), "{args:?}: {run:?}");
    }
}

#[test]
fn a_topic_no_broker_holds_is_an_error() {
    let cluster = TestCluster::start();
    let run = cluster.ctl(&["topic", "empty", "nowhere"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "triagectl: topic \"nowhere\" does not exist\n");
}

#[test]
fn a_broker_that_refuses_is_one_line_and_exit_1() {
    // The third broker wants a token this run does not send.
    let cluster = TestCluster::start_with(|i, config| {
        if i == 2 {
            config.admin_token = Some("secret".into());
        }
    });
    cluster.runtime.block_on(async {
        for broker in &cluster.brokers {
            broker.broker().channel("jobs", "workers").await.unwrap();
        }
    });
    let all = cluster.http_addresses(&[0, 1, 2]);
    cluster.wait_until("jobs on three brokers", "/lookup?topic=jobs", &all);

    let run = cluster.ctl(&["topic", "pause", "jobs"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout.lines().count(), 2, "{run:?}");
    let refused = format!(
        "triagectl: the broker at {}: ",
        cluster.http_addresses(&[2])[0]
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.starts_with(&refused), "{run:?}");
    let paused: Vec<bool> = cluster
        .brokers
        .iter()
        .map(|b| b.broker().existing_topic("jobs").unwrap().is_paused())
        .collect();
    assert_eq!(paused, [true, true, false]);
}

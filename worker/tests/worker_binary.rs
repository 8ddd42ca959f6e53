//! The real `triage-worker` binary against a real triage broker.
//!
//! The broker runs in this test process (`triage_broker::Server`, a
//! dev-dependency, as in end_to_end.rs) rather than as the `triaged`
//! binary: Cargo only builds and locates binaries of the crate under test
//! (`CARGO_BIN_EXE_*`), so the broker's would have to be found by guessing
//! at the target directory; in-process it is the same server code on real
//! sockets, and the test can read channel depths directly. The worker is
//! the real binary (`CARGO_BIN_EXE_triage-worker`) with a temporary TOML
//! file whose steps are small shell commands; a flag file makes the
//! non-core step slow.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use triage_worker::WorkerConfig;

mod common;

use common::{
    bodies, start_broker, start_broker_on, start_lookupd, start_registered_broker, wait_until,
};

const WORKER: &str = env!("CARGO_BIN_EXE_triage-worker");
/// Generous: the machine may be busy; every wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(30);

/// The worker process; killed if the test ends without stopping it.
struct WorkerProcess {
    child: Child,
    /// Its log, line by line, from a thread that keeps draining the pipe so
    /// the worker never blocks on it.
    log: std::sync::mpsc::Receiver<String>,
    metrics: Option<SocketAddr>,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WorkerProcess {
    /// Runs the binary on `config` (whose http_address has port 0) and waits
    /// until it serves `/metrics`.
    async fn start(config: &Path) -> WorkerProcess {
        let mut worker = WorkerProcess::spawn(config);
        worker.wait_started().await;
        worker
    }

    fn spawn(config: &Path) -> WorkerProcess {
        let mut child = Command::new(WORKER)
            .arg(config)
            .args(["--log-level", "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[worker] {line}");
                let _ = tx.send(line);
            }
        });
        WorkerProcess {
            child,
            log,
            metrics: None,
        }
    }

    /// Waits for a log line containing `text` and returns it.
    async fn wait_for_log(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.log.try_recv() {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        panic!("the worker exited before logging {text:?}: {status}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("no {text:?} in the worker's log: {e}"),
            }
        }
    }

    /// Learns the metrics address from the worker's start-up line.
    async fn wait_started(&mut self) {
        let line = self.wait_for_log("metrics_address=").await;
        let address = line
            .split("metrics_address=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        self.metrics = Some(address.parse().unwrap());
    }

    fn scrape(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics.unwrap()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// The value of one series, e.g. `triage_worker_rdy{channel="w",topic="urgent"}`.
    fn metric(&self, series: &str) -> f64 {
        let text = self.scrape();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// SIGTERM, then wait for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not stop after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "the worker exited with {status}");
    }
}

fn lines(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A shell step that appends its body (one line) to `log`, after `sleep 1` while `slow` exists.
fn append_step(log: &Path, slow: Option<&Path>) -> String {
    let wait = slow.map_or(String::new(), |flag| {
        format!("if [ -e '{}' ]; then sleep 1; fi; ", flag.display())
    });
    format!(
        r#"["sh", "-c", "body=$(cat); {wait}printf '%s\\n' \"$body\" >> '{}'"]"#,
        log.display()
    )
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// urgent (urgent), tickets (normal) and reports (batch) on channel `w`;
/// each runs a core `update` step, the first two also a non-core `notify`
/// step that is slow while the flag file exists.
fn pipeline_config(broker: SocketAddr, files: &Files) -> String {
    let update = append_step(&files.path("core.log"), None);
    let notify = append_step(&files.path("notify.log"), Some(&files.path("slow")));
    let steps = |with_notify: bool| {
        let mut steps = format!(
            "[[subscriptions.steps]]\nname = \"update\"\nkind = \"exec\"\ncore = true\ncommand = {update}\n"
        );
        if with_notify {
            steps += &format!(
                "[[subscriptions.steps]]\nname = \"notify\"\nkind = \"exec\"\ncore = false\ncommand = {notify}\n"
            );
        }
        steps
    };
    format!(
        r#"
broker = "{broker}"
http_address = "127.0.0.1:0"
client_id = "test-worker"
concurrency = 16

[degrade]
threshold = "300ms"
overload_threshold = "30s"
recover_below = "150ms"
hold = "4s"
window = "3s"

[backoff]
base = "50ms"
max = "1s"

[[subscriptions]]
topic = "urgent"
channel = "w"
max_in_flight = 4
priority = "urgent"
{urgent_steps}
[[subscriptions]]
topic = "tickets"
channel = "w"
max_in_flight = 4
priority = "normal"
{normal_steps}
[[subscriptions]]
topic = "reports"
channel = "w"
max_in_flight = 4
priority = "batch"
{batch_steps}
"#,
        urgent_steps = steps(true),
        normal_steps = steps(true),
        batch_steps = steps(false),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_noncore_step_degrades_the_worker_and_deferred_work_is_replayed() {
    let tb = start_broker().await;
    let files = Files::new();
    let config_path = files.path("worker.toml");
    std::fs::write(&config_path, pipeline_config(tb.server.tcp_addr, &files)).unwrap();
    WorkerConfig::from_toml_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    std::fs::write(files.path("slow"), "").unwrap();
    let worker = WorkerProcess::start(&config_path).await;
    assert_eq!(worker.metric("triage_worker_degraded"), 0.0);
    let (core_log, notify_log) = (files.path("core.log"), files.path("notify.log"));

    // Slow notify steps push the p99 past 300 ms.
    let normal = bodies("normal", 4);
    tb.publish("tickets", normal.clone()).await;
    wait_until("a slow notify step finishes", WAIT, || {
        !lines(&notify_log).is_empty()
    })
    .await;
    wait_until(
        "the worker reports degraded within 2 s of the first slow step",
        Duration::from_secs(2),
        || worker.metric("triage_worker_degraded") >= 1.0,
    )
    .await;

    // Degraded: urgent keeps its RDY, batch and replay go to 0, normal halves.
    assert_eq!(
        worker.metric(r#"triage_worker_rdy{channel="w",topic="urgent"}"#),
        4.0
    );
    assert_eq!(
        worker.metric(r#"triage_worker_rdy{channel="w",topic="tickets"}"#),
        2.0
    );
    assert_eq!(
        worker.metric(r#"triage_worker_rdy{channel="w",topic="reports"}"#),
        0.0
    );
    assert_eq!(
        worker.metric(r#"triage_worker_rdy{channel="w",topic="urgent.deferred"}"#),
        0.0
    );

    // Urgent messages keep flowing; their notify step is deferred, not run.
    let urgent = bodies("urgent", 6);
    tb.publish("urgent", urgent.clone()).await;
    tb.publish("reports", bodies("report", 2)).await;
    wait_until("every urgent message's core step ran", WAIT, || {
        let done = lines(&core_log);
        urgent.iter().all(|b| done.contains(b))
    })
    .await;
    wait_until("the urgent notify steps are deferred", WAIT, || {
        tb.published("urgent.deferred") >= urgent.len() as u64
    })
    .await;
    assert!(worker.metric(r#"triage_worker_noncore_deferred_total{step="notify"}"#) >= 6.0);
    assert_eq!(
        worker.metric("triage_worker_degraded"),
        1.0,
        "still degraded while the deferrals were checked (window 3 s + hold 4 s)"
    );
    let notified = lines(&notify_log);
    assert!(
        urgent.iter().all(|b| !notified.contains(b)),
        "no urgent notify ran while degraded: {notified:?}"
    );

    // Fast again: back to normal after the window and `hold`, then replay.
    std::fs::remove_file(files.path("slow")).unwrap();
    wait_until("the worker returns to normal", WAIT, || {
        worker.metric("triage_worker_degraded") == 0.0
    })
    .await;
    wait_until("every message's core and notify steps ran", WAIT, || {
        let (done, notified) = (lines(&core_log), lines(&notify_log));
        let reports = bodies("report", 2);
        normal
            .iter()
            .chain(&urgent)
            .all(|b| done.contains(b) && notified.contains(b))
            && reports.iter().all(|b| done.contains(b))
    })
    .await;
    wait_until("the deferral channels are empty", WAIT, || {
        tb.pending("urgent.deferred", "w") == (0, 0)
            && tb.pending("tickets.deferred", "w") == (0, 0)
    })
    .await;
    assert!(worker.metric(r#"triage_worker_replayed_total{step="notify"}"#) >= 6.0);
    assert!(worker.metric(r#"triage_worker_degrade_transitions_total{from="0",to="1"}"#) >= 1.0);
    assert!(worker.metric(r#"triage_worker_degrade_transitions_total{from="1",to="0"}"#) >= 1.0);
    assert!(worker
        .scrape()
        .contains("triage_worker_handle_seconds_bucket"));
    assert!(worker
        .scrape()
        .contains("triage_worker_latency_p99_seconds"));

    worker.stop().await;
    for topic in ["urgent", "tickets", "reports"] {
        assert_eq!(tb.pending(topic, "w"), (0, 0), "{topic}/w");
    }
    tb.server.shutdown().await;
}

fn run_worker(args: &[&str]) -> Output {
    Command::new(WORKER).args(args).output().unwrap()
}

#[test]
fn a_bad_config_exits_2_naming_the_key() {
    let files = Files::new();
    let path = files.path("bad.toml");
    // The second subscription's first step has a URL that is not http://.
    let config = r#"
broker = "127.0.0.1:4150"

[[subscriptions]]
topic = "a"
channel = "w"

[[subscriptions.steps]]
name = "update"
kind = "exec"
command = ["true"]

[[subscriptions]]
topic = "b"
channel = "w"

[[subscriptions.steps]]
name = "update"
kind = "http"
url = "ftp://tickets/update"
"#;
    std::fs::write(&path, config).unwrap();
    for args in [
        vec![path.to_str().unwrap()],
        vec!["--check", path.to_str().unwrap()],
    ] {
        let output = run_worker(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.starts_with("triage-worker: ")
                && stderr.contains("subscriptions[1].steps[0].url: must start with http://"),
            "{stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one sentence: {stderr}"
        );
    }
    let missing = run_worker(&[files.path("missing.toml").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn check_names_every_bad_key_one_line_each() {
    let files = Files::new();
    let path = files.path("worker.toml");
    let config = r#"
broker = "127.0.0.1:4150"

[[subscriptions]]
topic = "a"
channel = "w"
max_in_flight = "many"

[[subscriptions.steps]]
name = "update"
kind = "http"
url = "ftp://tickets/update"
"#;
    std::fs::write(&path, config).unwrap();
    let output = run_worker(&["--check", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines.iter().all(|l| l.starts_with("triage-worker: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("subscriptions[0].max_in_flight"),
        "{stderr}"
    );
    assert!(stderr.contains("subscriptions[0].steps[0].url"), "{stderr}");
}

#[test]
fn the_example_config_parses_and_checks() {
    let path = manifest_dir().join("ticket-worker.example.toml");
    let config = WorkerConfig::from_toml_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let priorities: Vec<_> = config
        .subscriptions
        .iter()
        .map(|s| s.priority.as_str())
        .collect();
    assert_eq!(priorities, ["urgent", "normal", "batch"]);
    for subscription in &config.subscriptions {
        let core: Vec<_> = subscription
            .steps
            .iter()
            .filter(|s| s.core)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(core, ["update-ticket"], "{}", subscription.topic);
        assert!(subscription
            .steps
            .iter()
            .any(|s| s.name == "index" && !s.core));
    }
    assert!(config.subscriptions[0]
        .steps
        .iter()
        .any(|s| s.name == "notify" && !s.core));
    let output = run_worker(&["--check", path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_its_broker_waits_for_it() {
    // A port nobody listens on, for the broker to take later.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let files = Files::new();
    let update = append_step(&files.path("core.log"), None);
    let config = format!(
        "broker = \"{address}\"\nhttp_address = \"127.0.0.1:0\"\n\n[[subscriptions]]\ntopic = \"jobs\"\nchannel = \"w\"\n\n[[subscriptions.steps]]\nname = \"update\"\nkind = \"exec\"\ncommand = {update}\n"
    );
    let path = files.path("worker.toml");
    std::fs::write(&path, config).unwrap();
    let mut worker = WorkerProcess::spawn(&path);
    worker.wait_for_log("cannot start; retrying").await;

    let tb = start_broker_on(address).await;
    worker.wait_started().await;
    tb.publish("jobs", ["late".to_owned()]).await;
    wait_until("the job's step ran", WAIT, || {
        lines(&files.path("core.log")).contains("late")
    })
    .await;
    worker.stop().await;
    tb.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_configured_with_lookupd_only_consumes_from_every_registered_broker() {
    let lookupd = start_lookupd().await;
    let brokers = [
        start_registered_broker(&lookupd).await,
        start_registered_broker(&lookupd).await,
    ];
    let files = Files::new();
    let update = append_step(&files.path("core.log"), None);
    let config = format!(
        "lookupd_http_addresses = [\"http://{}\"]\nlookupd_poll_interval = \"100ms\"\nhttp_address = \"127.0.0.1:0\"\n\n[[subscriptions]]\ntopic = \"jobs\"\nchannel = \"w\"\nmax_in_flight = 4\n\n[[subscriptions.steps]]\nname = \"update\"\nkind = \"exec\"\ncommand = {update}\n",
        lookupd.http_addr
    );
    let path = files.path("worker.toml");
    std::fs::write(&path, config).unwrap();
    let worker = WorkerProcess::start(&path).await;
    let mut sent = HashSet::new();
    for (b, broker) in brokers.iter().enumerate() {
        let published = bodies(&format!("b{b}"), 5);
        sent.extend(published.iter().cloned());
        broker.publish("jobs", published).await;
    }
    wait_until("every job of both brokers ran", WAIT, || {
        lines(&files.path("core.log")) == sent
    })
    .await;
    worker.stop().await;
    for broker in brokers {
        assert_eq!(broker.pending("jobs", "w"), (0, 0));
        broker.server.shutdown().await;
    }
    lookupd.shutdown().await;
}

/// This package's directory, read when the test runs: the path compiled in
/// by `env!` goes stale when the same target dir serves a clone elsewhere.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

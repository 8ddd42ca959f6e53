//! Harness for triage-bench's tests: an in-process triaged on loopback
//! (ephemeral ports, a temporary data dir) and a way to run the real
//! `triage-bench` binary against it with a deadline.

#![allow(dead_code)]

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use triage_broker::{Broker, Server};
use triage_config::BrokerConfig;

/// Far above what any run here takes; the tool bounds itself well within it.
const TOOL_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct TestBroker {
    pub server: Server,
    _data: tempfile::TempDir,
}

pub async fn start_broker() -> TestBroker {
    let data = tempfile::tempdir().expect("temporary data dir");
    let config = BrokerConfig {
        tcp_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        data_path: data.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let server = Server::start(config).await.expect("broker starts");
    TestBroker {
        server,
        _data: data,
    }
}

impl TestBroker {
    pub fn broker(&self) -> &Arc<Broker> {
        &self.server.broker
    }

    /// triage-bench's arguments for `mode` aimed at this broker (`--tcp`,
    /// `--http`, `--quiet`), then the words of `rest`, then `--json json`.
    pub fn tool_args(&self, mode: &str, rest: &str, json: &std::path::Path) -> Vec<String> {
        let mut args = vec![
            mode.to_owned(),
            "--tcp".to_owned(),
            self.server.tcp_addr.to_string(),
            "--http".to_owned(),
            self.server.http_addr.to_string(),
            "--quiet".to_owned(),
        ];
        args.extend(rest.split_whitespace().map(str::to_owned));
        args.push("--json".to_owned());
        args.push(json.display().to_string());
        args
    }

    pub async fn shutdown(self) {
        tokio::time::timeout(Duration::from_secs(10), self.server.shutdown())
            .await
            .expect("broker shut down within 10 s");
    }
}

/// Runs triage-bench with `args` (off the runtime's worker threads, so the
/// in-process broker keeps serving) and returns what it printed and its status.
pub async fn run_tool<S: AsRef<str>>(args: &[S]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_triage-bench"))
            .args(&args)
            .output()
            .expect("triage-bench starts")
    });
    tokio::time::timeout(TOOL_DEADLINE, run)
        .await
        .expect("triage-bench finished in time")
        .expect("the runner thread did not panic")
}

/// Fails with the tool's output unless it exited 0.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "triage-bench failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).expect("the JSON report was written");
    serde_json::from_slice(&bytes).expect("the JSON report parses")
}

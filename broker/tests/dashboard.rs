//! The deploy files in `docker/` against what the binaries really export and
//! build: every metric the Grafana dashboard queries is one a live broker
//! serves at `/metrics` after traffic (or a worker metric, see
//! [`worker_metrics`]), and the compose file, Prometheus and Grafana
//! provisioning agree with each other. The compose file is checked here
//! because `docker compose config` needs the compose plugin, which CI
//! machines do not have.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::start_broker;

/// Metrics the `triage-worker` binary serves on its own `/metrics`: every
/// `"triage_worker_..."` name in the worker's metrics module (which its own
/// tests scrape from a running worker).
fn worker_metrics() -> BTreeSet<String> {
    let path = manifest_dir().join("../worker/src/metrics.rs");
    let source = std::fs::read_to_string(path).unwrap();
    let names: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("triage_worker_"))
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 6, "worker metrics not found: {names:?}");
    names
}

fn docker_dir() -> PathBuf {
    manifest_dir().join("../docker")
}

fn read(path: &str) -> String {
    let path = docker_dir().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/dashboards/triage.json")).unwrap()
}

/// The file as compose reads it: YAML with merge keys (`<<: *anchor`) applied.
fn yaml(path: &str) -> serde_yaml::Value {
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    value
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// Every PromQL expression: panel targets and template variable queries.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut exprs: Vec<String> = panels(dashboard)
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        exprs.push(variable["definition"].as_str().unwrap().to_owned());
    }
    exprs
}

/// The metric names in a PromQL expression: identifiers starting with
/// `triage_`, outside quoted strings (label values).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut quoted = false;
    let mut ident = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if quoted {
            quoted = c != '"';
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            ident.push(c);
            continue;
        }
        if ident.starts_with("triage_") {
            names.insert(std::mem::take(&mut ident));
        }
        ident.clear();
        quoted = c == '"';
    }
    names
}

/// A worker metric's name, or a histogram series of one.
fn is_worker_metric(name: &str, worker: &BTreeSet<String>) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    worker.contains(name) || worker.contains(base)
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{method} {path}: {raw}");
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The sample names of a scrape (`name{labels} value` and `name value`).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_name_extractor_skips_label_values_and_functions() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(triage_a_bucket{topic="triage_not_a_metric"}[5m]))) / triage_b"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["triage_a_bucket", "triage_b"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let broker = start_broker(|_| {}).await;
    let addr = broker.server.http_addr;
    // Traffic that makes every family appear: a persistent and a memory
    // topic, deliveries and FINs, a consumer under backpressure.
    http(addr, "POST", "/topic/create?topic=urgent&tier=memory").await;
    let mut consumer = broker.consumer("tickets", "agents", 10).await;
    let mut urgent = broker.consumer("urgent", "agents", 10).await;
    broker.publish_all("tickets", ["t1", "t2"]).await;
    broker.publish_all("urgent", ["u1"]).await;
    for msg in consumer.read_messages(2).await {
        consumer.fin(&msg.id).await;
    }
    let msg = urgent.read_message().await;
    urgent.fin(&msg.id).await;
    urgent
        .send(&triage_protocol::Command::Backpressure(1))
        .await;
    urgent.expect_ok().await;
    // The FINs have no reply: wait until they are counted.
    common::wait_until("three FINs recorded", || {
        broker
            .broker()
            .topics()
            .iter()
            .flat_map(|t| t.snapshot().channels)
            .map(|c| {
                c.counters
                    .finish_count
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum::<u64>()
            == 3
    })
    .await;
    let exported = exported_names(&http(addr, "GET", "/metrics").await);

    let dashboard = dashboard();
    let mut queried = BTreeSet::new();
    for expr in expressions(&dashboard) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "no triage metric in {expr:?}");
        queried.extend(names);
    }
    let mut missing = Vec::new();
    let worker = worker_metrics();
    for name in &queried {
        let found = exported.contains(name) || is_worker_metric(name, &worker);
        if !found {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody exports: {missing:?}"
    );
    // The worker panels are there, and the list is not just decoration.
    assert!(queried.iter().any(|n| is_worker_metric(n, &worker)));
    drop((consumer, urgent));
    broker.shutdown().await;
}

#[test]
fn dashboard_panels_are_well_formed_and_use_the_provisioned_datasource() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "triage");
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let uid = datasources["datasources"][0]["uid"].as_str().unwrap();
    let url = datasources["datasources"][0]["url"].as_str().unwrap();
    assert_eq!(url, "http://prometheus:9090", "the compose service");

    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id {panel}"
        );
        if panel["type"] == "row" {
            continue;
        }
        titles.push(panel["title"].as_str().unwrap().to_owned());
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], uid, "{}", panel["title"]);
        }
    }
    // What issue 6 asks the dashboard to show.
    for wanted in [
        "Publish rate by tier",
        "Delivery rate by tier",
        "Channel depth against its bound",
        "End-to-end p99 by tier",
        "Delayed pending",
        "Worker degrade level",
        "Consumers under backpressure",
        "Fsync latency",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "no panel {wanted:?}");
    }

    let provider = yaml("grafana/provisioning/dashboards/triage.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let compose = yaml("docker-compose.yml");
    let grafana_mounts = mounts(&compose, "grafana");
    assert!(
        grafana_mounts
            .iter()
            .any(|(host, container)| host == "./grafana/dashboards" && container == path),
        "the provider's path {path} is where compose mounts the dashboards: {grafana_mounts:?}"
    );
}

/// `(host, container)` of a service's bind mounts and volumes.
fn mounts(compose: &serde_yaml::Value, service: &str) -> Vec<(String, String)> {
    compose["services"][service]["volumes"]
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let mut parts = v.as_str().unwrap().split(':');
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn compose_prometheus_and_dockerfile_agree() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for wanted in [
        "triaged",
        "worker-1",
        "worker-2",
        "tickets",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(wanted), "no service {wanted}");
    }
    for (name, service) in services {
        assert!(
            service["image"].is_string(),
            "{name:?} has no image (a merge key gone wrong?)"
        );
    }
    // The broker keeps its data in a named volume, where the image puts it.
    let volumes = compose["volumes"].as_mapping().unwrap();
    let data = mounts(&compose, "triaged");
    assert!(data
        .iter()
        .any(|(host, container)| container == "/data" && volumes.contains_key(host.as_str())));
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("TRIAGE_DATA_PATH=/data"));

    // Every file compose mounts exists (paths are relative to docker/).
    for service in names.iter().copied() {
        for (host, _) in mounts(&compose, service)
            .into_iter()
            .filter(|(host, _)| host.starts_with('.'))
        {
            let exists = docker_dir().join(&host).exists();
            assert!(exists, "{service} mounts {host}, which does not exist");
        }
    }

    // Prometheus scrapes the broker's HTTP port and both workers, by the
    // names compose gives them.
    let prometheus = yaml("prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        for config in job["static_configs"].as_sequence().unwrap() {
            for target in config["targets"].as_sequence().unwrap() {
                let (host, port) = target.as_str().unwrap().split_once(':').unwrap();
                assert!(names.contains(host), "scrapes unknown service {host}");
                targets.insert(format!("{host}:{port}"));
            }
        }
    }
    for wanted in ["triaged:4151", "worker-1:9150", "worker-2:9150"] {
        assert!(targets.contains(wanted), "not scraped: {wanted}");
    }
    let worker_command = compose["services"]["worker-1"]["command"][0]
        .as_str()
        .unwrap();
    assert!(
        worker_command.contains("0.0.0.0:9150"),
        "the workers' metrics listen where Prometheus scrapes: {worker_command}"
    );

    // The Dockerfile builds every binary compose runs, and those exist.
    for bin in ["triaged", "triagectl", "triage-worker"] {
        assert!(dockerfile.contains(&format!("--bin {bin}")), "{bin}");
    }
    let manifest = std::fs::read_to_string(manifest_dir().join("Cargo.toml")).unwrap();
    for bin in ["triaged", "triagectl"] {
        assert!(manifest.contains(&format!("name = \"{bin}\"")), "{bin}");
    }
}

/// The image's HEALTHCHECK asks the broker's HTTP API on loopback: it must
/// follow the port `TRIAGE_HTTP_ADDRESS` gives the broker, and the workers'
/// containers, which run no broker, must turn it off (it could only ever say
/// "unhealthy" there). The example pipeline's exec steps name programs the
/// image does not have, so the workers' start command rewrites each of them.
#[test]
fn the_images_health_check_and_programs_suit_each_service() {
    let dockerfile = read("Dockerfile");
    let mut health_check = String::new();
    for line in dockerfile
        .lines()
        .skip_while(|line| !line.starts_with("HEALTHCHECK"))
    {
        health_check.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            break;
        }
    }
    assert!(
        health_check.contains("triagectl") && health_check.contains("TRIAGE_HTTP_ADDRESS"),
        "the health check follows TRIAGE_HTTP_ADDRESS: {health_check:?}"
    );

    let compose = yaml("docker-compose.yml");
    for worker in ["worker-1", "worker-2"] {
        assert_eq!(
            compose["services"][worker]["healthcheck"]["disable"],
            serde_yaml::Value::Bool(true),
            "{worker} turns off the broker's health check"
        );
    }

    let example =
        std::fs::read_to_string(manifest_dir().join("../worker/ticket-worker.example.toml"))
            .unwrap();
    let programs: BTreeSet<&str> = example
        .lines()
        .filter_map(|line| line.trim().strip_prefix("command = [\""))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!programs.is_empty(), "the example has exec steps");
    let worker_command = compose["services"]["worker-1"]["command"][0]
        .as_str()
        .unwrap();
    for program in programs {
        assert!(
            worker_command.contains(&format!("s#\"{program}\"")),
            "the workers' command rewrites the exec step {program}: {worker_command}"
        );
    }
}

/// This package's directory, read when the test runs: the path compiled in
/// by `env!` goes stale when the same target dir serves a clone elsewhere.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

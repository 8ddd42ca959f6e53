//! `triage-worker`: consumes the topics of one TOML file and runs each
//! message through its pipeline of `http` and `exec` steps, degrading when it
//! falls behind. `--check` only validates the file. Waits for a broker that is
//! not up yet; serves until SIGINT or SIGTERM, then finishes in-flight work
//! and exits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use triage_worker::{Worker, WorkerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "triage-worker",
    version,
    about = "Runs triage pipelines with latency-driven backpressure"
)]
struct Args {
    /// The worker's TOML configuration file.
    config: PathBuf,
    /// Validate the file and exit: 0 when valid, 2 (with the reason) when not.
    #[arg(long)]
    check: bool,
    /// A `tracing` filter, e.g. `info` or `triage_worker=debug`.
    #[arg(long, env = "TRIAGE_WORKER_LOG", default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version print to stdout and succeed.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or(&text);
            return fail(first.trim_start_matches("error: "));
        }
    };
    if args.check {
        return check(&args.config);
    }
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(e) => return fail(&format!("{e:#}")),
    };
    if let Err(e) = triage_daemon::init_logging(&args.log_level, false, "--log-level") {
        return fail(&e);
    }
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// One plain sentence on stderr and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    eprintln!("triage-worker: {message}");
    ExitCode::from(2)
}

/// `--check`: every problem of the file, one line each, or "valid".
fn check(path: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return fail(&format!("cannot read {}: {e}", path.display())),
    };
    let problems = triage_worker::config::check_worker_toml(&text);
    if problems.is_empty() {
        println!("{}: valid", path.display());
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("triage-worker: {} is invalid: {problem}", path.display());
    }
    ExitCode::from(2)
}

fn load(path: &Path) -> anyhow::Result<WorkerConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    WorkerConfig::from_toml_str(&text).with_context(|| format!("{} is invalid", path.display()))
}

fn run(config: &WorkerConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let signal = triage_daemon::shutdown_signal("the worker");
        tokio::pin!(signal);
        // A broker that is not up yet (or restarting) is waited for, as NSQ clients do.
        let mut delay = Duration::from_millis(100);
        let worker = loop {
            match Worker::start(config).await {
                Ok(worker) => break worker,
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot start; retrying");
                    tokio::select! {
                        _ = &mut signal => return anyhow::Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        signal.await;
        tracing::info!("signal received, finishing in-flight work");
        worker.shutdown().await?;
        anyhow::Ok(())
    })
}

//! `triaged`: the broker daemon. Reads its configuration (defaults, TOML,
//! `TRIAGE_*` env, nsqd-style flags), serves until SIGINT or SIGTERM, then
//! shuts down cleanly.

use std::process::ExitCode;

use anyhow::Context;
use triage_broker::Server;
use triage_config::{BrokerArgs, LogFormat};

fn main() -> ExitCode {
    let args = match BrokerArgs::try_parse_args(std::env::args()) {
        Ok(args) => args,
        // --help and --version print to stdout and succeed.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => return fail(first_line(&e.to_string()).trim_start_matches("error: ")),
    };
    let config = match triage_config::load_broker(&args) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string()),
    };
    let json = config.log_format == LogFormat::Json;
    if let Err(e) = triage_daemon::init_logging(&config.log_level, json, "log_level") {
        return fail(&e);
    }
    let ignored = args.ignored.given();
    if !ignored.is_empty() {
        tracing::warn!(flags = ?ignored, "accepted for nsqd compatibility but ignored");
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// One plain sentence on stderr and a non-zero exit: what an admin needs, no backtrace.
fn fail(message: &str) -> ExitCode {
    eprintln!("triaged: {message}");
    ExitCode::from(2)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn run(config: triage_config::BrokerConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        triage_daemon::shutdown_signal("the broker").await;
        tracing::info!("signal received, shutting down");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

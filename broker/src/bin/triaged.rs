//! `triaged`: the broker daemon. Reads its configuration (defaults, TOML,
//! `TRIAGE_*` env, nsqd-style flags), serves until SIGINT or SIGTERM, then
//! shuts down cleanly.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
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
    if let Err(e) = init_logging(config.log_format, &config.log_level) {
        return fail(&format!("{e:#}"));
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
        shutdown_signal().await;
        tracing::info!("signal received, shutting down");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid log_level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; they garble files and pipes.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

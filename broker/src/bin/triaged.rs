//! `triaged`: the broker daemon. Reads its configuration (defaults, TOML,
//! `TRIAGE_*` env, nsqd-style flags), serves until SIGINT or SIGTERM, then
//! shuts down cleanly.

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use triage_broker::Server;
use triage_config::{BrokerArgs, LogFormat};

fn main() -> anyhow::Result<()> {
    let args = BrokerArgs::parse_args(std::env::args());
    let config = match triage_config::load_broker(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("triaged: {e}");
            std::process::exit(2);
        }
    };
    init_logging(config.log_format, &config.log_level)?;
    let ignored = args.ignored.given();
    if !ignored.is_empty() {
        tracing::warn!(flags = ?ignored, "accepted for nsqd compatibility but ignored");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
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
        .with_writer(std::io::stderr);
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

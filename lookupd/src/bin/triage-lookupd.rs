//! `triage-lookupd`: the discovery daemon. Takes nsqlookupd's flags (single
//! dash too, as Go's flag package allows), serves until SIGINT or SIGTERM,
//! then shuts down cleanly.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use triage_lookupd::{Lookupd, Options};

/// An nsqlookupd-compatible discovery daemon: nodes register their topics
/// over TCP, consumers find them over HTTP.
#[derive(Debug, Parser)]
#[command(name = "triage-lookupd", version)]
struct Args {
    /// <addr>:<port> to listen on for TCP clients (default 127.0.0.1:4160)
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    tcp_address: Option<SocketAddr>,
    /// <addr>:<port> to listen on for HTTP clients (default 127.0.0.1:4161)
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    http_address: Option<SocketAddr>,
    /// Address of this lookupd node (default: the OS hostname)
    #[arg(long, value_name = "HOST")]
    broadcast_address: Option<String>,
    /// Duration since a producer's last ping before it is left out of /lookup and /nodes (default 5m0s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    inactive_producer_timeout: Option<Duration>,
    /// Duration a producer stays tombstoned for a topic (default 45s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    tombstone_lifetime: Option<Duration>,
    /// Most TCP connections at once (triage's addition; default 10000)
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Log filter: error, warn, info, debug, or a tracing directive
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
    /// Accepted for nsqlookupd compatibility; ignored
    #[arg(long, value_name = "PREFIX", hide = true)]
    log_prefix: Option<String>,
}

/// `host:port`, or `:port` for every interface as Go's `net.Listen` takes it.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{text:?} is not a host:port address"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    triage_config::units::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let argv = triage_config::normalize_nsqd_args(std::env::args());
    let args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        // --help and --version print to stdout and succeed.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or(&text);
            return fail(first.trim_start_matches("error: "));
        }
    };
    if let Err(e) = triage_daemon::init_logging(&args.log_level, false, "--log-level") {
        return fail(&e);
    }
    let defaults = Options::default();
    let options = Options {
        tcp_address: args.tcp_address.unwrap_or(defaults.tcp_address),
        http_address: args.http_address.unwrap_or(defaults.http_address),
        broadcast_address: args.broadcast_address.unwrap_or(defaults.broadcast_address),
        inactive_producer_timeout: args
            .inactive_producer_timeout
            .unwrap_or(defaults.inactive_producer_timeout),
        tombstone_lifetime: args
            .tombstone_lifetime
            .unwrap_or(defaults.tombstone_lifetime),
        max_connections: args.max_connections.unwrap_or(defaults.max_connections),
    };
    if options.max_connections == 0 {
        return fail("--max-connections must be at least 1");
    }
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// One plain sentence on stderr and a non-zero exit.
fn fail(message: &str) -> ExitCode {
    eprintln!("triage-lookupd: {message}");
    ExitCode::from(2)
}

fn run(options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let lookupd = Lookupd::start(options).await?;
        triage_daemon::shutdown_signal("lookupd").await;
        tracing::info!("signal received, shutting down");
        lookupd.shutdown().await;
        anyhow::Ok(())
    })
}

//! What triage's three daemons (`triaged`, `triage-worker`,
//! `triage-lookupd`) share at their edges: logging to stderr and waiting
//! for the signal that stops them. Nothing here knows a broker or a worker.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `level` (a tracing-subscriber directive such
/// as `info` or `triage_broker=debug`), as JSON lines or as text.
///
/// # Errors
/// A `level` that is not a valid directive, as one sentence naming
/// `setting` (the key or flag it came from).
pub fn init_logging(level: &str, json: bool, setting: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid {setting} {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; they garble files and pipes.
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Completes at SIGINT (Ctrl-C) or SIGTERM. If SIGTERM cannot be listened
/// for, says so in the log (naming `daemon`) and waits for SIGINT alone.
pub async fn shutdown_signal(daemon: &str) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops {daemon}");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = daemon;
        let _ = ctrl_c.await;
    }
}

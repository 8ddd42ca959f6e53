//! The progress line on stderr: totals and rates over the last tick, once a
//! second on a terminal (rewritten in place), every 5 seconds otherwise (one
//! line each, for logs). It stops with its token.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One total the line shows: its name and how to read it.
pub type Gauge = (&'static str, Box<dyn Fn() -> u64 + Send + Sync>);

#[derive(Debug)]
pub struct Progress {
    task: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Progress {
    /// Starts ticking unless `quiet`; `total` is the run's planned length.
    pub fn start(gauges: Vec<Gauge>, total: Duration, quiet: bool) -> Progress {
        let stop = CancellationToken::new();
        let task = (!quiet).then(|| tokio::spawn(tick(gauges, total, stop.clone())));
        Progress { task, stop }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

async fn tick(gauges: Vec<Gauge>, total: Duration, stop: CancellationToken) {
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 5 });
    let started = Instant::now();
    let mut last: Vec<u64> = gauges.iter().map(|(_, read)| read()).collect();
    let mut ticker = tokio::time::interval_at(started + every, every);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let mut line = format!(
            "[{:>5.1}s/{:.0}s]",
            started.elapsed().as_secs_f64(),
            total.as_secs_f64()
        );
        for ((name, read), last) in gauges.iter().zip(last.iter_mut()) {
            let now = read();
            let rate = (now - *last) as f64 / every.as_secs_f64();
            *last = now;
            line.push_str(&format!(
                " {name} {} ({}/s)",
                thousands(now),
                thousands(rate as u64)
            ));
        }
        let mut err = std::io::stderr().lock();
        let _ = if terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
    }
    if terminal {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

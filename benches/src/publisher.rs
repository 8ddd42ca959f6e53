//! A group of publishing connections. Each keeps one command (PUB, or MPUB
//! for batches) in flight and waits for its `OK`, as NSQ's bench_writer does;
//! a shared [`Budget`] caps the total, an optional rate paces each connection,
//! and the group stops when its token is cancelled.
//!
//! Only acknowledged messages count as published. A command already sent
//! when the stop comes is still awaited (at most [`crate::wire::REPLY_TIMEOUT`]), so the
//! count is exact.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use triage_protocol::Command;

use crate::body::{now_ns, stamped_batch};
use crate::budget::Budget;
use crate::latency::Latencies;
use crate::wire::{Connection, WireError};

/// How far behind its schedule a paced publisher may fall and still catch up.
const MAX_CATCH_UP: Duration = Duration::from_millis(100);

/// What a group publishes and how.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub topic: String,
    pub connections: u32,
    /// Body bytes (at least the timestamp's 8).
    pub size: usize,
    /// Messages per command; 1 sends PUB.
    pub batch: u32,
    /// Messages per second over the whole group.
    pub rate: Option<u64>,
    /// Total messages over the whole group.
    pub count: Option<u64>,
}

/// Live totals, read by the progress line while the group runs.
#[derive(Debug, Default)]
pub struct PublishCounters {
    pub published: AtomicU64,
}

/// What a finished group did.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    pub published: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// Time from sending a command to its `OK`.
    pub ack: Latencies,
    /// One line per connection that failed.
    pub errors: Vec<String>,
}

/// A running group; [`Publishers::finish`] waits for it.
#[derive(Debug)]
pub struct Publishers {
    tasks: JoinSet<(Result<(), WireError>, Latencies, Option<Instant>)>,
    counters: Arc<PublishCounters>,
    started: Instant,
}

impl Publishers {
    /// Opens every connection, then starts publishing on all of them.
    ///
    /// # Errors
    /// The first connection that cannot be opened; nothing has been sent then.
    pub async fn start(
        addr: SocketAddr,
        plan: &PublishPlan,
        stop: CancellationToken,
    ) -> Result<Publishers, WireError> {
        let mut conns = Vec::with_capacity(plan.connections as usize);
        for _ in 0..plan.connections {
            conns.push(Connection::open(addr, crate::CONNECT_TIMEOUT).await?);
        }
        let budget = Arc::new(Budget::new(plan.count));
        let counters = Arc::new(PublishCounters::default());
        // Each connection sends one command per `interval` to share the rate.
        let interval = plan.rate.map(|rate| {
            let per_conn = rate as f64 / f64::from(plan.connections);
            Duration::from_secs_f64(f64::from(plan.batch) / per_conn)
        });
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for conn in conns {
            let task = PublishTask {
                conn,
                plan: plan.clone(),
                interval,
                budget: Arc::clone(&budget),
                counters: Arc::clone(&counters),
                stop: stop.clone(),
                ack: Latencies::new(),
                last_ack: None,
            };
            tasks.spawn(task.run());
        }
        Ok(Publishers {
            tasks,
            counters,
            started,
        })
    }

    pub fn counters(&self) -> Arc<PublishCounters> {
        Arc::clone(&self.counters)
    }

    /// Waits for every connection to stop (the budget spent, the token
    /// cancelled, or a failure) and sums up.
    pub async fn finish(mut self) -> PublishOutcome {
        let mut outcome = PublishOutcome::default();
        let mut last_ack = None;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((result, ack, last)) => {
                    outcome.ack.merge(&ack);
                    last_ack = last_ack.max(last);
                    if let Err(e) = result {
                        outcome.errors.push(format!("publisher: {e}"));
                    }
                }
                Err(e) => outcome.errors.push(format!("publisher task: {e}")),
            }
        }
        outcome.published = self.counters.published.load(Ordering::Acquire);
        outcome.elapsed = last_ack.map_or(Duration::ZERO, |t| t - self.started);
        outcome
    }
}

struct PublishTask {
    conn: Connection,
    plan: PublishPlan,
    interval: Option<Duration>,
    budget: Arc<Budget>,
    counters: Arc<PublishCounters>,
    stop: CancellationToken,
    ack: Latencies,
    last_ack: Option<Instant>,
}

impl PublishTask {
    async fn run(mut self) -> (Result<(), WireError>, Latencies, Option<Instant>) {
        let result = self.publish().await;
        (result, self.ack, self.last_ack)
    }

    async fn publish(&mut self) -> Result<(), WireError> {
        let mut next_send = Instant::now();
        while !self.stop.is_cancelled() {
            if let Some(interval) = self.interval {
                // Timers tick in whole milliseconds, so at sub-millisecond
                // intervals a sleep oversleeps: the sends that fell due
                // meanwhile go out back to back, keeping the average rate.
                // After a stall only MAX_CATCH_UP's worth is made up.
                let now = Instant::now();
                if next_send > now {
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep_until(next_send) => {}
                    }
                } else if let Some(earliest) = now.checked_sub(MAX_CATCH_UP) {
                    next_send = next_send.max(earliest);
                }
                next_send += interval;
            }
            let count = self.budget.claim(u64::from(self.plan.batch));
            if count == 0 {
                break;
            }
            let bodies = stamped_batch(count as usize, self.plan.size, now_ns());
            let topic = self.plan.topic.clone();
            let command = if self.plan.batch == 1 {
                Command::Pub {
                    topic,
                    body: bodies.into_iter().next().unwrap_or_default(),
                }
            } else {
                Command::Mpub { topic, bodies }
            };
            self.conn.queue(&command);
            let sent = Instant::now();
            self.conn.expect_ok().await?;
            let acked = Instant::now();
            self.ack.record(duration_ns(acked - sent));
            self.last_ack = Some(acked);
            self.counters.published.fetch_add(count, Ordering::AcqRel);
        }
        Ok(())
    }
}

pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

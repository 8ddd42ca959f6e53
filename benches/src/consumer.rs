//! A group of consuming connections on one channel. Each subscribes with
//! `RDY n`, FINs every message it counts (all FINs for one read go out in one
//! write) and records each message's age from the timestamp in its body.
//!
//! With a limit, a shared [`Budget`] makes the group count exactly that many:
//! a message past it is left unfinished (the broker requeues it when the
//! connection closes) and the group stops. On stop each connection sends
//! `RDY 0` and `CLS` and waits (briefly) for `CLOSE_WAIT`, so every FIN it
//! sent has been processed when [`Consumers::finish`] returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use triage_protocol::{Command, Frame};

use crate::body::{now_ns, sent_ns};
use crate::budget::Budget;
use crate::latency::Latencies;
use crate::wire::{is_heartbeat, unexpected, Connection, WireError, REPLY_TIMEOUT};

/// Where and how a group consumes.
#[derive(Debug, Clone)]
pub struct ConsumePlan {
    pub topic: String,
    pub channel: String,
    pub connections: u32,
    pub rdy: u64,
    /// Stop after counting this many.
    pub count: Option<u64>,
    /// Messages stamped before this (Unix ns) are left over from an earlier
    /// run: counted as stale, kept out of the latencies.
    pub stale_before_ns: Option<u64>,
    /// IDENTIFY's `output_buffer_timeout` in ms (broker default when `None`).
    pub output_buffer_timeout_ms: Option<i64>,
}

/// Live totals, read by the progress line and by scenarios waiting to drain.
#[derive(Debug, Default)]
pub struct ConsumeCounters {
    /// Counted messages, stale ones included.
    pub received: AtomicU64,
    pub stale: AtomicU64,
    pub finished: AtomicU64,
}

#[derive(Debug, Default)]
pub struct ConsumeOutcome {
    pub received: u64,
    pub stale: u64,
    pub finished: u64,
    /// From subscribing to the last counted message.
    pub elapsed: Duration,
    /// Age on arrival: receive time minus the body's send time.
    pub age: Latencies,
    pub errors: Vec<String>,
}

type TaskResult = (Result<(), WireError>, Latencies, Option<Instant>);

#[derive(Debug)]
pub struct Consumers {
    tasks: JoinSet<TaskResult>,
    counters: Arc<ConsumeCounters>,
    stop: CancellationToken,
    started: Instant,
}

impl Consumers {
    /// Opens, identifies and subscribes every connection (so the channel
    /// exists once this returns), then starts consuming on all of them.
    /// The group stops when `stop` is cancelled or its limit is reached.
    ///
    /// # Errors
    /// The first connection that cannot be opened or subscribed.
    pub async fn start(
        addr: SocketAddr,
        plan: &ConsumePlan,
        stop: &CancellationToken,
    ) -> Result<Consumers, WireError> {
        let mut conns = Vec::with_capacity(plan.connections as usize);
        for _ in 0..plan.connections {
            let mut conn = Connection::open(addr, crate::CONNECT_TIMEOUT).await?;
            conn.identify(plan.output_buffer_timeout_ms).await?;
            conn.queue(&Command::Sub {
                topic: plan.topic.clone(),
                channel: plan.channel.clone(),
            });
            conn.expect_ok().await?;
            conns.push(conn);
        }
        // The group's own token: reaching the limit stops this group only.
        let stop = stop.child_token();
        let budget = Arc::new(Budget::new(plan.count));
        let counters = Arc::new(ConsumeCounters::default());
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for mut conn in conns {
            conn.queue(&Command::Rdy(plan.rdy));
            let task = ConsumeTask {
                conn,
                budget: Arc::clone(&budget),
                counters: Arc::clone(&counters),
                stop: stop.clone(),
                stale_before_ns: plan.stale_before_ns.unwrap_or(0),
                age: Latencies::new(),
                last_message: None,
            };
            tasks.spawn(task.run());
        }
        Ok(Consumers {
            tasks,
            counters,
            stop,
            started,
        })
    }

    pub fn counters(&self) -> Arc<ConsumeCounters> {
        Arc::clone(&self.counters)
    }

    /// Counted so far, stale ones excluded.
    pub fn fresh_received(&self) -> u64 {
        self.counters.received.load(Ordering::Acquire) - self.counters.stale.load(Ordering::Acquire)
    }

    /// Whether the group has stopped (its limit reached, or told to).
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Waits until the group stops by itself or `deadline` passes.
    pub async fn stopped_by(&self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline, self.stop.cancelled()).await;
    }

    /// Stops every connection and sums up.
    pub async fn finish(mut self) -> ConsumeOutcome {
        self.stop.cancel();
        let mut outcome = ConsumeOutcome::default();
        let mut last_message = None;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((result, age, last)) => {
                    outcome.age.merge(&age);
                    last_message = last_message.max(last);
                    if let Err(e) = result {
                        outcome.errors.push(format!("consumer: {e}"));
                    }
                }
                Err(e) => outcome.errors.push(format!("consumer task: {e}")),
            }
        }
        outcome.received = self.counters.received.load(Ordering::Acquire);
        outcome.stale = self.counters.stale.load(Ordering::Acquire);
        outcome.finished = self.counters.finished.load(Ordering::Acquire);
        outcome.elapsed = last_message.map_or(Duration::ZERO, |t| t - self.started);
        outcome
    }
}

struct ConsumeTask {
    conn: Connection,
    budget: Arc<Budget>,
    counters: Arc<ConsumeCounters>,
    stop: CancellationToken,
    stale_before_ns: u64,
    age: Latencies,
    last_message: Option<Instant>,
}

impl ConsumeTask {
    async fn run(mut self) -> TaskResult {
        let mut result = self.consume().await;
        if result.is_ok() {
            result = self.close().await;
        }
        (result, self.age, self.last_message)
    }

    async fn consume(&mut self) -> Result<(), WireError> {
        self.conn.flush().await?;
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return Ok(()),
                filled = self.conn.fill() => filled?,
            }
            let now = now_ns();
            let mut fins = 0;
            while let Some(frame) = self.conn.buffered_frame()? {
                match frame {
                    Frame::Message(msg) => {
                        if self.budget.claim(1) == 0 {
                            // Past the limit: not counted, not finished.
                            self.stop.cancel();
                            continue;
                        }
                        self.count(&msg.body, now);
                        self.conn.queue(&Command::Fin(msg.id));
                        fins += 1;
                    }
                    frame if is_heartbeat(&frame) => self.conn.queue(&Command::Nop),
                    Frame::Response(_) => {}
                    frame @ Frame::Error(_) => return Err(unexpected(frame, "a message")),
                }
            }
            self.conn.flush().await?;
            self.counters.finished.fetch_add(fins, Ordering::AcqRel);
            if self.budget.is_spent() {
                self.stop.cancel();
            }
        }
    }

    fn count(&mut self, body: &[u8], now: u64) {
        self.counters.received.fetch_add(1, Ordering::AcqRel);
        self.last_message = Some(Instant::now());
        match sent_ns(body) {
            Some(sent) if sent < self.stale_before_ns => {
                self.counters.stale.fetch_add(1, Ordering::AcqRel);
            }
            Some(sent) => self.age.record(now.saturating_sub(sent)),
            None => {}
        }
    }

    /// `RDY 0`, `CLS`, then wait for `CLOSE_WAIT`: the broker answers it
    /// after every FIN sent before, so they have all been processed.
    /// Messages still arriving meanwhile are neither counted nor finished.
    async fn close(&mut self) -> Result<(), WireError> {
        self.conn.queue(&Command::Rdy(0));
        self.conn.queue(&Command::Cls);
        self.conn.flush().await?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.conn.next_reply(deadline).await {
                Ok(Frame::Response(data)) if data == triage_protocol::CLOSE_WAIT => return Ok(()),
                Ok(Frame::Message(_)) | Ok(Frame::Response(_)) => {}
                Ok(frame @ Frame::Error(_)) => return Err(unexpected(frame, "CLOSE_WAIT")),
                // The broker may close right after CLOSE_WAIT was read.
                Err(WireError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Waits until `consumers` have counted `target` fresh messages, or `deadline`.
pub async fn drain(consumers: &Consumers, target: u64, deadline: Instant) {
    while consumers.fresh_received() < target && !consumers.is_stopped() {
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

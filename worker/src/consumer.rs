//! The consumer: one TCP connection per (topic, channel) subscription and
//! broker (reconnected with backoff when lost, for a broker given by address;
//! for brokers found through lookupd, a discovery task per subscription polls
//! every lookupd and connects to new ones), the subscription's RDY divided
//! among them; a handler task per message bounded by a shared semaphore; and
//! one controller task that turns the latency window into a degrade level.
//!
//! Data flow: a connection task reads frames and hands each message to a
//! handler task; the handler's outcome comes back to the connection task over
//! a channel, which sends FIN or REQ and records the latency sample. The
//! controller task reads the samples every `evaluate_every`; when the level
//! changes it re-plans every subscription's RDY by priority
//! ([`crate::budget::allocate`]) and publishes the plan on a `watch`; every
//! connection task then sends `BACKPRESSURE <level>` and its new RDY.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triage_config::worker::lookupd_authority;
use triage_protocol::frame::parse_error_text;
use triage_protocol::{Command, Frame, IdentifyRequest, IdentifyResponse, Message, MessageId};

use crate::budget::{allocate, Priority};
use crate::degrade::{DegradeConfig, DegradeController, Level};
use crate::discovery::{lookup, lookup_client};
use crate::error::{ConfigError, ConsumerError, HandlerError};
use crate::latency::{LatencyMonitor, LatencySignal, LatencySnapshot, LatencyWindow, Sample};
pub use crate::wire::Compression;
use crate::wire::{refused, Wire};

/// A message and where it came from, as a handler receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: Arc<str>,
    pub channel: Arc<str>,
    pub message: Message,
    /// The degrade level when the handler started; handlers skip non-core work above `Normal`.
    pub level: Level,
}

/// Handles one message. `Ok` finishes it (FIN); `Err` requeues it (REQ) with
/// exponential backoff by attempt. Implemented for every
/// `Fn(Delivery) -> impl Future<Output = Result<(), HandlerError>>`.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(delivery)
    }
}

/// REQ delay for a failed message; defined with the config file it is read from.
pub use triage_config::worker::Backoff;

/// One topic/channel pair to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub topic: String,
    pub channel: String,
    /// The most RDY this subscription asks for (at level 0, within the global budget).
    pub max_in_flight: u64,
    pub priority: Priority,
}

impl Subscription {
    /// A normal-priority subscription.
    pub fn new(topic: &str, channel: &str, max_in_flight: u64) -> Self {
        Subscription {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
            max_in_flight,
            priority: Priority::Normal,
        }
    }

    pub fn with_priority(self, priority: Priority) -> Self {
        Subscription { priority, ..self }
    }
}

/// Everything a [`Consumer`] needs; [`ConsumerConfig::default`] is the one place defaults live.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// A broker's TCP address, `host:port`, connected to (and reconnected) for
    /// every subscription. `None`: only the brokers lookupd lists.
    pub address: Option<String>,
    /// lookupd HTTP addresses (`host:port` or `http://host:port`) polled for
    /// the brokers that have each subscription's topic, besides `address`.
    pub lookupd_http_addresses: Vec<String>,
    /// How often each subscription asks every lookupd (go-nsq's default: 15 s).
    pub lookupd_poll_interval: Duration,
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    /// Handlers running at once, across every subscription.
    pub concurrency: usize,
    /// RDY summed over every subscription, shared by priority
    /// ([`crate::budget::allocate`]); `None`: each subscription's own `max_in_flight`.
    pub max_in_flight: Option<u64>,
    /// Delay between attempts to reconnect a lost subscription.
    pub reconnect: Backoff,
    /// Asked for in IDENTIFY; used when the broker agrees.
    pub compression: Compression,
    /// `None` keeps the broker's default.
    pub heartbeat_interval: Option<Duration>,
    /// `None` keeps the broker's default.
    pub msg_timeout: Option<Duration>,
    /// A message handled for longer than this is TOUCHed at least this often.
    /// `None`: half the negotiated `msg_timeout`.
    pub touch_every: Option<Duration>,
    pub backoff: Backoff,
    /// Largest frame accepted from the broker (the broker's max message size plus headers).
    pub max_frame_size: u32,
    pub connect_timeout: Duration,
    /// A broker that stops reading for this long is given up on.
    pub write_timeout: Duration,
    /// How long [`Consumer::shutdown`] waits for in-flight handlers.
    pub shutdown_timeout: Duration,
    pub latency_window: LatencyWindow,
    pub latency_signal: LatencySignal,
    pub degrade: DegradeConfig,
    /// How often the controller reads the latency window.
    pub evaluate_every: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            address: Some("127.0.0.1:4150".to_owned()),
            lookupd_http_addresses: Vec::new(),
            lookupd_poll_interval: Duration::from_secs(15),
            client_id: "triage-worker".to_owned(),
            hostname: "localhost".to_owned(),
            user_agent: concat!("triage-worker/", env!("CARGO_PKG_VERSION")).to_owned(),
            concurrency: 16,
            max_in_flight: None,
            reconnect: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            compression: Compression::None,
            heartbeat_interval: None,
            msg_timeout: None,
            touch_every: None,
            backoff: Backoff::default(),
            max_frame_size: 4 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            latency_window: LatencyWindow::default(),
            latency_signal: LatencySignal::default(),
            degrade: DegradeConfig::default(),
            evaluate_every: Duration::from_millis(100),
        }
    }
}

impl ConsumerConfig {
    /// The IDENTIFY fields that say who this is, for every connection it opens.
    pub(crate) fn identity(&self) -> IdentifyRequest {
        IdentifyRequest {
            client_id: self.client_id.clone(),
            hostname: self.hostname.clone(),
            user_agent: self.user_agent.clone(),
            ..IdentifyRequest::default()
        }
    }

    /// # Errors
    /// [`ConfigError`] naming the first key whose value cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.address.is_none() && self.lookupd_http_addresses.is_empty() {
            return Err(ConfigError::new(
                "address",
                "a broker address or lookupd_http_addresses is required",
            ));
        }
        if let Some(bad) = self
            .lookupd_http_addresses
            .iter()
            .find(|a| lookupd_authority(a).is_none())
        {
            return Err(ConfigError::new(
                "lookupd_http_addresses",
                format!("must be host:port or http://host:port, got {bad:?}"),
            ));
        }
        if self.lookupd_poll_interval.is_zero() {
            return Err(ConfigError::new(
                "lookupd_poll_interval",
                "must be above zero",
            ));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::new("concurrency", "must be at least 1"));
        }
        if self.max_in_flight == Some(0) {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        if self.evaluate_every.is_zero() {
            return Err(ConfigError::new("evaluate_every", "must be above zero"));
        }
        if self.touch_every.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new("touch_every", "must be above zero"));
        }
        if let Compression::Deflate(level) = self.compression {
            if !(1..=9).contains(&level) {
                return Err(ConfigError::new(
                    "deflate_level",
                    format!("must be 1 to 9, got {level}"),
                ));
            }
        }
        if self.max_frame_size < 64 {
            return Err(ConfigError::new(
                "max_frame_size",
                "must be at least 64 bytes",
            ));
        }
        self.degrade.validate()
    }
}

/// What every connection should be doing now: the level to announce and
/// each subscription's RDY, indexed by its slot in [`Shared::subscriptions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Plan {
    level: Level,
    rdy: Arc<Vec<u64>>,
    /// Each subscription's RDY divided among its open connections.
    per_connection: Arc<Vec<u64>>,
}

/// One connection's part of a subscription's `rdy` shared by `connections`:
/// at least 1 each unless the subscription is stopped (as go-nsq does).
fn per_connection(rdy: u64, connections: usize) -> u64 {
    if rdy == 0 {
        return 0;
    }
    (rdy / u64::try_from(connections.max(1)).unwrap_or(u64::MAX)).max(1)
}

/// State shared by the consumer handle, its connection tasks and its controller task.
#[derive(Debug)]
struct Shared {
    config: ConsumerConfig,
    /// std Mutex: a push or one p99 over at most `max_samples` values; never held across `.await`.
    monitor: Mutex<LatencyMonitor>,
    /// std Mutex: written by the controller task only, read for [`Consumer::transitions`].
    controller: Mutex<DegradeController>,
    /// The current level, for [`Consumer::watch_level`].
    level: watch::Sender<Level>,
    /// Every subscription ever made, in order; a slot's index never changes.
    /// std Mutex: held only to push one or to compute a [`Plan`] from all.
    subscriptions: Mutex<Vec<Subscription>>,
    /// Open connections of each subscription slot, which divide its RDY.
    /// std Mutex: locked after `subscriptions` when both are held.
    connections: Mutex<Vec<usize>>,
    /// Level and RDYs together, so a connection never announces one without the other.
    plan: watch::Sender<Plan>,
    /// Bounds handlers running at once across every subscription.
    concurrency: Arc<Semaphore>,
    /// Stop taking messages, finish those in flight, close.
    drain: CancellationToken,
    /// Stop at once (the broker requeues whatever was in flight).
    abort: CancellationToken,
    /// Connection, handler and controller tasks, so shutdown can wait for them.
    tracker: TaskTracker,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning needs a panic inside a few arithmetic or collection operations; the data stays valid.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Feeds the controller the current p99 and publishes a new level, if any.
    fn evaluate(&self, now: std::time::Instant) {
        let snapshot = lock(&self.monitor).snapshot(now);
        let p99 = snapshot.signal(self.config.latency_signal);
        let transition = lock(&self.controller).observe(now, p99);
        if let Some(transition) = transition {
            tracing::info!(
                from = transition.from.as_u8(),
                to = transition.to.as_u8(),
                p99_ms = p99.as_millis() as u64,
                "degrade level changed"
            );
            self.level.send_replace(transition.to);
            self.replan();
        }
    }

    /// Recomputes every subscription's RDY for the current level.
    fn replan(&self) {
        // Under the subscriptions lock, so two replans publish in the order they computed.
        let subscriptions = lock(&self.subscriptions);
        let level = *self.level.borrow();
        let wants: Vec<(Priority, u64)> = subscriptions
            .iter()
            .map(|s| (s.priority, s.max_in_flight))
            .collect();
        let rdy = allocate(&wants, self.config.max_in_flight, level);
        let connections = lock(&self.connections);
        let per_connection = rdy
            .iter()
            .enumerate()
            .map(|(slot, &rdy)| per_connection(rdy, connections.get(slot).copied().unwrap_or(0)))
            .collect();
        self.plan.send_replace(Plan {
            level,
            rdy: Arc::new(rdy),
            per_connection: Arc::new(per_connection),
        });
    }

    /// Counts a connection of `slot` opened (or closed) and re-divides its RDY.
    fn connection_opened(&self, slot: usize, opened: bool) {
        {
            let mut connections = lock(&self.connections);
            if connections.len() <= slot {
                connections.resize(slot + 1, 0);
            }
            connections[slot] = if opened {
                connections[slot] + 1
            } else {
                connections[slot].saturating_sub(1)
            };
        }
        self.replan();
    }

    /// Adds a subscription's slot and replans; returns the slot.
    fn register(&self, subscription: Subscription) -> usize {
        let slot = {
            let mut subscriptions = lock(&self.subscriptions);
            subscriptions.push(subscription);
            subscriptions.len() - 1
        };
        self.replan();
        slot
    }
}

/// A read-only view of a consumer's state for metrics; cheap to clone and
/// usable while the consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerStatus {
    shared: Arc<Shared>,
}

impl ConsumerStatus {
    pub fn level(&self) -> Level {
        *self.shared.level.borrow()
    }

    /// The latency window's p99s now.
    pub fn latency(&self) -> LatencySnapshot {
        lock(&self.shared.monitor).snapshot(std::time::Instant::now())
    }

    /// How many times the level went from `from` to `to`.
    pub fn transitions_between(&self, from: Level, to: Level) -> u64 {
        lock(&self.shared.controller).transitions_between(from, to)
    }

    /// Each subscription with the RDY it is planned to have now.
    pub fn rdy(&self) -> Vec<(Subscription, u64)> {
        let plan = self.shared.plan.borrow().clone();
        let subscriptions = lock(&self.shared.subscriptions).clone();
        subscriptions
            .into_iter()
            .enumerate()
            .map(|(slot, s)| (s, plan.rdy.get(slot).copied().unwrap_or(0)))
            .collect()
    }
}

/// A consumer of one or more topic/channel pairs with one handler.
///
/// Dropping it closes every connection at once; [`Consumer::shutdown`] closes gracefully.
#[derive(Debug)]
pub struct Consumer<H> {
    shared: Arc<Shared>,
    handler: Arc<H>,
}

impl<H: Handler> Consumer<H> {
    /// Starts the controller task; must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`ConsumerError::Config`] when `config` does not validate.
    pub fn new(config: ConsumerConfig, handler: H) -> Result<Self, ConsumerError> {
        config.validate()?;
        let shared = Arc::new(Shared {
            monitor: Mutex::new(LatencyMonitor::new(config.latency_window)),
            controller: Mutex::new(DegradeController::new(config.degrade)),
            level: watch::Sender::new(Level::Normal),
            subscriptions: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
            plan: watch::Sender::new(Plan::default()),
            concurrency: Arc::new(Semaphore::new(config.concurrency)),
            drain: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            config,
        });
        shared.tracker.spawn(run_controller(shared.clone()));
        Ok(Consumer {
            shared,
            handler: Arc::new(handler),
        })
    }

    /// [`Consumer::subscribe_with`] a normal-priority subscription.
    ///
    /// # Errors
    /// As [`Consumer::subscribe_with`].
    pub async fn subscribe(
        &self,
        topic: &str,
        channel: &str,
        max_in_flight: u64,
    ) -> Result<(), ConsumerError> {
        self.subscribe_with(Subscription::new(topic, channel, max_in_flight))
            .await
    }

    /// Connects to `address` (if set), subscribes and starts consuming with
    /// the RDY the budget gives `subscription` at the current level; a
    /// connection lost later is reconnected with backoff until shutdown. With
    /// `lookupd_http_addresses`, also starts the subscription's discovery task,
    /// which connects to the brokers lookupd lists, now and at every poll.
    ///
    /// # Errors
    /// When the first connection to `address` or its handshake fails, or the
    /// broker refuses IDENTIFY or SUB (brokers found through lookupd only log).
    pub async fn subscribe_with(&self, subscription: Subscription) -> Result<(), ConsumerError> {
        if self.shared.drain.is_cancelled() {
            return Err(ConsumerError::ShuttingDown);
        }
        if subscription.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1").into());
        }
        let direct = match &self.shared.config.address {
            Some(address) => Some((
                address.clone(),
                Connection::open(
                    self.shared.clone(),
                    self.handler.clone(),
                    &subscription,
                    address,
                )
                .await?,
            )),
            None => None,
        };
        let slot = self.shared.register(subscription.clone());
        let subscription = Arc::new(subscription);
        // Every broker this subscription is connected (or connecting) to, so
        // one listed by several lookupds, or also given directly, gets one connection.
        let connected = Arc::new(Mutex::new(HashSet::new()));
        if let Some((address, connection)) = direct {
            lock(&connected).insert(address.clone());
            self.shared.tracker.spawn(keep_connected(
                self.shared.clone(),
                self.handler.clone(),
                subscription.clone(),
                slot,
                address,
                connection,
            ));
        }
        if !self.shared.config.lookupd_http_addresses.is_empty() {
            self.shared.tracker.spawn(discover(
                self.shared.clone(),
                self.handler.clone(),
                subscription,
                slot,
                connected,
            ));
        }
        Ok(())
    }

    pub fn level(&self) -> Level {
        *self.shared.level.borrow()
    }

    /// Follows level changes.
    pub fn watch_level(&self) -> watch::Receiver<Level> {
        self.shared.level.subscribe()
    }

    /// The latency window's p99s now.
    pub fn latency(&self) -> LatencySnapshot {
        self.status().latency()
    }

    /// Level changes so far.
    pub fn transitions(&self) -> u64 {
        lock(&self.shared.controller).transitions()
    }

    /// A view of this consumer's state that outlives borrows of it (for metrics).
    pub fn status(&self) -> ConsumerStatus {
        ConsumerStatus {
            shared: self.shared.clone(),
        }
    }

    /// Graceful shutdown: RDY 0 on every connection, let in-flight handlers
    /// finish and FIN or REQ, then CLS and close.
    ///
    /// # Errors
    /// [`ConsumerError::TimedOut`] when handlers are still running after
    /// `shutdown_timeout`; the connections are then closed at once and the
    /// broker requeues what they had in flight.
    pub async fn shutdown(self) -> Result<(), ConsumerError> {
        self.shared.drain.cancel();
        self.shared.tracker.close();
        let waited = tokio::time::timeout(
            self.shared.config.shutdown_timeout,
            self.shared.tracker.wait(),
        )
        .await;
        if waited.is_err() {
            self.shared.abort.cancel();
            return Err(ConsumerError::TimedOut("in-flight messages to finish"));
        }
        Ok(())
    }
}

impl<H> Drop for Consumer<H> {
    fn drop(&mut self) {
        // After a completed shutdown there is nothing left to stop.
        self.shared.drain.cancel();
        self.shared.abort.cancel();
    }
}

async fn run_controller(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.evaluate_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.drain.cancelled() => return,
            _ = tick.tick() => shared.evaluate(std::time::Instant::now()),
        }
    }
}

/// Runs `connection` as one of `slot`'s, counted while it is open so the
/// subscription's RDY is divided among its connections.
async fn run_counted<H: Handler>(
    shared: &Shared,
    connection: Connection<H>,
    slot: usize,
) -> Result<(), ConsumerError> {
    shared.connection_opened(slot, true);
    let result = connection.run(slot).await;
    shared.connection_opened(slot, false);
    result
}

/// The task of a broker given by address: consumes on `connection`, and
/// when it is lost reconnects with backoff until shutdown.
async fn keep_connected<H: Handler>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    subscription: Arc<Subscription>,
    slot: usize,
    address: String,
    connection: Connection<H>,
) {
    let (topic, channel) = (subscription.topic.as_str(), subscription.channel.as_str());
    let mut connection = Some(connection);
    let mut failures = 0u16;
    loop {
        if let Some(open) = connection.take() {
            match run_counted(&shared, open, slot).await {
                Ok(()) => {
                    tracing::debug!(topic, channel, %address, "connection closed");
                    return;
                }
                Err(e) => tracing::error!(topic, channel, %address, error = %e, "connection lost"),
            }
        }
        failures = failures.saturating_add(1);
        let delay = shared.config.reconnect.delay(failures);
        tokio::select! {
            _ = shared.drain.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let reopened = tokio::select! {
            _ = shared.drain.cancelled() => return,
            reopened = Connection::open(shared.clone(), handler.clone(), &subscription, &address) => reopened,
        };
        match reopened {
            Ok(open) => {
                tracing::info!(topic, channel, %address, "reconnected");
                failures = 0;
                connection = Some(open);
            }
            Err(e) => tracing::warn!(topic, channel, %address, error = %e, "reconnect failed"),
        }
    }
}

/// A subscription's discovery task: asks every lookupd for the brokers that
/// have its topic, now and every `lookupd_poll_interval` until shutdown, and
/// connects to each one not in `connected`. As in go-nsq, a broker lookupd
/// stops listing keeps its connection until that closes, and a lost
/// connection is not retried by itself: the next poll that lists the broker
/// connects again.
async fn discover<H: Handler>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    subscription: Arc<Subscription>,
    slot: usize,
    connected: Arc<Mutex<HashSet<String>>>,
) {
    let client = lookup_client();
    let mut poll = tokio::time::interval(shared.config.lookupd_poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let topic = subscription.topic.as_str();
    loop {
        tokio::select! {
            _ = shared.drain.cancelled() => return,
            _ = poll.tick() => {}
        }
        let mut listed = BTreeSet::new();
        for lookupd in &shared.config.lookupd_http_addresses {
            let answer = tokio::select! {
                _ = shared.drain.cancelled() => return,
                answer = lookup(&client, lookupd, topic, shared.config.connect_timeout) => answer,
            };
            match answer {
                Ok(addresses) => listed.extend(addresses),
                Err(e) => tracing::warn!(topic, error = %e, "lookup failed"),
            }
        }
        for address in listed {
            if shared.drain.is_cancelled() {
                return;
            }
            if !lock(&connected).insert(address.clone()) {
                continue;
            }
            shared.tracker.spawn(connect_discovered(
                shared.clone(),
                handler.clone(),
                subscription.clone(),
                slot,
                address,
                connected.clone(),
            ));
        }
    }
}

/// One discovered broker's connection task: connects, consumes until the
/// connection ends, then leaves `connected` so a later poll may connect again.
async fn connect_discovered<H: Handler>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    subscription: Arc<Subscription>,
    slot: usize,
    address: String,
    connected: Arc<Mutex<HashSet<String>>>,
) {
    let (topic, channel) = (subscription.topic.as_str(), subscription.channel.as_str());
    let opened = tokio::select! {
        _ = shared.drain.cancelled() => None,
        opened = Connection::open(shared.clone(), handler, &subscription, &address) => Some(opened),
    };
    match opened {
        Some(Ok(connection)) => {
            tracing::info!(topic, channel, %address, "connected to a broker found through lookupd");
            match run_counted(&shared, connection, slot).await {
                Ok(()) => tracing::debug!(topic, channel, %address, "connection closed"),
                Err(e) => {
                    tracing::warn!(topic, channel, %address, error = %e, "connection lost; the next lookup may reconnect")
                }
            }
        }
        Some(Err(e)) => {
            tracing::warn!(topic, channel, %address, error = %e, "cannot connect to a broker found through lookupd")
        }
        None => {}
    }
    lock(&connected).remove(&address);
}

/// A handler's outcome, sent back to its connection task.
#[derive(Debug)]
struct Done {
    id: MessageId,
    attempts: u16,
    error: Option<String>,
    /// `None` when the handler never finished (it panicked): no latency sample.
    handling: Option<Duration>,
    age: Duration,
}

/// Reports a handler's outcome, or its failure if the task unwinds first, so
/// a panicking handler leaves no message in flight forever.
struct DoneGuard {
    tx: mpsc::Sender<Done>,
    done: Option<Done>,
}

impl DoneGuard {
    async fn finish(mut self, result: Result<(), HandlerError>, handling: Duration) {
        if let Some(mut done) = self.done.take() {
            done.error = result.err().map(|e| e.to_string());
            done.handling = Some(handling);
            // Fails only if the connection is gone; the broker requeues the message then.
            let _ = self.tx.send(done).await;
        }
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            // The channel holds one slot per message in flight, so this cannot be full.
            let _ = self.tx.try_send(done);
        }
    }
}

/// One subscription's connection task.
#[derive(Debug)]
struct Connection<H> {
    shared: Arc<Shared>,
    handler: Arc<H>,
    topic: Arc<str>,
    channel: Arc<str>,
    wire: Wire,
    /// Messages handed to handlers and not yet FINed or REQed, with when each
    /// was last touched. Bounded by `max_in_flight`: the broker never has more out.
    in_flight: HashMap<MessageId, Instant>,
    /// One slot per message that can be in flight, so a handler never waits
    /// to report and [`DoneGuard`]'s `try_send` never finds it full.
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    plan: watch::Receiver<Plan>,
    /// What this connection last told the broker.
    announced: Level,
    rdy: u64,
    touch_every: Duration,
}

impl<H: Handler> Connection<H> {
    /// Connects, IDENTIFYs and SUBs; RDY stays 0 until [`Connection::run`].
    async fn open(
        shared: Arc<Shared>,
        handler: Arc<H>,
        subscription: &Subscription,
        address: &str,
    ) -> Result<Self, ConsumerError> {
        let config = &shared.config;
        let deadline = Instant::now() + config.connect_timeout;
        let mut wire = Wire::connect(config, address, deadline).await?;
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis() as i64);
        let identify = Command::Identify(IdentifyRequest {
            feature_negotiation: true,
            heartbeat_interval: ms(config.heartbeat_interval),
            msg_timeout: ms(config.msg_timeout),
            snappy: config.compression == Compression::Snappy,
            deflate: matches!(config.compression, Compression::Deflate(_)),
            deflate_level: match config.compression {
                Compression::Deflate(level) => i64::from(level),
                _ => 0,
            },
            ..config.identity()
        });
        let reply = wire.request(&identify, deadline).await?;
        let msg_timeout = match serde_json::from_slice::<IdentifyResponse>(&reply) {
            Ok(negotiated) => {
                let compression = if negotiated.snappy {
                    Compression::Snappy
                } else if negotiated.deflate {
                    Compression::Deflate(u8::try_from(negotiated.deflate_level).unwrap_or(6))
                } else {
                    Compression::None
                };
                if compression != Compression::None {
                    // The broker switches right after its reply and confirms with a compressed OK.
                    wire.enable_compression(compression)?;
                    let ok = wire.response("IDENTIFY", deadline).await?;
                    if ok != triage_protocol::OK {
                        return Err(ConsumerError::Unexpected {
                            command: "IDENTIFY",
                            reply: String::from_utf8_lossy(&ok).into_owned(),
                        });
                    }
                }
                Duration::from_millis(negotiated.msg_timeout)
            }
            // A broker without feature negotiation answers OK and keeps nsqd's default.
            Err(_) if reply == triage_protocol::OK => Duration::from_secs(60),
            Err(e) => {
                return Err(ConsumerError::Unexpected {
                    command: "IDENTIFY",
                    reply: e.to_string(),
                })
            }
        };
        let (topic, channel) = (&subscription.topic, &subscription.channel);
        let sub = Command::Sub {
            topic: topic.clone(),
            channel: channel.clone(),
        };
        wire.request_ok(&sub, deadline).await?;
        let touch_every = config
            .touch_every
            .unwrap_or(msg_timeout / 2)
            .max(Duration::from_millis(1));
        let slots = usize::try_from(subscription.max_in_flight)
            .unwrap_or(usize::MAX)
            .clamp(1, 1 << 16);
        let (done_tx, done_rx) = mpsc::channel(slots);
        tracing::info!(topic, channel, max_in_flight = subscription.max_in_flight, priority = %subscription.priority, "subscribed");
        Ok(Connection {
            handler,
            topic: topic.as_str().into(),
            channel: channel.as_str().into(),
            wire,
            in_flight: HashMap::new(),
            done_tx,
            done_rx,
            plan: shared.plan.subscribe(),
            announced: Level::Normal,
            rdy: 0,
            touch_every,
            shared,
        })
    }

    /// Queues BACKPRESSURE and RDY where the plan differs from what the broker was told.
    fn follow_plan(&mut self, slot: usize) {
        let plan = self.plan.borrow_and_update().clone();
        if plan.level != self.announced {
            self.announced = plan.level;
            self.wire.queue(&Command::Backpressure(plan.level.as_u8()));
        }
        let rdy = plan.per_connection.get(slot).copied().unwrap_or(0);
        if rdy != self.rdy {
            self.rdy = rdy;
            self.wire.queue(&Command::Rdy(rdy));
        }
    }

    /// Consumes as subscription `slot` of the plan until drained or aborted.
    async fn run(mut self, slot: usize) -> Result<(), ConsumerError> {
        self.follow_plan(slot);
        self.wire.flush().await?;
        // Ticking at half the interval keeps the gap between TOUCHes within `touch_every`.
        let mut touch = tokio::time::interval(self.touch_every / 2);
        touch.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        let mut draining = false;
        loop {
            if draining && self.in_flight.is_empty() {
                break;
            }
            tokio::select! {
                _ = shared.abort.cancelled() => return Ok(()),
                _ = shared.drain.cancelled(), if !draining => {
                    draining = true;
                    self.wire.queue(&Command::Rdy(0));
                }
                read = self.wire.read_more() => {
                    read?;
                    self.on_frames(draining)?;
                }
                Some(done) = self.done_rx.recv() => self.on_done(done),
                // Cannot fail: the sender lives in `shared`, which this task holds.
                Ok(()) = self.plan.changed(), if !draining => self.follow_plan(slot),
                _ = touch.tick() => self.touch_overdue(),
            }
            self.wire.flush().await?;
        }
        self.close().await
    }

    /// CLS, then wait briefly for `CLOSE_WAIT` so the broker knows we left on purpose.
    async fn close(mut self) -> Result<(), ConsumerError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        match self.wire.request(&Command::Cls, deadline).await {
            Ok(reply) if reply == triage_protocol::CLOSE_WAIT => {}
            Ok(reply) => tracing::debug!(reply = ?reply, "unexpected reply to CLS"),
            Err(e) => tracing::debug!(error = %e, "no CLOSE_WAIT"),
        }
        let _ = self.wire.writer.shutdown().await;
        Ok(())
    }

    fn on_frames(&mut self, draining: bool) -> Result<(), ConsumerError> {
        while let Some(frame) = self.wire.next_frame()? {
            match frame {
                Frame::Response(data) if data == triage_protocol::HEARTBEAT => {
                    self.wire.queue(&Command::Nop);
                }
                // OK to BACKPRESSURE; nothing else we send mid-stream has a reply.
                Frame::Response(_) => {}
                Frame::Error(data) => {
                    let error = refused("a command", &data);
                    match parse_error_text(&data) {
                        Some((code, _)) if !code.is_fatal() => {
                            tracing::warn!(error = %error, "broker refused a command")
                        }
                        _ => return Err(error),
                    }
                }
                // Sent before our RDY 0 arrived: give it straight back.
                Frame::Message(msg) if draining => self.wire.queue(&Command::Req {
                    id: msg.id,
                    timeout_ms: 0,
                }),
                Frame::Message(msg) => self.start(msg),
            }
        }
        Ok(())
    }

    fn start(&mut self, message: Message) {
        let age = Duration::from_nanos(
            u64::try_from(unix_nanos().saturating_sub(message.timestamp_ns)).unwrap_or(0),
        );
        self.in_flight.insert(message.id, Instant::now());
        let guard = DoneGuard {
            tx: self.done_tx.clone(),
            done: Some(Done {
                id: message.id,
                attempts: message.attempts,
                error: Some("handler panicked".to_owned()),
                handling: None,
                age,
            }),
        };
        let mut delivery = Delivery {
            topic: self.topic.clone(),
            channel: self.channel.clone(),
            message,
            level: Level::Normal,
        };
        let handler = self.handler.clone();
        let shared = self.shared.clone();
        self.shared.tracker.spawn(async move {
            // The semaphore is never closed, so this always gets a permit.
            let _permit = shared.concurrency.clone().acquire_owned().await;
            // Read now, not on arrival: a message that waited for a permit
            // while the worker degraded must see it.
            delivery.level = *shared.level.borrow();
            let started = Instant::now();
            let result = handler.handle(delivery).await;
            guard.finish(result, started.elapsed()).await;
        });
    }

    fn on_done(&mut self, done: Done) {
        if self.in_flight.remove(&done.id).is_none() {
            return;
        }
        match &done.error {
            None => self.wire.queue(&Command::Fin(done.id)),
            Some(error) => {
                let delay = self.shared.config.backoff.delay(done.attempts);
                tracing::warn!(
                    topic = %self.topic,
                    attempts = done.attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = %error,
                    "handler failed; requeueing"
                );
                self.wire.queue(&Command::Req {
                    id: done.id,
                    timeout_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                });
            }
        }
        if let Some(handling) = done.handling {
            lock(&self.shared.monitor).record(Sample {
                at: std::time::Instant::now(),
                handling,
                age: done.age,
            });
        }
    }

    fn touch_overdue(&mut self) {
        let now = Instant::now();
        let due = self.touch_every / 2;
        for (id, last) in &mut self.in_flight {
            if now.duration_since(*last) >= due {
                *last = now;
                Command::Touch(*id).encode(&mut self.wire.output);
            }
        }
    }
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_max() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (0..=6)
            .map(|a| backoff.delay(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u16::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_subscriptions_rdy_is_divided_among_its_connections_at_least_1_each() {
        assert_eq!(per_connection(10, 0), 10);
        assert_eq!(per_connection(10, 1), 10);
        assert_eq!(per_connection(10, 3), 3);
        assert_eq!(per_connection(2, 5), 1);
        // A stopped (batch, degraded) subscription stays stopped on every connection.
        assert_eq!(per_connection(0, 3), 0);
    }

    #[test]
    fn config_validation_names_the_key() {
        ConsumerConfig::default().validate().unwrap();
        let bad = ConsumerConfig {
            concurrency: 0,
            ..ConsumerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "concurrency");
        let bad = ConsumerConfig {
            touch_every: Some(Duration::ZERO),
            ..ConsumerConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "touch_every");
    }
}

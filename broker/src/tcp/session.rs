//! One client connection's life: handshake, the command loop, message
//! delivery within RDY, heartbeats and shutdown. One task per connection owns
//! all of this state, so none of it needs a lock.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use triage_protocol::{
    decode_command, frame, Command, Limits, Message, MessageId, ProtocolError, MAGIC_V2,
};

use super::commands;
use super::connection::Connection;
use crate::broker::Broker;
use crate::channel::Channel;
use crate::client::ClientInfo;
use crate::live_tier::LiveTier;

/// nsqd's `client_v2.go` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Init,
    Subscribed,
    Closing,
}

/// Per-client settings, negotiated by IDENTIFY (nsqd defaults until then).
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Option<Duration>,
    /// Bytes of message frames gathered before a mid-batch flush; 0 = flush each message.
    pub output_buffer_size: usize,
    /// Reported to the client; frames never wait this long here, since the
    /// session flushes as soon as it has nothing more to send right away.
    pub output_buffer_timeout: Option<Duration>,
    pub msg_timeout: Duration,
    /// 0 = every message; 1..=99 = that percentage, the rest dropped for this client (as nsqd).
    pub sample_rate: u32,
}

pub const DEFAULT_OUTPUT_BUFFER_SIZE: usize = 16 * 1024;
pub const DEFAULT_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_millis(250);

/// Messages taken from the channel per lock acquisition.
const TAKE_BATCH: usize = 64;

/// Credit gathered before sending to a consumer that still holds most of
/// its RDY (a quarter of its RDY when that is smaller), and the longest it
/// waits for it. See [`Session::holds_for_credit`].
const CREDIT_BATCH: u64 = 256;
const CREDIT_HOLD: Duration = Duration::from_millis(1);

/// Why the loop ended; only for the log.
#[derive(Debug)]
enum Exit {
    Eof,
    Shutdown,
    Fatal(ProtocolError),
    Io(std::io::Error),
    HeartbeatsMissed,
    HandshakeTimeout,
    ChannelGone,
}

impl Exit {
    /// The `triage_client_disconnects_total` reason.
    fn reason(&self) -> &'static str {
        match self {
            Exit::Eof => "closed",
            Exit::Shutdown => "shutdown",
            Exit::Fatal(_) => "protocol_error",
            Exit::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => "write_timeout",
            Exit::Io(_) => "io_error",
            Exit::HeartbeatsMissed => "heartbeats_missed",
            Exit::HandshakeTimeout => "handshake_timeout",
            Exit::ChannelGone => "channel_deleted",
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Eof => f.write_str("end of stream"),
            Exit::Shutdown => f.write_str("broker shutting down"),
            Exit::Fatal(err) => write!(f, "{err}"),
            Exit::Io(err) => write!(f, "I/O error: {err}"),
            Exit::HeartbeatsMissed => f.write_str("two heartbeats unanswered"),
            Exit::HandshakeTimeout => f.write_str("no command within the handshake timeout"),
            Exit::ChannelGone => f.write_str("its channel was deleted"),
        }
    }
}

#[derive(Debug)]
pub struct Session {
    pub broker: Arc<Broker>,
    pub info: Arc<ClientInfo>,
    pub conn: Connection,
    pub state: ClientState,
    pub settings: Settings,
    pub channel: Option<Arc<Channel>>,
    /// The tier of `channel`'s topic, kept so delivery can apply the
    /// BACKPRESSURE level without a registry lookup per pass.
    pub channel_tier: Option<Arc<LiveTier>>,
    /// Set by `BACKPRESSURE` (0 normal, 1 degraded, 2 overloaded).
    pub backpressure: u8,
    pub rdy: u64,
    pub limits: Limits,
    /// What the client's AUTH secret allows, and the secret (asked again
    /// when the grant expires).
    pub auth: Option<(String, crate::auth::Grant)>,
    /// Set when IDENTIFY changed the heartbeat interval, so the ticker is rebuilt.
    pub heartbeat_changed: bool,
    pub identified: bool,
    commands_seen: u64,
    last_read: Instant,
    /// Set while delivery waits for a batch of credit, to when it stops waiting.
    hold_until: Option<Instant>,
    taken: Vec<Message>,
    /// FINs read but not yet applied (see `commands::fin`), and the
    /// buffer their results go to, both kept to reuse their memory.
    pub fin_batch: Vec<MessageId>,
    pub fin_results: Vec<Result<i64, crate::channel::InFlightError>>,
}

impl Session {
    pub fn new(broker: Arc<Broker>, stream: TcpStream, remote_addr: SocketAddr) -> Session {
        let config = &broker.config;
        let limits = broker.protocol_limits();
        // Decompressed input never needs more than one whole command.
        let max_input = config.max_body_size as usize + config.max_line_len + 64;
        let settings = Settings {
            heartbeat_interval: Some(config.client_timeout / 2),
            output_buffer_size: DEFAULT_OUTPUT_BUFFER_SIZE,
            output_buffer_timeout: Some(DEFAULT_OUTPUT_BUFFER_TIMEOUT),
            msg_timeout: config.msg_timeout,
            sample_rate: 0,
        };
        let info = Arc::new(ClientInfo::new(broker.next_client_id(), remote_addr));
        Session {
            conn: Connection::new(stream, max_input),
            broker,
            info,
            state: ClientState::Init,
            settings,
            channel: None,
            channel_tier: None,
            backpressure: 0,
            rdy: 0,
            auth: None,
            limits,
            heartbeat_changed: false,
            identified: false,
            commands_seen: 0,
            last_read: Instant::now(),
            hold_until: None,
            taken: Vec::new(),
            fin_batch: Vec::new(),
            fin_results: Vec::new(),
        }
    }

    /// Runs the connection to its end and cleans up after it.
    pub async fn run(mut self) {
        let exit = match self.handshake().await {
            Ok(()) => self.serve().await,
            Err(exit) => exit,
        };
        match &exit {
            Exit::Eof | Exit::Shutdown => {
                tracing::debug!(client = self.info.id, addr = %self.info.remote_addr, reason = %exit, "client closed")
            }
            _ => {
                tracing::info!(client = self.info.id, addr = %self.info.remote_addr, reason = %exit, "client closed")
            }
        }
        self.broker.metrics.disconnected(exit.reason());
        if let Exit::Fatal(err) = &exit {
            frame::encode_error(err, &mut self.conn.output);
        }
        let _ = self.conn.flush(Duration::from_secs(1)).await;
        self.conn.shutdown().await;
        if self.backpressure > 0 {
            // Listeners must not believe a worker that is gone is still degraded.
            commands::publish_backpressure_event(
                &self.broker,
                &self.info,
                self.channel.as_deref(),
                0,
            )
            .await;
        }
        if let Some(channel) = self.channel.take() {
            let remaining = channel.remove_consumer(self.info.id);
            self.broker.consumer_left(&channel, remaining);
        }
    }

    /// The magic must arrive within the handshake timeout.
    async fn handshake(&mut self) -> Result<(), Exit> {
        let deadline = Instant::now() + self.broker.config.handshake_timeout;
        while self.conn.input.len() < MAGIC_V2.len() {
            tokio::select! {
                _ = self.broker.shutdown.cancelled() => return Err(Exit::Shutdown),
                _ = tokio::time::sleep_until(deadline) => return Err(Exit::HandshakeTimeout),
                read = self.conn.read() => match read {
                    Ok(true) => {}
                    Ok(false) => return Err(Exit::Eof),
                    Err(e) => return Err(Exit::Io(e)),
                },
            }
        }
        let magic = self.conn.input.split_to(MAGIC_V2.len());
        if magic[..] != MAGIC_V2 {
            // nsqd sends the bare code, no description.
            let text = b"E_BAD_PROTOCOL";
            self.conn.output.put_u32(4 + text.len() as u32);
            self.conn.output.put_u32(frame::FrameType::Error as u32);
            self.conn.output.put_slice(text);
            return Err(Exit::Eof);
        }
        Ok(())
    }

    fn heartbeat_ticker(&self) -> Option<tokio::time::Interval> {
        self.settings.heartbeat_interval.map(|every| {
            let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker
        })
    }

    fn write_timeout(&self) -> Duration {
        self.settings
            .heartbeat_interval
            .unwrap_or(self.broker.config.client_timeout)
    }

    async fn serve(&mut self) -> Exit {
        let mut heartbeat = self.heartbeat_ticker();
        // A connection that never gets a command in cannot hold a slot forever.
        let first_command_deadline = Instant::now() + self.broker.config.handshake_timeout;
        // Commands may have arrived together with the magic.
        if let Err(exit) = self.process_input().await {
            return exit;
        }
        loop {
            if self.heartbeat_changed {
                self.heartbeat_changed = false;
                heartbeat = self.heartbeat_ticker();
            }
            let channel = self.channel.clone();
            if channel.as_ref().is_some_and(|c| c.is_deleted()) {
                return Exit::ChannelGone;
            }
            // Registered before taking, so a put between the take and the wait still wakes us.
            let available = channel.as_ref().map(|c| c.available());
            tokio::pin!(available);
            if let Some(available) = available.as_mut().as_pin_mut() {
                available.enable();
            }
            let delivery = match &channel {
                Some(channel) if self.state == ClientState::Subscribed && self.tier_flows() => {
                    self.deliver(channel)
                }
                // Held back by BACKPRESSURE: idle until a command (a lower
                // level) comes in; the loop then runs delivery again.
                _ => Delivery::Idle,
            };
            if delivery != Delivery::HoldForCredit {
                self.end_credit_hold();
            }
            if self.conn.has_output() {
                if let Err(e) = self.conn.flush(self.write_timeout()).await {
                    return Exit::Io(e);
                }
            }
            if delivery == Delivery::MoreNow {
                continue;
            }
            let awaiting_first_command = self.commands_seen == 0;
            tokio::select! {
                biased;
                _ = self.broker.shutdown.cancelled() => return Exit::Shutdown,
                read = self.conn.read() => {
                    match read {
                        Ok(true) => {}
                        Ok(false) => return Exit::Eof,
                        Err(e) => return Exit::Io(e),
                    }
                    self.last_read = Instant::now();
                    if let Err(exit) = self.process_input().await {
                        return exit;
                    }
                }
                _ = async {
                    match available.as_mut().as_pin_mut() {
                        Some(notified) => notified.await,
                        None => std::future::pending().await,
                    }
                }, if delivery == Delivery::WaitForMessages => {}
                _ = self.info.woken() => {}
                _ = async {
                    match self.hold_until {
                        Some(until) => tokio::time::sleep_until(until).await,
                        None => std::future::pending().await,
                    }
                }, if delivery == Delivery::HoldForCredit => {}
                _ = async {
                    match heartbeat.as_mut() {
                        Some(ticker) => { ticker.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let every = self.settings.heartbeat_interval.unwrap_or(Duration::MAX);
                    if self.last_read.elapsed() > every.saturating_mul(2) {
                        return Exit::HeartbeatsMissed;
                    }
                    frame::encode_response(triage_protocol::HEARTBEAT, &mut self.conn.output);
                }
                _ = tokio::time::sleep_until(first_command_deadline), if awaiting_first_command => {
                    return Exit::HandshakeTimeout;
                }
            }
        }
    }

    /// Decodes and executes every complete command in the input buffer.
    /// Consecutive FINs are gathered and finished together before the next
    /// other command, so every command still takes effect in order.
    async fn process_input(&mut self) -> Result<(), Exit> {
        let mut last_command_len = None;
        let result = loop {
            let before = self.conn.input.len();
            let command = match decode_command(&mut self.conn.input, &self.limits) {
                Ok(Some(command)) => command,
                Ok(None) => {
                    self.conn.expect_command(last_command_len);
                    break Ok(());
                }
                Err(err) => break Err(Exit::Fatal(err)),
            };
            self.commands_seen += 1;
            last_command_len = Some(before - self.conn.input.len());
            if let Command::Fin(id) = command {
                if commands::fin_batchable(self) {
                    self.fin_batch.push(id);
                    continue;
                }
            }
            commands::finish_batch(self);
            if let Err(err) = commands::execute(self, command).await {
                if err.is_fatal() {
                    break Err(Exit::Fatal(err));
                }
                commands::reply_error(self, &err);
            }
        };
        commands::finish_batch(self);
        result
    }

    /// Whether the BACKPRESSURE level lets this session's channel deliver. A
    /// channel whose tier is unknown (its topic is being deleted) is not held back.
    fn tier_flows(&self) -> bool {
        self.channel_tier
            .as_ref()
            .is_none_or(|tier| commands::tier_flows(self.backpressure, tier.get()))
    }

    /// Sends what the channel has, within RDY, into the output buffer.
    fn deliver(&mut self, channel: &Arc<Channel>) -> Delivery {
        if self.holds_for_credit() {
            return Delivery::HoldForCredit;
        }
        let id = self.info.id;
        loop {
            self.taken.clear();
            let wait = channel.take_for(
                id,
                self.rdy,
                self.settings.msg_timeout,
                TAKE_BATCH,
                &mut self.taken,
            );
            let took = self.taken.len();
            let mut sampled_out = 0;
            for msg in self.taken.drain(..) {
                if self.settings.sample_rate > 0
                    && rand::random_range(0..100) >= self.settings.sample_rate
                {
                    // Sampled out: dropped for this client, as nsqd does; its credit comes back.
                    let _ = channel.finish(id, &msg.id);
                    sampled_out += 1;
                    continue;
                }
                frame::encode_message(&msg, &mut self.conn.output);
            }
            let sent = (took - sampled_out) as u64;
            if sent > 0 {
                // Once per batch, not per message.
                self.info.message_count.fetch_add(sent, Ordering::Relaxed);
                channel
                    .counters
                    .delivered_count
                    .fetch_add(sent, Ordering::Relaxed);
            }
            if sampled_out > 0 {
                // The credit the dropped messages took is free again: take more now.
                continue;
            }
            if !wait {
                // No credit: a FIN, REQ or RDY from the socket, or a wake, changes that.
                return Delivery::Idle;
            }
            if took < TAKE_BATCH {
                return Delivery::WaitForMessages;
            }
            if self.conn.output.len() >= self.settings.output_buffer_size {
                // Buffer full: flush, then come straight back for more.
                return Delivery::MoreNow;
            }
        }
    }
}

impl Session {
    /// Whether to wait for more credit before taking messages. A consumer
    /// with most of its RDY in hand loses nothing if a few freed credits wait
    /// for more (it has a large backlog of its own), while sending as each
    /// FIN arrives costs a take and a socket write per few messages, and
    /// the consumer a wake-up per write. So with less than a batch of credit
    /// free, delivery waits for a batch or `CREDIT_HOLD`, whichever comes
    /// first, and never longer than the client's output buffer timeout.
    /// While it waits, the socket wakes the session only once a batch's
    /// worth of FINs has arrived (or at the deadline): under a consumer that
    /// flushes each FIN, that cut the broker's CPU per delivered message by ~40 %.
    fn holds_for_credit(&mut self) -> bool {
        let batch = (self.rdy / 4).min(CREDIT_BATCH);
        let in_flight = self.info.in_flight.load(Ordering::Relaxed);
        let free = self.rdy.saturating_sub(in_flight);
        let max_hold = match self.settings.output_buffer_timeout {
            Some(timeout) if self.settings.output_buffer_size > 0 => timeout.min(CREDIT_HOLD),
            _ => Duration::ZERO,
        };
        if free == 0 || free >= batch || max_hold.is_zero() {
            return false;
        }
        let now = Instant::now();
        match self.hold_until {
            None => {
                self.hold_until = Some(now + max_hold);
                // Meanwhile its FINs need not wake us one by one (a consumer
                // may flush each): only a batch's worth, or the deadline.
                let missing = usize::try_from(batch - free).unwrap_or(usize::MAX);
                self.conn
                    .wake_on_input(missing.saturating_mul(triage_protocol::PLAIN_FIN_LEN));
                true
            }
            Some(until) => now < until,
        }
    }

    /// Delivery is not waiting for credit (any more): forget the deadline,
    /// and let any byte of input wake the session again.
    fn end_credit_hold(&mut self) {
        self.hold_until = None;
        self.conn.wake_on_input(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Waiting for a batch of credit (see [`Session::holds_for_credit`]).
    HoldForCredit,
    /// Nothing to do until the client says something or is woken.
    Idle,
    /// Credit left but nothing queued: wait for the channel.
    WaitForMessages,
    /// The output buffer filled up mid-batch.
    MoreNow,
}

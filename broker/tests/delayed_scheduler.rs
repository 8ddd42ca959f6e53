//! The delayed tier's scheduler under tokio's paused clock: entries come out
//! in due order, never before their due time, and an entry written while the
//! scheduler sleeps toward a later one wakes it early.
//!
//! The broker runs in-process without its listeners: a store in a temporary
//! directory, the scheduler task, and a channel read directly. Time moves
//! only when the test advances it (or when every task is idle, which tokio
//! then skips to the next timer: that can only make a release later, never
//! earlier, and every assertion is of the kind "not before").

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use triage_broker::channel::Channel;
use triage_broker::client::ClientInfo;
use triage_broker::store::{Store, StoreOptions};
use triage_broker::Broker;
use triage_config::BrokerConfig;
use triage_protocol::Message;

struct Harness {
    broker: Arc<Broker>,
    /// Keeps the runtime from ever being idle, so tokio never skips its
    /// paused clock ahead on its own: time moves only by `advance_to`.
    busy: tokio::task::JoinHandle<()>,
    channel: Arc<Channel>,
    start: Instant,
    _data: tempfile::TempDir,
}

const CLIENT: u64 = 1;
/// Real time a "nothing yet" check waits, and a "this must come" check at most.
const QUIET: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(10);

async fn harness() -> Harness {
    let busy = tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path(), StoreOptions::default()).unwrap();
    let config = BrokerConfig {
        data_path: data.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let broker = Broker::new(config, Arc::new(store), CancellationToken::new()).unwrap();
    broker
        .tracker
        .spawn(triage_broker::delayed::run_scheduler(broker.clone()));
    let channel = broker.channel("timers", "escalate").await.unwrap();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    channel
        .add_consumer(Arc::new(ClientInfo::new(CLIENT, addr)), 0)
        .unwrap();
    Harness {
        broker,
        busy,
        channel,
        start: Instant::now(),
        _data: data,
    }
}

impl Harness {
    async fn dpub(&self, body: &str, delay: Duration) {
        self.broker
            .publish("timers", vec![Bytes::from(body.to_owned())], Some(delay))
            .await
            .unwrap();
    }

    fn take(&self) -> Vec<Message> {
        let mut out = Vec::new();
        self.channel
            .take_for(CLIENT, 100, Duration::from_secs(600), 100, &mut out);
        out
    }

    /// Lets the broker's tasks (and the store's writer thread) run without
    /// moving tokio's clock, until `want` messages are available or `within`
    /// of real (not tokio) time passes.
    async fn settle(&self, want: usize, within: Duration) -> Vec<Message> {
        let real_deadline = std::time::Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < want && std::time::Instant::now() < real_deadline {
            got.extend(self.take());
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap()
    }

    async fn advance_to(&self, ms: u64) {
        let now = self.elapsed_ms();
        assert!(now <= ms, "the clock is at {now} ms, past {ms} ms");
        tokio::time::advance(Duration::from_millis(ms - now)).await;
    }

    async fn finish(self) {
        self.busy.abort();
        self.broker.shutdown.cancel();
        self.broker.tracker.close();
        self.broker.tracker.wait().await;
        self.broker.store.close().await.unwrap();
    }
}

fn bodies(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn entries_come_out_in_due_order_and_never_early() {
    let h = harness().await;
    // Written out of due order; "one" is written while the scheduler sleeps
    // toward "two" and must wake it.
    h.dpub("three", Duration::from_secs(3)).await;
    h.dpub("two", Duration::from_secs(2)).await;
    assert!(h.settle(1, QUIET).await.is_empty(), "nothing is due yet");
    h.dpub("one", Duration::from_secs(1)).await;
    assert_eq!(h.broker.delayed.pending_for_topic("timers"), 3);

    for (due_ms, body) in [(1000, "one"), (2000, "two"), (3000, "three")] {
        h.advance_to(due_ms - 5).await;
        let early = h.settle(1, QUIET).await;
        assert!(
            early.is_empty(),
            "{:?} delivered at {} ms, before its due time {due_ms} ms",
            bodies(&early),
            h.elapsed_ms()
        );
        h.advance_to(due_ms).await;
        let got = h.settle(1, LONG).await;
        assert_eq!(bodies(&got), [body], "at {} ms", h.elapsed_ms());
    }
    assert_eq!(h.broker.delayed.pending_total("timers"), 0);
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_due_together_is_released_in_write_order() {
    let h = harness().await;
    for i in 0..50 {
        h.dpub(&format!("m{i:02}"), Duration::from_millis(500))
            .await;
    }
    assert_eq!(h.broker.delayed.pending_for_topic("timers"), 50);
    h.advance_to(499).await;
    assert!(h.settle(1, QUIET).await.is_empty());
    h.advance_to(500).await;
    let got = h.settle(50, LONG).await;
    let expected: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    assert_eq!(bodies(&got), expected);
    assert_eq!(h.broker.delayed.pending_for_topic("timers"), 0);
    h.finish().await;
}

//! The memory tier's queue: a broker [`Channel`] (no store behind it, as for
//! a memory topic) taking a put of 1000 messages, handing them to one
//! consumer with `take_for`, and finishing each — the path every memory-tier
//! message takes, under the channel's one lock.
//!
//! Besides the `VecDeque` the channel keeps in-flight entries (a map and an
//! ordered deadline set), so this measures that bookkeeping too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::sync::CancellationToken;
use triage_broker::channel::Channel;
use triage_broker::client::ClientInfo;
use triage_broker::live_tier::LiveTier;
use triage_config::Tier;
use triage_protocol::{Message, MessageId};

const MESSAGES: usize = 1000;
const CLIENT: u64 = 1;

fn messages(first_id: u64) -> Vec<Message> {
    let body = Bytes::from(vec![b'x'; 200]);
    (first_id..first_id + MESSAGES as u64)
        .map(|i| Message {
            timestamp_ns: 0,
            attempts: 0,
            id: MessageId::from_u64(i),
            body: body.clone(),
        })
        .collect()
}

fn put_take_finish(c: &mut Criterion) {
    let channel = Channel::new(
        "bench",
        "ch",
        MESSAGES as u64 * 2,
        0,
        Arc::new(LiveTier::new(Tier::Memory)),
        None,
        CancellationToken::new(),
    );
    let client = Arc::new(ClientInfo::new(
        CLIENT,
        "127.0.0.1:1".parse().expect("address"),
    ));
    channel.add_consumer(client, 0).expect("consumer added");
    let mut taken = Vec::with_capacity(MESSAGES);
    let mut next_id = 0u64;

    let mut group = c.benchmark_group("memory_queue");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("put_take_finish_1000", |b| {
        b.iter(|| {
            let batch = messages(next_id);
            next_id += MESSAGES as u64;
            channel.put_all(batch.into_iter().map(|msg| (msg, None)));
            taken.clear();
            channel.take_for(
                CLIENT,
                u64::MAX,
                Duration::from_secs(60),
                MESSAGES,
                &mut taken,
            );
            assert_eq!(taken.len(), MESSAGES);
            for msg in &taken {
                channel.finish(CLIENT, &msg.id).expect("in flight");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, put_take_finish);
criterion_main!(benches);

//! The persistent tier's write path: `Store::append` of a batch of 100
//! 200-byte messages, as one MPUB brings them, under the sync policies
//! `group` (fsync before the answer: the default) and `never`. One append at
//! a time, so under `group` each pays a whole fsync; concurrent publishers
//! share them, which the load tool measures instead.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use triage_broker::store::{Store, StoreOptions, StoredMessage, SyncPolicy};

const BATCH: usize = 100;

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let batch: Vec<StoredMessage> = (0..BATCH)
        .map(|i| StoredMessage {
            timestamp_ns: i as i64,
            attempts: 0,
            body: Bytes::from(vec![b'x'; 200]),
        })
        .collect();
    let mut group = c.benchmark_group("store_append");
    group.throughput(Throughput::Elements(BATCH as u64));
    // An fsync per iteration under `group`: fewer samples keep a brief run brief.
    group.sample_size(20);
    for (name, sync) in [
        ("group_100x200B", SyncPolicy::Group),
        ("never_100x200B", SyncPolicy::Never),
    ] {
        let dir = tempfile::tempdir().expect("temporary dir");
        let store = Store::open(
            dir.path(),
            StoreOptions {
                sync,
                ..StoreOptions::default()
            },
        )
        .expect("store opens");
        let mut next_seq = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(store.append("bench", next_seq, &batch))
                    .expect("append");
                next_seq += BATCH as u64;
            })
        });
        runtime.block_on(store.close()).expect("store closes");
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);

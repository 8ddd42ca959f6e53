//! The one write path: every change to the store is a [`Batch`] of typed
//! operations sent to one writer thread, which groups what is queued into one
//! RocksDB write and decides there, once, whether that write is fsynced.
//!
//! Why a dedicated thread and not a tokio task: a RocksDB write with
//! `sync = true` blocks for the length of an fsync (milliseconds on a real
//! disk). On a runtime worker that would stall every connection scheduled on
//! it; with `spawn_blocking` per group we would pay a thread hand-off per
//! group and still need one owner to keep groups in order. A thread that
//! owns the receiving end is the simplest owner: it blocks on the channel,
//! then on the disk, and nothing else waits for it but the requests it
//! answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::{cf, Engine};
use super::schema::{Cf, KeyCodec, Schema, ValueCodec};
use super::{io_error, StoreError, StoreOptions, SyncPolicy};
use crate::metrics::Pow2Histogram;

/// `triage_store_fsync_seconds`: microseconds, 1 µs to 2^23 µs (8.4 s).
pub(crate) type FsyncHistogram = Pow2Histogram<24>;
/// `triage_store_batch_messages`: 1 to 2^16 messages per write.
pub(crate) type BatchHistogram = Pow2Histogram<17>;

/// One operation on encoded bytes. Built only through [`Batch`]'s typed
/// methods, so the bytes always come from a schema's codec.
#[derive(Debug)]
enum Op {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// A merge operand for the family's merge operator (the `counts` sums).
    Merge {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Deletes `[from, to)`: one range tombstone, however many keys it covers.
    DeleteRange {
        cf: Cf,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// The operations of one request, applied atomically (and, when grouped with
/// others, atomically with them: a group is one RocksDB write batch).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    ops: Vec<Op>,
    /// How many log entries this batch appends, for the message counter.
    messages: u64,
    /// Encoded keys and values, to bound a group's size.
    bytes: usize,
}

impl Batch {
    pub(crate) fn with_capacity(ops: usize) -> Self {
        Batch {
            ops: Vec::with_capacity(ops),
            messages: 0,
            bytes: 0,
        }
    }

    pub(crate) fn put<S: Schema>(&mut self, key: &S::Key, value: &S::Value) {
        self.put_raw_key::<S>(key.encode_key(), value);
    }

    /// A put whose key the caller encoded with `S`'s key helpers (the log's
    /// prefix-once encoding for a run of messages).
    pub(crate) fn put_raw_key<S: Schema>(&mut self, key: Vec<u8>, value: &S::Value) {
        let value = value.encode_value();
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put {
            cf: S::CF,
            key,
            value,
        });
    }

    /// Adds `value` to the record at `key` through the family's merge operator.
    pub(crate) fn merge<S: Schema>(&mut self, key: &S::Key, value: &S::Value) {
        let key = key.encode_key();
        let value = value.encode_value();
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Merge {
            cf: S::CF,
            key,
            value,
        });
    }

    pub(crate) fn delete<S: Schema>(&mut self, key: &S::Key) {
        let key = key.encode_key();
        self.bytes += key.len();
        self.ops.push(Op::Delete { cf: S::CF, key });
    }

    /// Deletes every key of `S` in `[from, to)`.
    pub(crate) fn delete_range<S: Schema>(&mut self, from: &S::Key, to: &S::Key) {
        self.delete_range_raw(S::CF, from.encode_key(), to.encode_key());
    }

    /// Deletes `[from, to)` of `cf` where the bounds are prefixes built by the
    /// schema module (a topic's whole log, a channel's marks).
    pub(crate) fn delete_range_raw(&mut self, cf: Cf, from: Vec<u8>, to: Vec<u8>) {
        self.bytes += from.len() + to.len();
        self.ops.push(Op::DeleteRange { cf, from, to });
    }

    pub(crate) fn add_messages(&mut self, n: u64) {
        self.messages += n;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A batch on its way to the writer, with where to send the outcome.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub(crate) batch: Batch,
    /// Whether the caller may be answered only once this is on stable storage
    /// (publishes, metadata). FIN marks and trims are not: losing one means a
    /// redelivery or a later trim, never a lost message.
    pub(crate) durable: bool,
    pub(crate) reply: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Debug)]
pub(crate) enum Command {
    Write(WriteRequest),
    /// Stop taking requests, finish those queued, sync the WAL and exit.
    Close,
}

/// Counters the writer (and the interval ticker) bump; read by `Store::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_nanos_total: AtomicU64,
    pub(crate) sync_nanos_max: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) reopens: AtomicU64,
    /// Lock-free, so recording costs the writer no more than the counters.
    pub(crate) fsync_micros: FsyncHistogram,
    pub(crate) batch_messages: BatchHistogram,
    /// Set after a failed write or sync: RocksDB refuses every later write
    /// until the database is reopened (see `engine.rs`). Shared so the
    /// interval ticker can set it too.
    needs_reopen: AtomicBool,
    /// Set after an unsynced write, cleared by the interval ticker before it
    /// syncs, so an idle store does not fsync every tick.
    dirty: AtomicBool,
    /// Test hook: the next this-many RocksDB writes fail as a full disk would.
    #[cfg(test)]
    pub(crate) fail_writes: std::sync::atomic::AtomicU32,
}

impl Counters {
    fn record_sync(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        self.sync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        self.fsync_micros
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    fn record_failure(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        self.needs_reopen.store(true, Ordering::Release);
    }
}

// Here rather than in `mod.rs` with `Store::stats` only to keep this change
// out of a file being rewritten; it belongs next to `stats`.
impl super::Store {
    /// WAL fsync durations, in microseconds, for `/metrics`.
    pub(crate) fn fsync_histogram(&self) -> &FsyncHistogram {
        &self.counters.fsync_micros
    }

    /// Messages appended per store write, for `/metrics`.
    pub(crate) fn batch_histogram(&self) -> &BatchHistogram {
        &self.counters.batch_messages
    }
}

/// Fsyncs the WAL: everything written before it becomes durable.
fn sync_wal(engine: &Engine, counters: &Counters) -> Result<(), StoreError> {
    let db = engine.db()?;
    let started = Instant::now();
    match db.flush_wal(true) {
        Ok(()) => {
            counters.record_sync(started.elapsed());
            Ok(())
        }
        Err(e) => {
            counters.record_failure();
            Err(io_error(e))
        }
    }
}

/// At most one reopen attempt this often while the disk stays full, so a
/// stream of publishes fails fast instead of reopening the database for each.
pub(crate) const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// The `interval:<ms>` background sync. A thread of its own, not a tick in the
/// writer loop: the writer sleeps in `blocking_recv`, which has no timeout,
/// and under a steady load it never sleeps at all; `flush_wal` is safe to
/// call while the writer writes.
#[derive(Debug)]
struct Ticker {
    /// Dropping it wakes the ticker, which then exits.
    stop: std::sync::mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Ticker {
    fn spawn(
        engine: Arc<Engine>,
        counters: Arc<Counters>,
        every: Duration,
    ) -> Result<Ticker, StoreError> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("triage-store-sync".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    if counters.dirty.swap(false, Ordering::AcqRel) {
                        if let Err(e) = sync_wal(&engine, &counters) {
                            // Acks were given before this sync (that is the
                            // policy); all we can do is say so and retry.
                            counters.dirty.store(true, Ordering::Release);
                            tracing::error!(error = %e, "store: interval WAL sync failed");
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Io(format!("spawning the WAL sync thread: {e}")))?;
        Ok(Ticker { stop, handle })
    }

    fn stop(self) {
        drop(self.stop);
        if self.handle.join().is_err() {
            tracing::error!("store: the WAL sync thread panicked");
        }
    }
}

/// Owns the receiving end of the write queue; see the module doc.
#[derive(Debug)]
pub(crate) struct Writer {
    engine: Arc<Engine>,
    rx: mpsc::Receiver<Command>,
    policy: SyncPolicy,
    max_batch_requests: usize,
    max_batch_bytes: usize,
    counters: Arc<Counters>,
    ticker: Option<Ticker>,
    /// The error that broke the database: the answer while a reopen waits
    /// for its backoff.
    last_error: Option<StoreError>,
    last_reopen: Option<Instant>,
    /// Set to the final WAL sync's outcome once the writer has closed the
    /// database and is about to exit.
    done: watch::Sender<Option<Result<(), StoreError>>>,
}

impl Writer {
    pub(crate) fn spawn(
        engine: Arc<Engine>,
        rx: mpsc::Receiver<Command>,
        opts: &StoreOptions,
        counters: Arc<Counters>,
        done: watch::Sender<Option<Result<(), StoreError>>>,
    ) -> Result<(), StoreError> {
        let policy = opts.sync;
        let ticker = match policy {
            SyncPolicy::Interval(every) => Some(Ticker::spawn(
                Arc::clone(&engine),
                Arc::clone(&counters),
                every,
            )?),
            SyncPolicy::Always | SyncPolicy::Group | SyncPolicy::Never => None,
        };
        let writer = Writer {
            engine,
            rx,
            policy,
            max_batch_requests: opts.max_batch_requests.max(1),
            max_batch_bytes: opts.max_batch_bytes,
            counters,
            ticker,
            last_error: None,
            last_reopen: None,
            done,
        };
        // The thread is detached: `Store::close` waits on `done`, not on a
        // join handle, so an async caller never blocks a runtime thread.
        std::thread::Builder::new()
            .name("triage-store-writer".into())
            .spawn(move || writer.run())
            .map(drop)
            .map_err(|e| StoreError::Io(format!("spawning the store writer thread: {e}")))
    }

    fn run(mut self) {
        let mut group = Vec::with_capacity(self.max_batch_requests);
        // `None` once every sender is gone, or after `Close` once the queue
        // is drained: either way nothing more can arrive.
        while let Some(first) = self.rx.blocking_recv() {
            self.take(first, &mut group);
            // Group commit: whatever queued up while the previous group was
            // being written goes into this one, so one fsync answers all. The
            // caps keep one write (and the memory it holds) bounded; the
            // first request always goes, however large.
            let mut bytes = group.first().map_or(0, |r| r.batch.bytes);
            while group.len() < self.max_batch_requests && bytes < self.max_batch_bytes {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        if let Command::Write(req) = &cmd {
                            bytes += req.batch.bytes;
                        }
                        self.take(cmd, &mut group);
                    }
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(std::mem::take(&mut group));
            }
        }
        let result = sync_wal(&self.engine, &self.counters);
        if let Err(e) = &result {
            tracing::error!(error = %e, "store: final WAL sync failed");
        }
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
        // Close the database before reporting done, so that once
        // `Store::close` returns the directory can be opened again.
        self.engine.close();
        self.done.send_replace(Some(result));
    }

    fn take(&mut self, cmd: Command, group: &mut Vec<WriteRequest>) {
        match cmd {
            Command::Write(req) => group.push(req),
            // Refuse new requests; those already queued are still received.
            Command::Close => self.rx.close(),
        }
    }

    fn commit(&mut self, group: Vec<WriteRequest>) {
        match self.policy {
            SyncPolicy::Always => self.commit_each(group),
            SyncPolicy::Group => {
                let sync = group.iter().any(|r| r.durable);
                self.commit_together(group, sync);
            }
            SyncPolicy::Interval(_) | SyncPolicy::Never => self.commit_together(group, false),
        }
    }

    /// `group`: one write for the whole group, synced if any request needs it.
    fn commit_together(&mut self, group: Vec<WriteRequest>, sync: bool) {
        let (batches, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|r| (r.batch, r.reply)).unzip();
        let result = self.write(batches, sync);
        for reply in replies {
            // A caller that stopped waiting (its future was dropped) is fine:
            // the write happened or failed all the same.
            let _ = reply.send(result.clone());
        }
    }

    /// `always`: each durable request is written and synced on its own. Runs
    /// of non-durable ones (FIN marks) are still merged, in order, unsynced.
    fn commit_each(&mut self, group: Vec<WriteRequest>) {
        let mut pending: Vec<WriteRequest> = Vec::new();
        for req in group {
            if req.durable {
                if !pending.is_empty() {
                    self.commit_together(std::mem::take(&mut pending), false);
                }
                self.commit_together(vec![req], true);
            } else {
                pending.push(req);
            }
        }
        if !pending.is_empty() {
            self.commit_together(pending, false);
        }
    }

    fn write(&mut self, batches: Vec<Batch>, sync: bool) -> Result<(), StoreError> {
        let requests = batches.len() as u64;
        let messages = batches.iter().map(|b| b.messages).sum();
        let started = Instant::now();
        let result = self.ensure_open().and_then(|db| {
            let mut wb = WriteBatch::default();
            for op in batches.into_iter().flat_map(|b| b.ops) {
                match op {
                    Op::Put { cf: c, key, value } => wb.put_cf(cf(&db, c)?, key, value),
                    Op::Delete { cf: c, key } => wb.delete_cf(cf(&db, c)?, key),
                    Op::Merge { cf: c, key, value } => wb.merge_cf(cf(&db, c)?, key, value),
                    Op::DeleteRange { cf: c, from, to } => {
                        wb.delete_range_cf(cf(&db, c)?, from, to)
                    }
                }
            }
            let mut opts = WriteOptions::default();
            opts.set_sync(sync);
            self.inject_failure()?;
            db.write_opt(wb, &opts).map_err(io_error)
        });
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.requests.fetch_add(requests, Ordering::Relaxed);
        match &result {
            Ok(()) => {
                c.messages.fetch_add(messages, Ordering::Relaxed);
                if messages > 0 {
                    c.batch_messages.record(messages);
                }
                if sync {
                    // A synced write's time is dominated by its fsync.
                    c.record_sync(started.elapsed());
                } else {
                    c.dirty.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                c.record_failure();
                self.last_error = Some(e.clone());
                tracing::warn!(error = %e, requests, "store: write failed; answering its requests with the error");
            }
        }
        result
    }

    /// The database to write to, reopened first if a failed write or sync
    /// left it refusing writes. While a reopen waits for its backoff, the
    /// error that broke the database is the answer.
    fn ensure_open(&mut self) -> Result<Arc<DB>, StoreError> {
        if self.counters.needs_reopen.load(Ordering::Acquire) {
            if self
                .last_reopen
                .is_some_and(|at| at.elapsed() < REOPEN_BACKOFF)
            {
                return Err(self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| StoreError::Io("store is reopening".into())));
            }
            self.last_reopen = Some(Instant::now());
            self.engine.reopen()?;
            self.counters.needs_reopen.store(false, Ordering::Release);
            self.counters.reopens.fetch_add(1, Ordering::Relaxed);
            tracing::info!("store: reopened the database after a write error");
        }
        self.engine.db()
    }

    #[cfg(test)]
    fn inject_failure(&self) -> Result<(), StoreError> {
        let left = &self.counters.fail_writes;
        match left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
            Ok(_) => Err(StoreError::Io("injected write failure (test)".into())),
            Err(_) => Ok(()),
        }
    }

    #[cfg(not(test))]
    #[inline]
    fn inject_failure(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

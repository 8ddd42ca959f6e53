//! The persistent store: topic logs, channel progress and metadata in one
//! RocksDB database. This is the only module that names a RocksDB type; the
//! rest of the broker sees [`Store`], plain structs and [`StoreError`].
//!
//! # Layout
//! Five column families, each read and written only through a typed schema
//! (a name, a key codec, a value codec; see `schema.rs`). Integers in keys are
//! big-endian so byte order is numeric order, and names are length-prefixed
//! so topic `a` never sees the keys of topic `ab`.
//!
//! | cf | key | value |
//! |---|---|---|
//! | `log` | `[len u8][topic][seq u64]` | `[timestamp_ns i64][attempts u16][body]` |
//! | `fin` | `[len][topic][len][channel][seq u64]` | empty |
//! | `meta` | `'T'[len][topic]` | topic record: version, paused, tier |
//! | | `'C'[len][topic][len][channel]` | channel record: version, paused |
//! | | `'W'[len][topic][len][channel]` | the channel's low watermark (u64) |
//! | | `'F'[len][topic]` | the topic's log floor (u64): trimmed below it |
//! | | `'G'` | the last delayed-id generation (u64) |
//! | `delayed` | `[due_ms u64][id u64]` | `[version][flags][topic][channel?][incarnation u64][timestamp_ns i64][attempts u16][body]` |
//! | `counts` | `[len][topic][len][channel]` or `[len][topic][0]` | pending delayed entries (i64, summed by a merge operator) |
//!
//! A message is written once, to its topic's log, however many channels the
//! topic has. A channel is a low watermark (every seq below it is finished)
//! plus finished marks for seqs at or above it, so fan-out costs no copy.
//! When a channel's watermark moves up, its marks below it are deleted with
//! one `DeleteRange`; when every channel has moved past a stretch of the log,
//! the caller trims the log below the lowest watermark with another. Range
//! tombstones cost one write whatever they cover, and compaction drops the
//! covered files, so disk use falls as consumers keep up ([`Store::compact`]
//! forces that when the store is idle).
//!
//! # Durability
//! Every change goes through one write path (`writer.rs`): a request (a batch
//! of typed operations, whether it must be durable, a reply channel) is sent
//! to one writer thread, which takes the first queued request, drains up to
//! [`StoreOptions::max_batch_requests`] more, writes them as one atomic
//! RocksDB write batch and then answers them all. The sync policy is decided
//! there and nowhere else:
//!
//! | policy | a durable request is answered | `kill -9` loses | power loss loses |
//! |---|---|---|---|
//! | `always` | after its own synced write | nothing acknowledged | nothing acknowledged |
//! | `group` (default) | after its group's synced write | nothing acknowledged | nothing acknowledged |
//! | `interval:<ms>` | after the write, before any sync; the WAL is synced every `ms` | nothing acknowledged | up to `ms` of acknowledged writes |
//! | `never` | after the write | nothing acknowledged | whatever the OS had not written back |
//!
//! The WAL is the durability: a write reaches the WAL (the OS page cache)
//! before it is answered under every policy, so a process crash loses nothing
//! acknowledged even unsynced; the fsync (`WriteOptions::sync`, or
//! `flush_wal(true)` for `interval`) is what survives power loss. Under `group`
//! many concurrent publishes share one fsync: while one group is being
//! synced the next one queues up, so the fsync rate adapts to the load.
//!
//! Publishes and metadata are durable requests. FIN marks, watermark advances
//! and trims are not: losing one costs a redelivery or a later trim, never a
//! message, and delivery is at-least-once anyway. They are still ordered with
//! everything else, and a later synced write makes them durable too.
//!
//! A write that fails (a full or failing disk) answers every request of its
//! group with the error, never `Ok`; a write batch is atomic, so the store
//! stays consistent. After a failed WAL write RocksDB refuses every later
//! write and cannot resume by itself, so the writer closes and reopens the
//! database before the next write (at most once a second while it keeps
//! failing; meanwhile requests get the error at once): when space returns,
//! writes succeed again without a restart. A write whose fsync failed may
//! still be in the WAL and come back after the reopen although it was
//! answered with an error: a duplicate for the publisher who retries, never
//! a loss.
//!
//! Reads (`read_log`, `finished`, `last_seq`, `load_topics`) are synchronous
//! and may touch the disk: call them from `spawn_blocking` or at startup.

mod engine;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocksdb::ReadOptions;
use tokio::sync::{mpsc, oneshot, watch};

use engine::{cf, Engine};
pub use schema::DelayedKey;
use schema::{
    channel_records_prefix, counts_topic_prefix, fin_channel_prefix, fin_topic_prefix,
    floors_prefix, log_key_with_prefix, log_prefix, prefix_end, requeue_floors_prefix,
    topic_records_prefix, watermarks_prefix, Cf, ChannelKey, ChannelRecord, ChannelSchema, Count,
    CountKey, CountSchema, DecodeError, DelayedSchema, FinKey, FinMark, FinSchema, FloorKey,
    FloorSchema, GenerationKey, KeyCodec, LogKey, LogSchema, RequeueFloorKey, RequeueFloorSchema,
    Schema, Seq, TopicKey, TopicRecord, TopicSchema, ValueCodec, WatermarkKey, WatermarkSchema,
    MAX_NAME_LEN,
};
use triage_config::TopicSettings;
use writer::{Batch, Command, Counters, WriteRequest, Writer};

/// What can go wrong in the store. `Clone` because one failed group write
/// answers every request in the group with the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// RocksDB or the file system failed (full disk, I/O error, lock held).
    #[error("store I/O error: {0}")]
    Io(String),
    /// The store is closed: the request was refused and nothing of it was
    /// written. (Also returned if the writer thread died mid-request, when
    /// the outcome is unknown; that would be a bug.)
    #[error("store is closed")]
    Closed,
    /// Bytes on disk did not decode.
    #[error("corrupt record in column family {cf} at key {key}: {reason}")]
    Corrupt {
        cf: &'static str,
        /// The raw key, hex-encoded (cut after 64 bytes).
        key: String,
        reason: String,
    },
    /// A topic, channel or tier name the key layout cannot hold.
    #[error("invalid {what} name {name:?}: must be 1 to {MAX_NAME_LEN} bytes")]
    InvalidName { what: &'static str, name: String },
    /// An argument out of range (a sequence that would overflow, a zero bound).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn io_error(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.into_string())
}

fn corrupt(cf: Cf, key: &[u8], e: DecodeError) -> StoreError {
    const SHOWN: usize = 64;
    let mut hex: String = key.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
    if key.len() > SHOWN {
        hex.push_str("...");
    }
    StoreError::Corrupt {
        cf: cf.name(),
        key: hex,
        reason: e.0,
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// When a write is fsynced; the module doc says what each policy loses.
/// It is part of the broker's config, so it lives (and is parsed) there.
pub use triage_config::SyncPolicy;

/// How to open a [`Store`]. Every default lives in the `Default` impl.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    pub sync: SyncPolicy,
    /// Requests that may wait for the writer; past it, writers wait for room
    /// (backpressure on publishers) instead of queueing without bound.
    pub queue_capacity: usize,
    /// The most requests merged into one write (and one fsync).
    pub max_batch_requests: usize,
    /// Stop merging requests into a write once it holds this many bytes of
    /// keys and values (a single larger request is still written alone).
    pub max_batch_bytes: usize,
    /// Memtable size of the `log` column family (others use at most 16 MiB).
    pub write_buffer_bytes: usize,
    /// The block cache shared by all column families. Kept small: reads are
    /// mostly of recent entries, which are still in the memtable.
    pub block_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncPolicy::Group,
            queue_capacity: 1024,
            max_batch_requests: 1024,
            max_batch_bytes: 32 << 20,
            write_buffer_bytes: 64 << 20,
            block_cache_bytes: 8 << 20,
        }
    }
}

impl StoreOptions {
    fn validate(&self) -> Result<(), StoreError> {
        let bad = |what: &str| Err(StoreError::InvalidArgument(what.to_owned()));
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.max_batch_requests == 0 {
            return bad("max_batch_requests must be at least 1");
        }
        if self.sync == SyncPolicy::Interval(Duration::ZERO) {
            return bad("the sync interval must be at least 1 ms");
        }
        if self.write_buffer_bytes < (1 << 20) {
            return bad("write_buffer_bytes must be at least 1 MiB");
        }
        Ok(())
    }
}

/// One message as stored in a topic's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub timestamp_ns: i64,
    pub attempts: u16,
    pub body: Bytes,
}

/// A topic's metadata as the broker sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    /// The tier's config name (`persistent`, `delayed`, ...); the store does
    /// not interpret it. 1 to 255 bytes.
    pub tier: String,
    pub paused: bool,
    /// Tells this topic from an earlier one of the same name (its creation
    /// time in Unix ns); delayed entries carry it. 0 for topics recorded
    /// before the delayed tier existed.
    pub incarnation: u64,
    pub settings: TopicSettings,
}

/// A message waiting in the delayed tier for its due time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayedMessage {
    /// The topic it goes to when due.
    pub topic: String,
    /// `Some`: a message requeued with a delay on this channel, which alone
    /// gets it back; `None`: a deferred publish, for every channel.
    pub channel: Option<String>,
    /// The topic's incarnation when the entry was written.
    pub incarnation: u64,
    pub message: StoredMessage,
}

/// Due delayed entries, and when the next one after them is due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueDelayed {
    pub due: Vec<(DelayedKey, DelayedMessage)>,
    /// The due time of the first entry not returned, if there is one.
    pub next_due_ms: Option<u64>,
}

/// Due entries of one target, moved into their topic's log by one write:
/// see [`Store::release_delayed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayedRelease<'a> {
    pub topic: &'a str,
    /// `Some`: channel-targeted entries (their count is the channel's).
    pub channel: Option<&'a str>,
    /// The log seq of the first message; the rest follow in order.
    pub first_seq: u64,
    pub messages: &'a [StoredMessage],
    /// The entries released, deleted in the same write.
    pub keys: &'a [DelayedKey],
    /// Channels that must not see these messages: a FIN mark is written
    /// for each of them at each new seq.
    pub skip_channels: &'a [String],
}

/// Ids of delayed entries: `generation << 32 | counter`. A new generation
/// is recorded durably at every open (and when a generation's 2^32 ids run
/// out) before any of its ids is used, so no id is handed out twice, even
/// across crashes, without a per-entry counter write.
#[derive(Debug)]
struct DelayedIds {
    generation: u64,
    next: u64,
}

impl DelayedIds {
    /// The id the next entry will get.
    fn next_id(&self) -> u64 {
        (self.generation << 32) | self.next
    }
}

const IDS_PER_GENERATION: u64 = 1 << 32;

/// A channel's metadata as the broker sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelMeta {
    pub name: String,
    pub paused: bool,
}

/// A channel as recovered at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    pub meta: ChannelMeta,
    /// Every seq below it is finished; [`Store::finished`] has the marks at
    /// or above it. 0 if none was ever recorded.
    pub low_watermark: u64,
}

/// A topic as recovered at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicState {
    pub meta: TopicMeta,
    pub channels: Vec<ChannelState>,
    /// The seq to give the next message: past the last one in the log, and
    /// past any trimmed away (see [`Store::next_seq`]).
    pub next_seq: u64,
}

/// A snapshot of the store's counters, for `/stats` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// RocksDB writes: one per group (per request under `always`).
    pub batches: u64,
    /// Requests answered by those writes.
    pub requests: u64,
    /// Messages appended to topic logs.
    pub messages: u64,
    /// WAL fsyncs: synced writes plus `interval` and shutdown syncs.
    pub syncs: u64,
    /// Time spent in them (a synced write is timed whole; its fsync
    /// dominates it).
    pub sync_nanos_total: u64,
    pub sync_nanos_max: u64,
    /// Failed writes and syncs.
    pub write_errors: u64,
    /// Times the database was reopened to recover from a failed write.
    pub reopens: u64,
    /// Requests waiting for the writer, against `queue_capacity`.
    pub queued: usize,
    pub queue_capacity: usize,
}

/// The persistent store. Share it behind an `Arc`; every method takes `&self`.
///
/// [`Store::open`] starts a writer thread (not a tokio task: see `writer.rs`),
/// so it may be called outside a runtime. The thread exits once
/// [`Store::close`] is called or the `Store` is dropped, after writing what
/// was queued, syncing the WAL and closing the database.
///
/// Await [`Store::close`] before the process exits: dropping the `Store`
/// does not wait for the writer, and RocksDB aborts the process
/// ("pthread lock: Invalid argument") if it exits while a database is still
/// closing.
pub struct Store {
    /// The database handle, shared with the writer, which may reopen it.
    engine: Arc<Engine>,
    /// Bounded (`queue_capacity`): publishers wait for room when the disk
    /// falls behind rather than queueing without limit.
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    /// Becomes `Some(final sync result)` once the writer has exited.
    done: watch::Receiver<Option<Result<(), StoreError>>>,
    sync: SyncPolicy,
    delayed_ids: std::sync::Mutex<DelayedIds>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.engine.path())
            .field("sync", &self.sync)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` and starts its writer thread.
    ///
    /// Blocking: RocksDB replays its WAL here. Call it at startup or from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for bad options; [`StoreError::Io`] if
    /// the directory cannot be created or opened (permissions, another
    /// process holding it) or the writer thread cannot start.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        opts.validate()?;
        let engine = Arc::new(Engine::open(dir, opts.clone())?);
        let generation = new_generation(&engine)?;
        let (tx, rx) = mpsc::channel(opts.queue_capacity);
        let (done_tx, done) = watch::channel(None);
        let counters = Arc::new(Counters::default());
        Writer::spawn(
            Arc::clone(&engine),
            rx,
            &opts,
            Arc::clone(&counters),
            done_tx,
        )?;
        Ok(Store {
            engine,
            tx,
            counters,
            done,
            sync: opts.sync,
            delayed_ids: std::sync::Mutex::new(DelayedIds {
                generation,
                next: 0,
            }),
        })
    }

    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// Appends `msgs` to `topic`'s log at `first_seq`, `first_seq + 1`, ...
    /// and returns once they are durable per the sync policy. Concurrent
    /// calls share one write and one fsync. The messages are written
    /// atomically: all or none.
    ///
    /// Not cancel-safe in the usual sense: dropping the future does not take
    /// back a write already queued; it may still happen.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the write or its sync failed. Nothing is
    /// acknowledged, but if only the fsync failed the messages may still be
    /// read back, before and after a restart; appending them again at the
    /// same seqs simply overwrites them.
    /// [`StoreError::Closed`] after `close`; [`StoreError::InvalidName`] /
    /// [`StoreError::InvalidArgument`] for a bad topic or a seq overflow.
    pub async fn append(
        &self,
        topic: &str,
        first_seq: u64,
        msgs: &[StoredMessage],
    ) -> Result<(), StoreError> {
        check_name("topic", topic)?;
        if msgs.is_empty() {
            return Ok(());
        }
        let count = msgs.len() as u64;
        let last_seq = first_seq.checked_add(count - 1).ok_or_else(|| {
            StoreError::InvalidArgument(format!(
                "{count} messages from seq {first_seq} overflow u64"
            ))
        })?;
        let prefix = log_prefix(topic);
        let mut batch = Batch::with_capacity(msgs.len());
        // An inclusive range: `first_seq..` would overflow stepping past u64::MAX.
        for (seq, msg) in (first_seq..=last_seq).zip(msgs) {
            batch.put_raw_key::<LogSchema>(log_key_with_prefix(&prefix, seq), msg);
        }
        batch.add_messages(count);
        self.submit(batch, true).await
    }

    /// Up to `limit` entries of `topic`'s log with seq `>= from_seq`, in seq
    /// order.
    ///
    /// # Errors
    /// [`StoreError::Io`] on a read error, [`StoreError::Corrupt`] if an entry
    /// does not decode, [`StoreError::InvalidName`] for a bad topic.
    pub fn read_log(
        &self,
        topic: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredMessage)>, StoreError> {
        check_name("topic", topic)?;
        let prefix = log_prefix(topic);
        let from = log_key_with_prefix(&prefix, from_seq);
        let mut out = Vec::new();
        self.scan::<LogSchema>(from, prefix_bound(&prefix)?, limit, |key, msg| {
            out.push((key.seq, msg));
        })?;
        Ok(out)
    }

    /// The highest seq in `topic`'s log, if it has any entry.
    ///
    /// # Errors
    /// As [`Store::read_log`].
    pub fn last_seq(&self, topic: &str) -> Result<Option<u64>, StoreError> {
        check_name("topic", topic)?;
        let prefix = log_prefix(topic);
        let db = self.engine.db()?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(prefix.clone());
        ro.set_iterate_upper_bound(prefix_bound(&prefix)?);
        let mut it = db.raw_iterator_cf_opt(cf(&db, Cf::Log)?, ro);
        it.seek_to_last();
        let last = match it.key() {
            Some(key) => Some(
                LogKey::decode_key(key)
                    .map_err(|e| corrupt(Cf::Log, key, e))?
                    .seq,
            ),
            None => None,
        };
        it.status().map_err(io_error)?;
        Ok(last)
    }

    /// The seq the next message of `topic` should get: one past the last
    /// entry of its log, and never below its log floor (so a topic whose log
    /// was trimmed empty does not reuse seqs its channels already passed).
    ///
    /// # Errors
    /// As [`Store::read_log`].
    pub fn next_seq(&self, topic: &str) -> Result<u64, StoreError> {
        let after_last = self.last_seq(topic)?.map_or(0, |s| s.saturating_add(1));
        let floor = self
            .get::<FloorSchema>(&FloorKey(topic.to_owned()))?
            .map_or(0, |Seq(s)| s);
        Ok(after_last.max(floor))
    }

    /// Records that `topic/channel` finished `seq`. Not fsynced on its own
    /// (a lost mark only means a redelivery), but ordered with every other
    /// write and batched with them.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the write failed, [`StoreError::Closed`],
    /// [`StoreError::InvalidName`].
    pub async fn finish(&self, topic: &str, channel: &str, seq: u64) -> Result<(), StoreError> {
        self.finish_many(topic, channel, &[seq]).await
    }

    /// [`Store::finish`] for several seqs in one request.
    ///
    /// # Errors
    /// As [`Store::finish`].
    pub async fn finish_many(
        &self,
        topic: &str,
        channel: &str,
        seqs: &[u64],
    ) -> Result<(), StoreError> {
        check_name("topic", topic)?;
        check_name("channel", channel)?;
        let mut batch = Batch::with_capacity(seqs.len());
        for &seq in seqs {
            let key = FinKey {
                topic: topic.to_owned(),
                channel: channel.to_owned(),
                seq,
            };
            batch.put::<FinSchema>(&key, &FinMark);
        }
        self.submit(batch, false).await
    }

    /// Up to `limit` finished marks of `topic/channel` with seq `>= from_seq`,
    /// ascending. Marks below the channel's low watermark are gone (deleted
    /// by [`Store::advance_channel`]).
    ///
    /// # Errors
    /// As [`Store::read_log`].
    pub fn finished(
        &self,
        topic: &str,
        channel: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        check_name("topic", topic)?;
        check_name("channel", channel)?;
        let prefix = fin_channel_prefix(topic, channel);
        let from = FinKey {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
            seq: from_seq,
        }
        .encode_key();
        let mut out = Vec::new();
        self.scan::<FinSchema>(from, prefix_bound(&prefix)?, limit, |key, FinMark| {
            out.push(key.seq);
        })?;
        Ok(out)
    }

    /// Sets `topic/channel`'s low watermark (every seq below it is finished)
    /// and deletes its finished marks below it with one range delete. Not
    /// fsynced on its own: losing it only brings back marks that say the
    /// same thing. The caller keeps watermarks from going down.
    ///
    /// # Errors
    /// As [`Store::finish`].
    pub async fn advance_channel(
        &self,
        topic: &str,
        channel: &str,
        low_watermark: u64,
    ) -> Result<(), StoreError> {
        check_name("topic", topic)?;
        check_name("channel", channel)?;
        let mut batch = Batch::with_capacity(2);
        let mark = |seq| FinKey {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
            seq,
        };
        batch.delete_range::<FinSchema>(&mark(0), &mark(low_watermark));
        batch.put::<WatermarkSchema>(
            &WatermarkKey {
                topic: topic.to_owned(),
                channel: channel.to_owned(),
            },
            &Seq(low_watermark),
        );
        self.submit(batch, false).await
    }

    /// Deletes `topic`'s log below `below_seq` with one range delete and
    /// records it as the topic's log floor. The caller passes the lowest low
    /// watermark of the topic's channels, and never a lower value than
    /// before. Not fsynced on its own: a lost trim leaves entries every
    /// channel has finished, and a later trim removes them.
    ///
    /// # Errors
    /// As [`Store::finish`].
    pub async fn trim_log(&self, topic: &str, below_seq: u64) -> Result<(), StoreError> {
        check_name("topic", topic)?;
        let prefix = log_prefix(topic);
        let mut batch = Batch::with_capacity(2);
        batch.delete_range_raw(
            Cf::Log,
            log_key_with_prefix(&prefix, 0),
            log_key_with_prefix(&prefix, below_seq),
        );
        batch.put::<FloorSchema>(&FloorKey(topic.to_owned()), &Seq(below_seq));
        self.submit(batch, false).await
    }

    /// Creates or updates a topic's record (tier, paused). Durable before it
    /// returns.
    ///
    /// # Errors
    /// As [`Store::append`]; [`StoreError::InvalidName`] also for a tier name
    /// that is empty or longer than 255 bytes.
    pub async fn put_topic(&self, meta: &TopicMeta) -> Result<(), StoreError> {
        check_name("topic", &meta.name)?;
        check_name("tier", &meta.tier)?;
        let mut batch = Batch::with_capacity(1);
        batch.put::<TopicSchema>(
            &TopicKey(meta.name.clone()),
            &TopicRecord {
                tier: meta.tier.clone(),
                paused: meta.paused,
                incarnation: meta.incarnation,
                delay_ms: duration_ms(meta.settings.delay),
                batch_window_ms: duration_ms(meta.settings.batch_window),
                max_attempts: meta.settings.max_attempts,
            },
        );
        self.submit(batch, true).await
    }

    /// Deletes a topic and everything of it (log, channels, watermarks,
    /// finished marks, floor) in one atomic, durable write of range deletes.
    /// Other topics are untouched, including those whose names it prefixes.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn delete_topic(&self, name: &str) -> Result<(), StoreError> {
        check_name("topic", name)?;
        let mut batch = Batch::with_capacity(6);
        let log = log_prefix(name);
        batch.delete_range_raw(Cf::Log, log.clone(), prefix_bound(&log)?);
        let fin = fin_topic_prefix(name);
        batch.delete_range_raw(Cf::Fin, fin.clone(), prefix_bound(&fin)?);
        let channels = channel_records_prefix(Some(name));
        batch.delete_range_raw(Cf::Meta, channels.clone(), prefix_bound(&channels)?);
        let watermarks = watermarks_prefix(Some(name));
        batch.delete_range_raw(Cf::Meta, watermarks.clone(), prefix_bound(&watermarks)?);
        let requeue_floors = requeue_floors_prefix(Some(name));
        batch.delete_range_raw(
            Cf::Meta,
            requeue_floors.clone(),
            prefix_bound(&requeue_floors)?,
        );
        batch.delete::<FloorSchema>(&FloorKey(name.to_owned()));
        batch.delete::<TopicSchema>(&TopicKey(name.to_owned()));
        // Its delayed entries stay until due (they are ordered by due time,
        // not by topic) and are dropped then: they carry the incarnation.
        let counts = counts_topic_prefix(name);
        batch.delete_range_raw(Cf::Counts, counts.clone(), prefix_bound(&counts)?);
        self.submit(batch, true).await
    }

    /// Creates a channel starting at `low_watermark`: it will see messages
    /// from that seq on (pass the topic's next seq for a channel that sees
    /// only new messages, or the log's start for one that takes the backlog).
    /// Clears any finished marks left under the name, so a recreated channel
    /// does not inherit them. Record and watermark are written atomically,
    /// durably.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn create_channel(
        &self,
        topic: &str,
        meta: &ChannelMeta,
        low_watermark: u64,
    ) -> Result<(), StoreError> {
        check_name("topic", topic)?;
        check_name("channel", &meta.name)?;
        let mut batch = Batch::with_capacity(3);
        let fin = fin_channel_prefix(topic, &meta.name);
        batch.delete_range_raw(Cf::Fin, fin.clone(), prefix_bound(&fin)?);
        batch.put::<ChannelSchema>(
            &ChannelKey {
                topic: topic.to_owned(),
                channel: meta.name.clone(),
            },
            &ChannelRecord {
                paused: meta.paused,
            },
        );
        batch.put::<WatermarkSchema>(
            &WatermarkKey {
                topic: topic.to_owned(),
                channel: meta.name.clone(),
            },
            &Seq(low_watermark),
        );
        self.submit(batch, true).await
    }

    /// Updates a channel's record (paused) without touching its watermark or
    /// marks. Durable before it returns.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn put_channel(&self, topic: &str, meta: &ChannelMeta) -> Result<(), StoreError> {
        check_name("topic", topic)?;
        check_name("channel", &meta.name)?;
        let mut batch = Batch::with_capacity(1);
        batch.put::<ChannelSchema>(
            &ChannelKey {
                topic: topic.to_owned(),
                channel: meta.name.clone(),
            },
            &ChannelRecord {
                paused: meta.paused,
            },
        );
        self.submit(batch, true).await
    }

    /// Deletes a channel: its record, watermark and finished marks. The log
    /// is the topic's and stays. Its delayed requeues stay until due (they
    /// are ordered by due time) and are dropped then: every id they have is
    /// below the requeue floor written here, so a channel created again
    /// under the name never receives them. Durable before it returns.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn delete_channel(&self, topic: &str, channel: &str) -> Result<(), StoreError> {
        check_name("topic", topic)?;
        check_name("channel", channel)?;
        let mut batch = Batch::with_capacity(3);
        let fin = fin_channel_prefix(topic, channel);
        batch.delete_range_raw(Cf::Fin, fin.clone(), prefix_bound(&fin)?);
        batch.delete::<ChannelSchema>(&ChannelKey {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
        });
        batch.delete::<WatermarkSchema>(&WatermarkKey {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
        });
        batch.delete::<CountSchema>(&CountKey {
            topic: topic.to_owned(),
            channel: Some(channel.to_owned()),
        });
        batch.put::<RequeueFloorSchema>(
            &RequeueFloorKey {
                topic: topic.to_owned(),
                channel: channel.to_owned(),
            },
            &Seq(self.next_delayed_id()),
        );
        self.submit(batch, true).await
    }

    /// Delayed requeues of `topic/channel` with an id below this were made by
    /// an earlier channel of that name (see [`Store::delete_channel`]).
    ///
    /// # Errors
    /// As [`Store::read_log`].
    pub fn requeue_floor(&self, topic: &str, channel: &str) -> Result<u64, StoreError> {
        check_name("topic", topic)?;
        check_name("channel", channel)?;
        let key = RequeueFloorKey {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
        };
        Ok(self
            .get::<RequeueFloorSchema>(&key)?
            .map_or(0, |Seq(floor)| floor))
    }

    /// Every topic with its channels, as last written, sorted by name; for
    /// startup. Channel records whose topic has no record (which only a
    /// caller writing a channel before its topic can cause) are skipped with
    /// a warning.
    ///
    /// # Errors
    /// [`StoreError::Io`] on a read error, [`StoreError::Corrupt`] if a record
    /// does not decode.
    pub fn load_topics(&self) -> Result<Vec<TopicState>, StoreError> {
        let mut topics: BTreeMap<String, TopicState> = BTreeMap::new();
        let all = usize::MAX;
        let prefix = topic_records_prefix();
        self.scan::<TopicSchema>(prefix.clone(), prefix_bound(&prefix)?, all, |key, rec| {
            let meta = TopicMeta {
                name: key.0.clone(),
                tier: rec.tier,
                paused: rec.paused,
                incarnation: rec.incarnation,
                settings: TopicSettings {
                    delay: Duration::from_millis(rec.delay_ms),
                    batch_window: Duration::from_millis(rec.batch_window_ms),
                    max_attempts: rec.max_attempts,
                },
            };
            topics.insert(
                key.0,
                TopicState {
                    meta,
                    channels: Vec::new(),
                    next_seq: 0,
                },
            );
        })?;

        let mut watermarks: BTreeMap<(String, String), u64> = BTreeMap::new();
        let prefix = watermarks_prefix(None);
        self.scan::<WatermarkSchema>(prefix.clone(), prefix_bound(&prefix)?, all, |key, seq| {
            watermarks.insert((key.topic, key.channel), seq.0);
        })?;

        let prefix = channel_records_prefix(None);
        let mut orphans = 0usize;
        self.scan::<ChannelSchema>(prefix.clone(), prefix_bound(&prefix)?, all, |key, rec| {
            let low_watermark = watermarks
                .get(&(key.topic.clone(), key.channel.clone()))
                .copied()
                .unwrap_or(0);
            match topics.get_mut(&key.topic) {
                Some(topic) => topic.channels.push(ChannelState {
                    meta: ChannelMeta {
                        name: key.channel,
                        paused: rec.paused,
                    },
                    low_watermark,
                }),
                None => orphans += 1,
            }
        })?;
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "store: channel records without a topic record skipped"
            );
        }

        let mut floors: BTreeMap<String, u64> = BTreeMap::new();
        let prefix = floors_prefix();
        self.scan::<FloorSchema>(prefix.clone(), prefix_bound(&prefix)?, all, |key, seq| {
            floors.insert(key.0, seq.0);
        })?;
        for (name, topic) in &mut topics {
            let after_last = self.last_seq(name)?.map_or(0, |s| s.saturating_add(1));
            let floor = floors.get(name).copied().unwrap_or(0);
            topic.next_seq = after_last.max(floor);
        }
        Ok(topics.into_values().collect())
    }

    /// The id the next delayed entry will get: every id handed out so far is below it.
    fn next_delayed_id(&self) -> u64 {
        self.lock_delayed_ids().next_id()
    }

    fn lock_delayed_ids(&self) -> std::sync::MutexGuard<'_, DelayedIds> {
        self.delayed_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands out `count` consecutive delayed-entry ids (see [`DelayedIds`]).
    fn allocate_delayed_ids(&self, count: u64) -> Result<u64, StoreError> {
        let mut ids = self.lock_delayed_ids();
        if ids.next + count > IDS_PER_GENERATION {
            // Once per four billion entries: a blocking synced write is fine.
            ids.generation = new_generation(&self.engine)?;
            ids.next = 0;
        }
        let first = ids.next_id();
        ids.next += count;
        Ok(first)
    }

    /// Writes deferred publishes, all due at `due_ms` (Unix ms), and counts
    /// them as pending for their topic or channel. Durable before it returns.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn put_delayed(
        &self,
        due_ms: u64,
        entries: &[DelayedMessage],
    ) -> Result<Vec<DelayedKey>, StoreError> {
        let first = self.allocate_delayed_ids(entries.len() as u64)?;
        let mut batch = Batch::with_capacity(entries.len() + 1);
        let mut keys = Vec::with_capacity(entries.len());
        let mut counts: BTreeMap<CountKey, i64> = BTreeMap::new();
        for (entry, id) in entries.iter().zip(first..) {
            check_delayed(entry)?;
            let key = DelayedKey { due_ms, id };
            batch.put::<DelayedSchema>(&key, entry);
            keys.push(key);
            *counts.entry(count_key(entry)).or_default() += 1;
        }
        for (key, n) in counts {
            batch.merge::<CountSchema>(&key, &Count(n));
        }
        self.submit(batch, true).await?;
        Ok(keys)
    }

    /// A message requeued with a delay on its channel: the delayed entry and
    /// the channel's FIN mark for the log seq it leaves, in one durable
    /// write, so the message is always in exactly one of the two places.
    ///
    /// # Errors
    /// As [`Store::append`]; [`StoreError::InvalidArgument`] for an entry
    /// without a channel.
    pub async fn requeue_delayed(
        &self,
        due_ms: u64,
        entry: &DelayedMessage,
        seq: u64,
    ) -> Result<DelayedKey, StoreError> {
        let Some(channel) = &entry.channel else {
            return Err(StoreError::InvalidArgument(
                "a requeued entry names its channel".into(),
            ));
        };
        check_delayed(entry)?;
        let key = DelayedKey {
            due_ms,
            id: self.allocate_delayed_ids(1)?,
        };
        let mut batch = Batch::with_capacity(3);
        batch.put::<DelayedSchema>(&key, entry);
        batch.put::<FinSchema>(
            &FinKey {
                topic: entry.topic.clone(),
                channel: channel.clone(),
                seq,
            },
            &FinMark,
        );
        batch.merge::<CountSchema>(&count_key(entry), &Count(1));
        self.submit(batch, true).await?;
        Ok(key)
    }

    /// Up to `limit` entries after `after` (from the start for `None`) that
    /// are due by `due_by_ms`, in due order, and the due time of the next.
    ///
    /// # Errors
    /// [`StoreError::Io`] on a read error, [`StoreError::Corrupt`].
    pub fn read_delayed(
        &self,
        after: Option<DelayedKey>,
        due_by_ms: u64,
        limit: usize,
    ) -> Result<DueDelayed, StoreError> {
        let from = match after {
            // The smallest key above `after`: every key is 16 bytes.
            Some(key) => {
                let mut from = key.encode_key();
                from.push(0);
                from
            }
            None => Vec::new(),
        };
        let mut out = DueDelayed::default();
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(from.clone());
        let db = self.engine.db()?;
        let mut it = db.raw_iterator_cf_opt(cf(&db, Cf::Delayed)?, ro);
        it.seek(&from);
        while let (Some(raw_key), Some(raw_value)) = (it.key(), it.value()) {
            let key =
                DelayedKey::decode_key(raw_key).map_err(|e| corrupt(Cf::Delayed, raw_key, e))?;
            if key.due_ms > due_by_ms || out.due.len() >= limit {
                out.next_due_ms = Some(key.due_ms);
                break;
            }
            let value = DelayedMessage::decode_value(raw_value)
                .map_err(|e| corrupt(Cf::Delayed, raw_key, e))?;
            out.due.push((key, value));
            it.next();
        }
        it.status().map_err(io_error)?;
        Ok(out)
    }

    /// Moves due entries into their topic's log in one atomic write: the
    /// log entries at `first_seq..`, the delete of every released entry,
    /// the pending count, and FIN marks for the channels that must skip
    /// them. Not fsynced on its own: lost in a crash, the entries are still
    /// pending and are released again.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn release_delayed(&self, release: DelayedRelease<'_>) -> Result<(), StoreError> {
        let DelayedRelease {
            topic,
            channel,
            first_seq,
            messages,
            keys,
            skip_channels,
        } = release;
        check_name("topic", topic)?;
        let count = messages.len() as u64;
        let prefix = log_prefix(topic);
        let mut batch = Batch::with_capacity(messages.len() * (2 + skip_channels.len()) + 1);
        for (seq, msg) in (first_seq..).zip(messages) {
            batch.put_raw_key::<LogSchema>(log_key_with_prefix(&prefix, seq), msg);
            for skip in skip_channels {
                check_name("channel", skip)?;
                batch.put::<FinSchema>(
                    &FinKey {
                        topic: topic.to_owned(),
                        channel: skip.clone(),
                        seq,
                    },
                    &FinMark,
                );
            }
        }
        for key in keys {
            batch.delete::<DelayedSchema>(key);
        }
        let released = CountKey {
            topic: topic.to_owned(),
            channel: channel.map(str::to_owned),
        };
        batch.merge::<CountSchema>(&released, &Count(-(keys.len() as i64)));
        batch.add_messages(count);
        self.submit(batch, false).await
    }

    /// Deletes delayed entries without releasing them (their topic or channel
    /// is gone). Their counts went with it.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub async fn drop_delayed(&self, keys: &[DelayedKey]) -> Result<(), StoreError> {
        let mut batch = Batch::with_capacity(keys.len());
        for key in keys {
            batch.delete::<DelayedSchema>(key);
        }
        self.submit(batch, false).await
    }

    /// Pending delayed entries per topic (`None`) and channel, for recovery.
    /// Negative or zero counts are left out.
    ///
    /// # Errors
    /// [`StoreError::Io`] on a read error, [`StoreError::Corrupt`].
    pub fn delayed_counts(&self) -> Result<Vec<(String, Option<String>, u64)>, StoreError> {
        let mut out = Vec::new();
        self.scan::<CountSchema>(Vec::new(), vec![0xFF], usize::MAX, |key, Count(n)| {
            if let Ok(n) = u64::try_from(n) {
                if n > 0 {
                    out.push((key.topic, key.channel, n));
                }
            }
        })?;
        Ok(out)
    }

    /// Compacts the `log` and `fin` column families so that ranges deleted
    /// by trims and watermark advances give their disk space back now rather
    /// than at the next natural compaction. Blocking and I/O heavy: for an
    /// idle moment, from `spawn_blocking`.
    ///
    /// # Errors
    /// [`StoreError::Io`] if compaction failed.
    pub fn compact(&self) -> Result<(), StoreError> {
        let db = self.engine.db()?;
        for family in [Cf::Log, Cf::Fin] {
            db.compact_range_cf(cf(&db, family)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Bytes of table files the store holds (excluding the WAL and
    /// memtables): what compaction after trims brings down.
    ///
    /// # Errors
    /// [`StoreError::Io`] if RocksDB cannot report it.
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        let db = self.engine.db()?;
        let mut total = 0u64;
        for family in Cf::ALL {
            total += db
                .property_int_value_cf(cf(&db, family)?, "rocksdb.live-sst-files-size")
                .map_err(io_error)?
                .unwrap_or(0);
        }
        Ok(total)
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            batches: load(&c.batches),
            requests: load(&c.requests),
            messages: load(&c.messages),
            syncs: load(&c.syncs),
            sync_nanos_total: load(&c.sync_nanos_total),
            sync_nanos_max: load(&c.sync_nanos_max),
            write_errors: load(&c.write_errors),
            reopens: load(&c.reopens),
            queued: self.tx.max_capacity() - self.tx.capacity(),
            queue_capacity: self.tx.max_capacity(),
        }
    }

    /// Stops taking writes, lets the writer finish what was queued, syncs
    /// the WAL, closes the database and waits for all of it. Once it returns
    /// the directory may be opened again; later reads and writes of this
    /// `Store` fail with [`StoreError::Closed`]. Calling it again returns the
    /// same result.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the final WAL sync failed;
    /// [`StoreError::Closed`] if the writer died without reporting.
    pub async fn close(&self) -> Result<(), StoreError> {
        // Fails only if the writer already stopped taking commands; then we
        // just wait for it below.
        let _ = self.tx.send(Command::Close).await;
        let mut done = self.done.clone();
        let result = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| StoreError::Closed)?;
        match &*result {
            Some(r) => r.clone(),
            None => Err(StoreError::Closed),
        }
    }

    async fn submit(&self, batch: Batch, durable: bool) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Write(WriteRequest {
                batch,
                durable,
                reply,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn get<S: Schema>(&self, key: &S::Key) -> Result<Option<S::Value>, StoreError> {
        let raw = key.encode_key();
        let db = self.engine.db()?;
        let Some(value) = db.get_pinned_cf(cf(&db, S::CF)?, &raw).map_err(io_error)? else {
            return Ok(None);
        };
        S::Value::decode_value(&value)
            .map(Some)
            .map_err(|e| corrupt(S::CF, &raw, e))
    }

    /// Visits up to `limit` records of `S` with keys in `[from, until)`, in
    /// key order, decoded. The explicit upper bound lets RocksDB stop at the
    /// end of the range instead of reading into the next topic's keys.
    fn scan<S: Schema>(
        &self,
        from: Vec<u8>,
        until: Vec<u8>,
        limit: usize,
        mut visit: impl FnMut(S::Key, S::Value),
    ) -> Result<(), StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(from.clone());
        ro.set_iterate_upper_bound(until);
        let db = self.engine.db()?;
        let mut it = db.raw_iterator_cf_opt(cf(&db, S::CF)?, ro);
        it.seek(&from);
        let mut seen = 0;
        while seen < limit {
            let (Some(key), Some(value)) = (it.key(), it.value()) else {
                break;
            };
            let k = S::Key::decode_key(key).map_err(|e| corrupt(S::CF, key, e))?;
            let v = S::Value::decode_value(value).map_err(|e| corrupt(S::CF, key, e))?;
            visit(k, v);
            seen += 1;
            it.next();
        }
        it.status().map_err(io_error)
    }
}

fn check_delayed(entry: &DelayedMessage) -> Result<(), StoreError> {
    check_name("topic", &entry.topic)?;
    if let Some(channel) = &entry.channel {
        check_name("channel", channel)?;
    }
    Ok(())
}

fn count_key(entry: &DelayedMessage) -> CountKey {
    CountKey {
        topic: entry.topic.clone(),
        channel: entry.channel.clone(),
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Records and returns the next delayed-id generation, synced, before any
/// id of it is used.
fn new_generation(engine: &Engine) -> Result<u64, StoreError> {
    let db = engine.db()?;
    let meta = cf(&db, Cf::Meta)?;
    let key = GenerationKey.encode_key();
    let last = match db.get_pinned_cf(meta, &key).map_err(io_error)? {
        Some(raw) => {
            Seq::decode_value(&raw)
                .map_err(|e| corrupt(Cf::Meta, &key, e))?
                .0
        }
        None => 0,
    };
    let next = last
        .checked_add(1)
        .filter(|&g| g < (1 << 32))
        .ok_or_else(|| StoreError::InvalidArgument("delayed-id generations exhausted".into()))?;
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(meta, &key, Seq(next).encode_value(), &opts)
        .map_err(io_error)?;
    Ok(next)
}

/// [`prefix_end`] as a store error: every prefix the store builds ends in a
/// byte below `0xFF`, so this fails only on a bug.
fn prefix_bound(prefix: &[u8]) -> Result<Vec<u8>, StoreError> {
    prefix_end(prefix).ok_or_else(|| {
        StoreError::InvalidArgument("key prefix has no upper bound (all 0xFF)".into())
    })
}

//! The RocksDB instance: how it is configured, and the slot that holds it so
//! the writer can close and reopen it.
//!
//! Why reopen: after a failed WAL write (a full disk) RocksDB stops every
//! later write with the same error and does not recover by itself, and its C
//! API has no `Resume`. Reopening replays the WAL up to the last complete
//! record and starts a new WAL file, so once space is back the store works
//! again without a broker restart. The writer does it (see `writer.rs`);
//! readers only ever clone the current handle for the length of one read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, DB,
};

use super::schema::{add_counts, Cf};
use super::{io_error, StoreError, StoreOptions};

/// How long a close or reopen waits for in-flight reads to drop their handle.
const DRAIN_READERS: Duration = Duration::from_secs(10);

fn db_options(opts: &StoreOptions) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let cache = Cache::new_lru_cache(opts.block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);

    let mut db = Options::default();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    db.set_max_background_jobs(2);
    // With several column families a WAL file is deleted only once every
    // family with data in it has flushed; `meta` and `fin` fill slowly, so
    // without a cap they would pin old WAL files and disk use would only grow.
    // Past this size RocksDB flushes the families holding the oldest WAL.
    db.set_max_total_wal_size(4 * opts.write_buffer_bytes as u64);
    // RocksDB's own info log: keep a few, small.
    db.set_keep_log_file_num(4);
    db.set_max_log_file_size(16 << 20);

    let small_buffer = opts.write_buffer_bytes.min(16 << 20);
    let cfs = Cf::ALL
        .iter()
        .map(|&cf| {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            match cf {
                Cf::Log => {
                    o.set_write_buffer_size(opts.write_buffer_bytes);
                    o.set_compression_type(DBCompressionType::Lz4);
                }
                Cf::Delayed => {
                    // Message bodies, read mostly at the head: like the log.
                    o.set_write_buffer_size(small_buffer);
                    o.set_compression_type(DBCompressionType::Lz4);
                }
                Cf::Counts => {
                    o.set_write_buffer_size(small_buffer);
                    o.set_compression_type(DBCompressionType::None);
                    o.set_merge_operator_associative("triage_add_counts", add_counts);
                }
                Cf::Fin | Cf::Meta => {
                    o.set_write_buffer_size(small_buffer);
                    o.set_compression_type(DBCompressionType::None);
                }
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        })
        .collect();
    (db, cfs)
}

fn open_db(path: &Path, opts: &StoreOptions) -> Result<DB, StoreError> {
    let (db_opts, cfs) = db_options(opts);
    DB::open_cf_descriptors(&db_opts, path, cfs).map_err(io_error)
}

/// A column family's handle, which always exists: `open_db` creates them all.
pub(crate) fn cf(db: &DB, cf: Cf) -> Result<&ColumnFamily, StoreError> {
    db.cf_handle(cf.name())
        .ok_or_else(|| StoreError::Io(format!("column family {} is missing", cf.name())))
}

#[derive(Debug)]
enum Slot {
    Open(Arc<DB>),
    /// A reopen failed (the disk is still full); the writer retries.
    Failed(StoreError),
    Closed,
}

#[derive(Debug)]
pub(crate) struct Engine {
    path: PathBuf,
    opts: StoreOptions,
    /// std `RwLock`: held only to clone or swap the handle, never across a
    /// read or an `.await`; the writer holds it for writing only while it
    /// closes and reopens, when reads have to wait anyway.
    slot: RwLock<Slot>,
}

impl Engine {
    pub(crate) fn open(path: &Path, opts: StoreOptions) -> Result<Engine, StoreError> {
        let db = open_db(path, &opts)?;
        Ok(Engine {
            path: path.to_owned(),
            opts,
            slot: RwLock::new(Slot::Open(Arc::new(db))),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The current handle, for one read or one write. Callers drop it before
    /// asking again, never holding one handle while taking another: a close
    /// or reopen waits for every handle to go.
    pub(crate) fn db(&self) -> Result<Arc<DB>, StoreError> {
        match &*self.slot.read().unwrap_or_else(PoisonError::into_inner) {
            Slot::Open(db) => Ok(Arc::clone(db)),
            Slot::Failed(e) => Err(StoreError::Io(format!(
                "store unavailable after a write error, reopening failed: {e}"
            ))),
            Slot::Closed => Err(StoreError::Closed),
        }
    }

    /// Closes the database and opens it again from disk. On failure the
    /// store stays unavailable until the next attempt succeeds.
    ///
    /// Called only by the writer thread, which may block.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if let Slot::Open(db) = std::mem::replace(&mut *slot, Slot::Closed) {
            if let Err(db) = close_when_unshared(db) {
                *slot = Slot::Open(db);
                return Err(StoreError::Io(
                    "reopen postponed: reads kept the database open".into(),
                ));
            }
        }
        match open_db(&self.path, &self.opts) {
            Ok(db) => {
                *slot = Slot::Open(Arc::new(db));
                Ok(())
            }
            Err(e) => {
                *slot = Slot::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// Closes the database for good; later reads and writes get
    /// [`StoreError::Closed`]. Called by the writer thread as it exits.
    pub(crate) fn close(&self) {
        let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
        if let Slot::Open(db) = std::mem::replace(&mut *slot, Slot::Closed) {
            if close_when_unshared(db).is_err() {
                // A read outlived the wait; the last handle closes it when it
                // ends. Nothing is lost: the WAL was synced before this.
                tracing::warn!("store: a read held the database past close");
            }
        }
    }
}

/// Drops `db` once no read holds it, so RocksDB really closes (and releases
/// its lock file) before anyone opens the directory again. New reads cannot
/// start meanwhile: the caller holds the slot's write lock.
fn close_when_unshared(mut db: Arc<DB>) -> Result<(), Arc<DB>> {
    let deadline = Instant::now() + DRAIN_READERS;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                drop(db);
                return Ok(());
            }
            Err(shared) if Instant::now() >= deadline => return Err(shared),
            Err(shared) => {
                db = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

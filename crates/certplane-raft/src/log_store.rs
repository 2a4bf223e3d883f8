//! openraft's log storage over the node's RocksDB: entries in `raft_log`, vote and pointers in
//! `raft_meta`.
//!
//! An append is acknowledged to openraft only once it is durable (DESIGN §4), without making every
//! append pay for its own fsync:
//!
//! ```text
//!  append(entries, cb) ──► WriteBatch, WAL on, no sync ──► entries readable; cb queued (in order)
//!                                                                │ mpsc
//!  fsync thread:  take every queued cb ──► flush_wal(true) ──► complete them in queue order
//! ```
//!
//! One fsync covers every batch written before it started (group commit), and because a single
//! thread completes callbacks from one FIFO queue, they complete in the order of the appends.
//!
//! Stored values are a format version byte (`1`) followed by JSON, so that the encoding can change
//! without a flag day: a node meeting a version it does not know fails with `InvalidData` instead of
//! misreading its own log.

use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{ColumnFamily, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{cf, io_error, CF_RAFT_LOG, CF_RAFT_META};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// Histogram of the duration of each WAL fsync (one per group of appends), in seconds.
pub const METRIC_LOG_FSYNC_SECONDS: &str = "certplane_raft_log_fsync_seconds";

/// The only value format this build writes and reads: `[1] ++ JSON`.
const FORMAT_V1: u8 = 1;

const META_VOTE: &[u8] = b"vote";
const META_COMMITTED: &[u8] = b"committed";
const META_LAST_PURGED: &[u8] = b"last_purged";

/// How many bytes of recently appended entries (counted as encoded) are kept decoded in memory.
const RECENT_BYTES: usize = 8 * 1024 * 1024;

/// openraft's log store, and its log reader (a clone).
///
/// Clones share the database, the fsync thread and the recent entries; the thread stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct RocksLogStore {
    db: Arc<DB>,
    flusher: Arc<WalFlusher>,
    recent: Arc<Mutex<Recent>>,
}

/// The tail of the log as appended, decoded: the state machine applies and the replication streams
/// send entries moments after they are appended, and would otherwise decode each one again from
/// RocksDB (the leader three times). Whenever it is not empty it ends at the log's last entry and
/// holds consecutive indexes: every append, truncation and purge updates it with the database.
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let follows = match self.entries.back() {
            Some((last, _)) => last.index().checked_add(1) == Some(entry.index()),
            None => true,
        };
        if !follows {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > RECENT_BYTES {
            match self.entries.pop_front() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Forget every entry from `index` on.
    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.index() >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forget every entry up to and including `index`.
    fn purge_to(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.index() <= index)
        {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries from `start` to `end` (exclusive; `None` for the end of the log), if every one of
    /// them is held.
    fn read(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|(e, _)| end.is_none_or(|end| e.index() < end))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

impl fmt::Debug for RocksLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksLogStore")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl RocksLogStore {
    /// Wraps a database opened by [`crate::db::open_db`] and starts the fsync thread.
    pub fn new(db: Arc<DB>) -> io::Result<Self> {
        let wal_db = Arc::clone(&db);
        Self::with_wal_sync(db, move || {
            wal_db
                .flush_wal(true)
                .map_err(|e| io_error("fsync of the RocksDB WAL", e))
        })
    }

    /// Like [`Self::new`] with the fsync replaced, so tests can hold, count or fail it.
    fn with_wal_sync(
        db: Arc<DB>,
        sync_wal: impl FnMut() -> io::Result<()> + Send + 'static,
    ) -> io::Result<Self> {
        // Fail at start-up, not on the first append, if the database lacks our column families.
        cf(&db, CF_RAFT_LOG)?;
        cf(&db, CF_RAFT_META)?;
        Ok(RocksLogStore {
            db,
            flusher: Arc::new(WalFlusher::spawn(sync_wal)?),
            recent: Arc::default(),
        })
    }

    /// Index of the newest stored entry, if any.
    pub fn last_index(&self) -> io::Result<Option<u64>> {
        self.edge_index(IteratorMode::End)
    }

    /// Index of the oldest stored entry (the one after the last purge), if any.
    pub fn first_index(&self) -> io::Result<Option<u64>> {
        self.edge_index(IteratorMode::Start)
    }

    fn log_cf(&self) -> io::Result<&ColumnFamily> {
        cf(&self.db, CF_RAFT_LOG)
    }

    fn edge_index(&self, mode: IteratorMode<'_>) -> io::Result<Option<u64>> {
        match self.db.iterator_cf(self.log_cf()?, mode).next() {
            None => Ok(None),
            Some(item) => {
                let (key, _) = item.map_err(|e| io_error("reading the raft log", e))?;
                decode_index(&key).map(Some)
            }
        }
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        match self
            .db
            .iterator_cf(self.log_cf()?, IteratorMode::End)
            .next()
        {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(|e| io_error("reading the raft log", e))?;
                decode_entry(&key, &value).map(Some)
            }
        }
    }

    /// The stored entries in `range`, checked to be the entries their keys say, with no hole.
    fn read_entries(&self, range: &impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => match start.checked_add(1) {
                Some(start) => start,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        // Exclusive end; `None` reads to the end of the log.
        let end = match range.end_bound() {
            Bound::Included(&end) => end.checked_add(1),
            Bound::Excluded(&end) => Some(end),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.recent().read(start, end) {
            return Ok(entries);
        }
        self.read_stored(start, end)
    }

    /// The stored entries from `start` to `end` (exclusive; `None` reads to the end of the log), read
    /// from the database and checked.
    fn read_stored(&self, start: u64, end: Option<u64>) -> io::Result<Vec<Entry>> {
        let mut read_opts = ReadOptions::default();
        if let Some(end) = end {
            // Lets RocksDB stop at the bound instead of stepping onto (and decoding) the next entry.
            read_opts.set_iterate_upper_bound(index_key(end));
        }
        let start_key = index_key(start);
        let iter = self.db.iterator_cf_opt(
            self.log_cf()?,
            read_opts,
            IteratorMode::From(&start_key, Direction::Forward),
        );

        let mut entries: Vec<Entry> = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| io_error("reading the raft log", e))?;
            let entry = decode_entry(&key, &value)?;
            // openraft only ever checks the last log id; a hole would go unnoticed until it bit.
            if let Some(previous) = entries.last().map(|e| e.index()) {
                if previous.checked_add(1) != Some(entry.index()) {
                    return Err(invalid_data(format!(
                        "hole in the raft log: index {} follows {previous}",
                        entry.index()
                    )));
                }
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let value = self
            .db
            .get_cf(cf(&self.db, CF_RAFT_META)?, key)
            .map_err(|e| io_error("reading raft metadata", e))?;
        value
            .map(|bytes| {
                decode_value(&bytes, || {
                    format!("raft metadata `{}`", String::from_utf8_lossy(key))
                })
            })
            .transpose()
    }
}

fn put_meta(db: &DB, key: &[u8], value: &impl Serialize, sync: bool) -> io::Result<()> {
    let what = || format!("raft metadata `{}`", String::from_utf8_lossy(key));
    let bytes = encode_value(value, what)?;
    let mut opts = WriteOptions::default();
    opts.set_sync(sync);
    db.put_cf_opt(cf(db, CF_RAFT_META)?, key, bytes, &opts)
        .map_err(|e| io_error(&format!("writing {}", what()), e))
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB>(&mut self, range: RB) -> io::Result<Vec<Entry>>
    where
        RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend,
    {
        self.read_entries(&range)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_meta(META_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.get_meta(META_LAST_PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        // openraft requires the vote on disk before this returns. A synced write also syncs every
        // earlier WAL record. It blocks for an fsync, so it runs off the async workers.
        let db = Arc::clone(&self.db);
        let vote = *vote;
        tokio::task::spawn_blocking(move || put_meta(&db, META_VOTE, &vote, true))
            .await
            .map_err(|e| io::Error::other(format!("saving the vote: {e}")))?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced: losing it only means re-applying from the last snapshot, and the next synced
        // write (an append's fsync, a vote) makes it durable anyway.
        put_meta(&self.db, META_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log_cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let index = entry.index();
            let value = encode_value(&entry, || format!("raft log entry {index}"))?;
            let size = value.len();
            batch.put_cf(log_cf, index_key(index), value);
            appended.push((entry, size));
        }
        // Written here so the entries are readable when `append` returns, as openraft requires; the
        // fsync thread makes them durable before `callback` is completed.
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        opts.disable_wal(false);
        let write = || {
            self.db
                .write_opt(batch, &opts)
                .map_err(|e| io_error("appending to the raft log", e))?;
            let mut recent = self.recent();
            for (entry, size) in appended {
                recent.push(entry, size);
            }
            Ok(())
        };
        self.flusher
            .write_then_enqueue(write, Box::new(move |result| callback.io_completed(result)))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let first_removed = match last_log_id {
            Some(log_id) => match log_id.index().checked_add(1) {
                Some(index) => index,
                None => return Ok(()),
            },
            None => 0,
        };
        // Not synced: if a crash undoes it, the node restarts with the conflicting tail it had, which
        // openraft truncates again. Any later acknowledged append fsyncs this deletion with it.
        self.recent().truncate_from(first_removed);
        let log_cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        // delete_range's end is exclusive, so the last possible index is deleted on its own.
        batch.delete_range_cf(log_cf, index_key(first_removed), index_key(u64::MAX));
        batch.delete_cf(log_cf, index_key(u64::MAX));
        self.db
            .write(batch)
            .map_err(|e| io_error("truncating the raft log", e))
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // The marker goes first: the WAL replays writes in order, so after a crash the entries are
        // either still there or already accounted for by `last_purged`, never missing unexplained.
        put_meta(&self.db, META_LAST_PURGED, &log_id, false)?;
        self.recent().purge_to(log_id.index());
        let log_cf = self.log_cf()?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log_cf, index_key(0), index_key(log_id.index()));
        batch.delete_cf(log_cf, index_key(log_id.index()));
        self.db
            .write(batch)
            .map_err(|e| io_error("purging the raft log", e))
    }
}

/// Called once the WAL holding an append is fsync'd (or the fsync failed).
type FlushWaiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// The handle to the fsync thread.
///
/// A dedicated OS thread rather than a task: fsync blocks, and one thread gives group commit and
/// in-order completion by construction.
struct WalFlusher {
    /// Held while an append writes its batch and queues its waiter, so queue order is WAL order even
    /// if clones were to append concurrently. `None` once shutting down.
    queue: Mutex<Option<mpsc::Sender<FlushWaiter>>>,
    thread: Option<JoinHandle<()>>,
}

impl WalFlusher {
    fn spawn(sync_wal: impl FnMut() -> io::Result<()> + Send + 'static) -> io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("raft-log-fsync".to_owned())
            .spawn(move || run_flusher(&receiver, sync_wal))?;
        Ok(WalFlusher {
            queue: Mutex::new(Some(sender)),
            thread: Some(thread),
        })
    }

    /// Runs `write`, then queues `waiter` for the next fsync. If `write` fails, `waiter` is dropped
    /// uncompleted and the error returned: openraft treats a failed append as fatal.
    fn write_then_enqueue(
        &self,
        write: impl FnOnce() -> io::Result<()>,
        waiter: FlushWaiter,
    ) -> io::Result<()> {
        let queue = self
            .queue
            .lock()
            .map_err(|_| io::Error::other("raft log fsync queue lock poisoned"))?;
        let Some(sender) = queue.as_ref() else {
            return Err(io::Error::other("raft log fsync thread is shut down"));
        };
        write()?;
        sender.send(waiter).map_err(|_| {
            io::Error::other("raft log fsync thread has stopped; appends cannot be made durable")
        })
    }
}

impl Drop for WalFlusher {
    fn drop(&mut self) {
        // Closing the channel lets the thread complete what is queued and exit. Joining means that,
        // once the store is dropped, the thread no longer holds the database open.
        drop(
            self.queue
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("raft log fsync thread panicked");
            }
        }
    }
}

fn run_flusher(queue: &mpsc::Receiver<FlushWaiter>, mut sync_wal: impl FnMut() -> io::Result<()>) {
    // After a failed fsync the kernel may have dropped the dirty pages, and a later fsync can then
    // succeed without them: nothing written before the failure can be acknowledged, ever.
    let mut failure: Option<(io::ErrorKind, String)> = None;
    while let Ok(first) = queue.recv() {
        // Everything queued now was written before this fsync starts, so one fsync covers it all.
        let mut group = vec![first];
        group.extend(queue.try_iter());
        if failure.is_none() {
            let started = Instant::now();
            let result = sync_wal();
            metrics::histogram!(METRIC_LOG_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
            if let Err(err) = result {
                tracing::error!(error = %err, appends = group.len(), "raft log WAL fsync failed");
                failure = Some((err.kind(), err.to_string()));
            }
        }
        for waiter in group {
            waiter(match &failure {
                None => Ok(()),
                Some((kind, message)) => Err(io::Error::new(
                    *kind,
                    format!("raft log WAL fsync failed: {message}"),
                )),
            });
        }
    }
}

/// Big-endian, so RocksDB's byte order is index order.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode_index(key: &[u8]) -> io::Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| invalid_data(format!("raft log key of {} bytes, expected 8", key.len())))
}

fn decode_entry(key: &[u8], value: &[u8]) -> io::Result<Entry> {
    let index = decode_index(key)?;
    let entry: Entry = decode_value(value, || format!("raft log entry {index}"))?;
    if entry.index() != index {
        return Err(invalid_data(format!(
            "raft log key {index} holds the entry of index {}",
            entry.index()
        )));
    }
    Ok(entry)
}

fn encode_value(value: &impl Serialize, what: impl FnOnce() -> String) -> io::Result<Vec<u8>> {
    let mut bytes = vec![FORMAT_V1];
    serde_json::to_writer(&mut bytes, value)
        .map_err(|e| invalid_data(format!("encoding {}: {e}", what())))?;
    Ok(bytes)
}

fn decode_value<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> io::Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, json)) => serde_json::from_slice(json)
            .map_err(|e| invalid_data(format!("{}: bad JSON in a version 1 value: {e}", what()))),
        Some((version, _)) => Err(invalid_data(format!(
            "{}: unknown value format version {version} (this build reads version {FORMAT_V1})",
            what()
        ))),
        None => Err(invalid_data(format!("{}: empty value", what()))),
    }
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests;

//! The Raft state machine: certplane-core's `apply` over RocksDB column families.
//!
//! This adapter translates and persists; it decides nothing. For each committed entry it runs
//! [`certplane_core::apply`] over a [`BatchStore`] (reads see the batch's own earlier writes), then
//! commits the data, `last_applied` and the membership in one RocksDB write before answering any
//! client. The write is not synced: the entries are durable in the log, which shares the WAL
//! (decision 0014). Snapshots are files (see `snapshot.rs`) built from a RocksDB snapshot, so a
//! snapshot is a consistent point in time while writes go on.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use certplane_core::store::KeyValue;
use certplane_core::{
    apply, Applied, EntryContext, Keyspace, Outcome, StateRead, StateStore, StoreError,
};
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{cf, io_error, CF_RAFT_META};
use crate::snapshot::{verify_file, SnapshotHeader, SnapshotReader, SnapshotWriter};
use crate::types::{LogId, SnapshotFile, SnapshotMeta, StoredMembership, TypeConfig};

const KEY_LAST_APPLIED: &[u8] = b"sm_last_applied";
const KEY_LAST_MEMBERSHIP: &[u8] = b"sm_last_membership";
/// Present while a snapshot is being installed; names the file to install again after a crash.
const KEY_INSTALLING: &[u8] = b"sm_installing";
/// Snapshot files kept on disk (the newest ones); older ones are removed after each build.
const SNAPSHOTS_KEPT: usize = 2;
/// Installing writes the data in batches of about this many bytes.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

fn encode_meta<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut out = vec![1u8];
    out.extend(
        serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
    );
    Ok(out)
}

fn decode_meta<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    match bytes.split_first() {
        Some((1, body)) => {
            serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unknown state machine metadata version",
        )),
    }
}

fn store_err(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn ks_handle(db: &DB, ks: Keyspace) -> Result<&rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(ks.name())
        .ok_or_else(|| StoreError::Io(format!("missing column family {}", ks.name())))
}

fn scan_db(
    db: &DB,
    ks: Keyspace,
    from: &[u8],
    to: &[u8],
    limit: usize,
    reverse: bool,
) -> Result<Vec<KeyValue>, StoreError> {
    let handle = ks_handle(db, ks)?;
    let mut opts = ReadOptions::default();
    opts.set_iterate_lower_bound(from.to_vec());
    if !to.is_empty() {
        opts.set_iterate_upper_bound(to.to_vec());
    }
    let mode = if reverse {
        IteratorMode::End
    } else {
        IteratorMode::From(from, Direction::Forward)
    };
    let mut out = Vec::new();
    for item in db.iterator_cf_opt(handle, opts, mode) {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item.map_err(store_err)?;
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// Read-only view of the applied state, for the API's queries.
#[derive(Clone)]
pub struct StateView {
    db: Arc<DB>,
}

impl StateRead for StateView {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(ks_handle(&self.db, ks)?, key)
            .map_err(store_err)
    }

    fn scan(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        scan_db(&self.db, ks, from, to, limit, false)
    }

    fn scan_rev(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        scan_db(&self.db, ks, from, to, limit, true)
    }

    fn count(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<usize, StoreError> {
        let handle = ks_handle(&self.db, ks)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(from.to_vec());
        if !to.is_empty() {
            opts.set_iterate_upper_bound(to.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(handle, opts);
        it.seek(from);
        let mut n = 0;
        while n < limit && it.valid() {
            n += 1;
            it.next();
        }
        it.status().map_err(store_err)?;
        Ok(n)
    }
}

/// The writes of one apply batch, readable before they are committed.
struct BatchStore<'a> {
    db: &'a DB,
    overlay: BTreeMap<(Keyspace, Vec<u8>), Option<Vec<u8>>>,
}

impl BatchStore<'_> {
    fn overlay_range(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.overlay
            .range((ks, from.to_vec())..)
            .take_while(|((k_ks, k), _)| *k_ks == ks && (to.is_empty() || k.as_slice() < to))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    fn merged(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let pending = self.overlay_range(ks, from, to);
        // Fetch enough from the DB that deletions in the overlay cannot leave the page short.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = scan_db(
            self.db,
            ks,
            from,
            to,
            limit.saturating_add(pending.len()),
            reverse,
        )?
        .into_iter()
        .collect();
        for (k, v) in pending {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        Ok(if reverse {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        })
    }

    fn into_write_batch(self) -> Result<WriteBatch, StoreError> {
        let mut batch = WriteBatch::default();
        for ((ks, key), value) in self.overlay {
            let handle = ks_handle(self.db, ks)?;
            match value {
                Some(v) => batch.put_cf(handle, key, v),
                None => batch.delete_cf(handle, key),
            }
        }
        Ok(batch)
    }
}

impl StateRead for BatchStore<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.overlay.get(&(ks, key.to_vec())) {
            return Ok(v.clone());
        }
        self.db
            .get_cf(ks_handle(self.db, ks)?, key)
            .map_err(store_err)
    }

    fn scan(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.merged(ks, from, to, limit, false)
    }

    fn scan_rev(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.merged(ks, from, to, limit, true)
    }
}

impl StateStore for BatchStore<'_> {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.overlay
            .insert((ks, key.to_vec()), Some(value.to_vec()));
    }

    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        let slot = (ks, key.to_vec());
        // A key this batch wrote and the database does not hold (an intent made and met within one
        // entry, such as the issuance queue key of a request issued by its own submission) leaves
        // nothing behind: no tombstone that the leader's queue scans would have to step over.
        if matches!(self.overlay.get(&slot), Some(Some(_))) {
            let stored = ks_handle(self.db, ks).and_then(|cf| {
                self.db
                    .get_pinned_cf(cf, key)
                    .map(|v| v.is_some())
                    .map_err(store_err)
            });
            if let Ok(false) = stored {
                self.overlay.remove(&slot);
                return;
            }
        }
        self.overlay.insert(slot, None);
    }
}

/// The state machine handed to openraft; cheap to clone (the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
    /// The last applied log index, published after each batch is durable: request handlers waiting
    /// for a request to finish and the leader's workers wake on it instead of polling.
    applied_tx: Arc<tokio::sync::watch::Sender<u64>>,
}

impl StateMachineStore {
    /// Open the state machine over `db`, keeping snapshot files in `snapshot_dir`. If a snapshot
    /// install was interrupted by a crash, it is completed here before anything else reads the state.
    pub fn open(db: Arc<DB>, snapshot_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        cf(&db, CF_RAFT_META)?;
        for ks in Keyspace::ALL {
            cf(&db, ks.name())?;
        }
        let sm = StateMachineStore {
            db,
            snapshot_dir: snapshot_dir.to_path_buf(),
            applied_tx: Arc::new(tokio::sync::watch::Sender::new(0)),
        };
        if let Some(bytes) = sm
            .db
            .get_cf(cf(&sm.db, CF_RAFT_META)?, KEY_INSTALLING)
            .map_err(|e| io_error("read", e))?
        {
            let path: PathBuf = decode_meta(&bytes)?;
            tracing::warn!(path = %path.display(), "completing an interrupted snapshot install");
            sm.install_file(&path)?;
        }
        Ok(sm)
    }

    pub fn view(&self) -> StateView {
        StateView {
            db: self.db.clone(),
        }
    }

    /// Wakes whenever more of the log has been applied (or a snapshot installed).
    pub fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn publish_applied(&self, index: Option<u64>) {
        let index = index.unwrap_or_else(|| self.applied_tx.borrow().saturating_add(1));
        self.applied_tx.send_replace(index);
    }

    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    fn read_applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let meta = cf(&self.db, CF_RAFT_META)?;
        let last = self
            .db
            .get_cf(meta, KEY_LAST_APPLIED)
            .map_err(|e| io_error("read", e))?;
        let membership = self
            .db
            .get_cf(meta, KEY_LAST_MEMBERSHIP)
            .map_err(|e| io_error("read", e))?;
        Ok((
            last.map(|b| decode_meta(&b)).transpose()?,
            membership
                .map(|b| decode_meta(&b))
                .transpose()?
                .unwrap_or_default(),
        ))
    }

    /// Write a consistent snapshot of the applied state to `dest` (fsync'd). Used both for Raft
    /// snapshots and for the operator's snapshot download.
    pub fn export_to(&self, dest: &Path) -> io::Result<(SnapshotHeader, u64)> {
        let snap = self.db.snapshot();
        let meta_cf = cf(&self.db, CF_RAFT_META)?;
        let last_log_id: Option<LogId> = snap
            .get_cf(meta_cf, KEY_LAST_APPLIED)
            .map_err(|e| io_error("read", e))?
            .map(|b| decode_meta(&b))
            .transpose()?;
        let last_membership: StoredMembership = snap
            .get_cf(meta_cf, KEY_LAST_MEMBERSHIP)
            .map_err(|e| io_error("read", e))?
            .map(|b| decode_meta(&b))
            .transpose()?
            .unwrap_or_default();
        let built_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let header = SnapshotHeader {
            v: 1,
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
            },
            built_at_ms,
        };
        let tmp = dest.with_extension("partial");
        let mut writer = SnapshotWriter::create(&tmp, &header)?;
        for ks in Keyspace::ALL {
            for item in snap.iterator_cf(cf(&self.db, ks.name())?, IteratorMode::Start) {
                let (k, v) = item.map_err(|e| io_error("snapshot read", e))?;
                writer.write_record(ks.name(), &k, &v)?;
            }
        }
        let (_, records) = writer.finish()?;
        std::fs::rename(&tmp, dest)?;
        Ok((header, records))
    }

    fn snapshot_path(&self, meta: &SnapshotMeta) -> PathBuf {
        let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        self.snapshot_dir.join(format!("snap-{index:020}"))
    }

    fn snapshot_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.snapshot_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("snap-") && !n.contains('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    fn prune_snapshots(&self) -> io::Result<()> {
        let files = self.snapshot_files()?;
        if files.len() > SNAPSHOTS_KEPT {
            for old in &files[..files.len() - SNAPSHOTS_KEPT] {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(())
    }

    /// Install `path` as this node's current snapshot and state (blocking): moves the file into the
    /// snapshot directory under its canonical name, then installs it.
    pub fn install_snapshot_file(&self, path: &Path) -> io::Result<()> {
        let header = SnapshotReader::open(path)?.header;
        let dest = self.snapshot_path(&header.meta);
        if path != dest {
            std::fs::rename(path, &dest)?;
        }
        self.install_file(&dest)?;
        self.prune_snapshots()
    }

    /// Replace the whole state with the snapshot file's content (blocking).
    fn install_file(&self, path: &Path) -> io::Result<()> {
        let (header, records) = verify_file(path)?;
        let meta_cf = cf(&self.db, CF_RAFT_META)?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .put_cf_opt(
                meta_cf,
                KEY_INSTALLING,
                encode_meta(&path.to_path_buf())?,
                &sync,
            )
            .map_err(|e| io_error("write", e))?;
        for ks in Keyspace::ALL {
            let handle = cf(&self.db, ks.name())?;
            let mut batch = WriteBatch::default();
            for item in self.db.iterator_cf(handle, IteratorMode::Start) {
                let (k, _) = item.map_err(|e| io_error("read", e))?;
                batch.delete_cf(handle, k);
                if batch.size_in_bytes() > INSTALL_BATCH_BYTES {
                    self.db
                        .write(std::mem::take(&mut batch))
                        .map_err(|e| io_error("write", e))?;
                }
            }
            self.db.write(batch).map_err(|e| io_error("write", e))?;
        }
        let mut reader = SnapshotReader::open(path)?;
        let mut batch = WriteBatch::default();
        while let Some((name, key, value)) = reader.next_record()? {
            let ks = Keyspace::from_name(&name).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot names unknown keyspace {name}"),
                )
            })?;
            batch.put_cf(cf(&self.db, ks.name())?, key, value);
            if batch.size_in_bytes() > INSTALL_BATCH_BYTES {
                self.db
                    .write(std::mem::take(&mut batch))
                    .map_err(|e| io_error("write", e))?;
            }
        }
        match &header.meta.last_log_id {
            Some(id) => batch.put_cf(meta_cf, KEY_LAST_APPLIED, encode_meta(id)?),
            None => batch.delete_cf(meta_cf, KEY_LAST_APPLIED),
        }
        batch.put_cf(
            meta_cf,
            KEY_LAST_MEMBERSHIP,
            encode_meta(&header.meta.last_membership)?,
        );
        batch.delete_cf(meta_cf, KEY_INSTALLING);
        self.db
            .write_opt(batch, &sync)
            .map_err(|e| io_error("write", e))?;
        tracing::info!(records, last_log_id = ?header.meta.last_log_id, "installed snapshot");
        Ok(())
    }
}

fn fatal(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("state machine cannot apply the log: {e}"),
    )
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> io::Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>> {
        let sm = self.clone();
        let started = Instant::now();
        let snapshot = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let tmp = sm
                .snapshot_dir
                .join(format!("build-{}", std::process::id()));
            let (header, records) = sm.export_to(&tmp)?;
            let path = sm.snapshot_path(&header.meta);
            std::fs::rename(&tmp, &path)?;
            sm.prune_snapshots()?;
            tracing::info!(records, path = %path.display(), "built snapshot");
            Ok(openraft::Snapshot {
                meta: header.meta,
                snapshot: SnapshotFile { path },
            })
        })
        .await
        .map_err(io::Error::other)??;
        metrics::histogram!("certplane_raft_snapshot_build_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        self.read_applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let started = Instant::now();
        let db = self.db.clone();
        let mut store = BatchStore {
            db: &db,
            overlay: BTreeMap::new(),
        };
        let mut responses = Vec::new();
        let mut last_applied = None;
        let mut last_membership = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let index = log_id.index();
            let outcome = match &entry.payload {
                EntryPayload::Blank => Outcome {
                    index,
                    result: Ok(Applied::Internal),
                    replayed: false,
                },
                EntryPayload::Normal(proposal) => {
                    let ctx = EntryContext {
                        index,
                        term: log_id.committed_leader_id().term,
                        part: 0,
                    };
                    apply(&mut store, ctx, proposal).map_err(fatal)?
                }
                EntryPayload::Membership(m) => {
                    last_membership = Some(StoredMembership::new(Some(log_id), m.clone()));
                    Outcome {
                        index,
                        result: Ok(Applied::Internal),
                        replayed: false,
                    }
                }
            };
            last_applied = Some(log_id);
            if let Some(responder) = responder {
                responses.push((responder, outcome));
            }
        }
        let mut batch = store.into_write_batch().map_err(fatal)?;
        let meta_cf = cf(&db, CF_RAFT_META)?;
        if let Some(id) = &last_applied {
            batch.put_cf(meta_cf, KEY_LAST_APPLIED, encode_meta(id)?);
        }
        if let Some(m) = &last_membership {
            batch.put_cf(meta_cf, KEY_LAST_MEMBERSHIP, encode_meta(m)?);
        }
        let write_db = db.clone();
        tokio::task::spawn_blocking(move || {
            // Not synced (decision 0014): these entries are already durable in the log, and the log
            // shares this database's one WAL, so any later fsync (the next append's) covers this
            // write too. A machine crash can lose only a suffix of the WAL; `last_applied` then sits
            // lower and openraft applies those entries again from the log.
            let mut opts = WriteOptions::default();
            opts.set_sync(false);
            write_db
                .write_opt(batch, &opts)
                .map_err(|e| io_error("state machine write", e))
        })
        .await
        .map_err(io::Error::other)??;
        metrics::histogram!("certplane_raft_apply_seconds").record(started.elapsed().as_secs_f64());
        for (responder, outcome) in responses {
            responder.send(outcome);
        }
        if let Some(id) = last_applied {
            self.publish_applied(Some(id.index()));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        let sm = self.clone();
        let dest = self.snapshot_path(meta);
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            if snapshot.path != dest {
                std::fs::rename(&snapshot.path, &dest)?;
            }
            sm.install_file(&dest)?;
            sm.prune_snapshots()
        })
        .await
        .map_err(io::Error::other)??;
        self.publish_applied(meta.last_log_id.as_ref().map(|id| id.index()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>> {
        let Some(path) = self.snapshot_files()?.pop() else {
            return Ok(None);
        };
        let header = SnapshotReader::open(&path)?.header;
        Ok(Some(openraft::Snapshot {
            meta: header.meta,
            snapshot: SnapshotFile { path },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_and_deleted_in_one_batch_leaves_no_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open_db(dir.path()).unwrap();
        let queue = ks_handle(&db, Keyspace::IssuanceQueue).unwrap();
        db.put_cf(queue, b"stored", b"0").unwrap();
        let mut store = BatchStore {
            db: &db,
            overlay: BTreeMap::new(),
        };
        // Made and met within the batch: nothing to write.
        store.put(Keyspace::IssuanceQueue, b"fresh", b"1");
        store.delete(Keyspace::IssuanceQueue, b"fresh");
        // Stored before the batch: its deletion must reach the database.
        store.put(Keyspace::IssuanceQueue, b"stored", b"2");
        store.delete(Keyspace::IssuanceQueue, b"stored");
        // Deleted, then written again: the last write wins.
        store.put(Keyspace::IssuanceQueue, b"again", b"3");
        store.delete(Keyspace::IssuanceQueue, b"again");
        store.put(Keyspace::IssuanceQueue, b"again", b"4");
        for key in [&b"fresh"[..], b"stored"] {
            assert_eq!(store.get(Keyspace::IssuanceQueue, key).unwrap(), None);
        }
        assert_eq!(
            store.scan(Keyspace::IssuanceQueue, b"", b"", 10).unwrap(),
            vec![(b"again".to_vec(), b"4".to_vec())]
        );
        let batch = store.into_write_batch().unwrap();
        assert_eq!(batch.len(), 2, "a delete of `stored` and a put of `again`");
        db.write(batch).unwrap();
        let view = StateView { db: db.clone() };
        assert_eq!(
            view.scan(Keyspace::IssuanceQueue, b"", b"", 10).unwrap(),
            vec![(b"again".to_vec(), b"4".to_vec())]
        );
    }

    #[test]
    fn count_agrees_with_scan_over_every_range() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open_db(dir.path()).unwrap();
        let handle = ks_handle(&db, Keyspace::ByExpiry).unwrap();
        for t in [0u64, 5, 5, 9, 10, 200, u64::MAX] {
            for id in ["a", "b"] {
                let mut key = t.to_be_bytes().to_vec();
                key.extend_from_slice(id.as_bytes());
                db.put_cf(handle, &key, b"").unwrap();
            }
        }
        let view = StateView { db: db.clone() };
        let bounds: Vec<Vec<u8>> = [0u64, 1, 5, 6, 10, 11, 300, u64::MAX]
            .iter()
            .map(|t| t.to_be_bytes().to_vec())
            .chain([Vec::new()])
            .collect();
        for from in &bounds {
            for to in &bounds {
                for limit in [0, 1, 3, usize::MAX] {
                    let scanned = view
                        .scan(Keyspace::ByExpiry, from, to, limit)
                        .unwrap()
                        .len();
                    let counted = view.count(Keyspace::ByExpiry, from, to, limit).unwrap();
                    assert_eq!(counted, scanned, "from {from:?} to {to:?} limit {limit}");
                }
            }
        }
        assert_eq!(
            view.count(Keyspace::ByExpiry, &[], &[], usize::MAX)
                .unwrap(),
            12
        );
    }
}

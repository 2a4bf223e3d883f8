//! Test-only in-memory Raft log and a file-snapshot state machine, so the network can be exercised
//! end to end before the RocksDB stores exist. Not a model for production code: no durability.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use certplane_core::Outcome;
use certplane_raft::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use certplane_raft::{SnapshotFile, TypeConfig};
use futures::{Stream, TryStreamExt};
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder, Snapshot,
};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct LogInner {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

/// The Raft log, in memory.
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<LogInner>>,
}

impl MemLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap()
    }
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = self.lock();
            for entry in entries {
                inner.entries.insert(entry.log_id.index, entry);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.lock().entries.retain(|index, _| *index < from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = self.lock();
        inner.entries.retain(|index, _| *index > log_id.index);
        inner.last_purged = Some(log_id);
        Ok(())
    }
}

/// What the test state machine keeps: how many proposals it applied, plus ballast so snapshots span
/// several 1 MiB chunks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub writes: u64,
    pub ballast: String,
}

/// A state machine whose snapshots are files, like the real one.
#[derive(Clone)]
pub struct FileSm {
    pub data: Arc<Mutex<SmData>>,
    snapshot_dir: PathBuf,
    current: Arc<Mutex<Option<(SnapshotMeta, PathBuf)>>>,
    seq: Arc<Mutex<u64>>,
}

impl FileSm {
    pub fn new(snapshot_dir: PathBuf, ballast_bytes: usize) -> Self {
        std::fs::create_dir_all(&snapshot_dir).unwrap();
        let data = SmData {
            ballast: "x".repeat(ballast_bytes),
            ..Default::default()
        };
        FileSm {
            data: Arc::new(Mutex::new(data)),
            snapshot_dir,
            current: Arc::default(),
            seq: Arc::default(),
        }
    }

    pub fn writes(&self) -> u64 {
        self.data.lock().unwrap().writes
    }

    fn next_path(&self) -> PathBuf {
        let mut seq = self.seq.lock().unwrap();
        *seq += 1;
        self.snapshot_dir.join(format!("snap-{}.json", *seq))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for FileSm {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let data = self.data.lock().unwrap().clone();
        let path = self.next_path();
        std::fs::write(&path, serde_json::to_vec(&data)?)?;
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
        };
        *self.current.lock().unwrap() = Some((meta.clone(), path.clone()));
        Ok(Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        })
    }
}

impl RaftStateMachine<TypeConfig> for FileSm {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let data = self.data.lock().unwrap();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let outcome = {
                let mut data = self.data.lock().unwrap();
                data.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(_) => data.writes += 1,
                    EntryPayload::Membership(m) => {
                        data.membership = StoredMembership::new(Some(entry.log_id), m)
                    }
                }
                Outcome {
                    index: entry.log_id.index,
                    ..Default::default()
                }
            };
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// Follows the contract of `grpc.rs`: the received file is moved out of the incoming directory.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let path = self.next_path();
        std::fs::rename(&snapshot.path, &path)?;
        let data: SmData = serde_json::from_slice(&std::fs::read(&path)?)?;
        *self.data.lock().unwrap() = data;
        *self.current.lock().unwrap() = Some((meta.clone(), path));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        Ok(self
            .current
            .lock()
            .unwrap()
            .as_ref()
            .map(|(meta, path)| Snapshot {
                meta: meta.clone(),
                snapshot: SnapshotFile { path: path.clone() },
            }))
    }
}

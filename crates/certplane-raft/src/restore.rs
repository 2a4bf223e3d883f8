//! Starting a new cluster from a snapshot (`certplane operator restore`).
//!
//! Like an etcd snapshot restore, this runs once per member of the new cluster, offline, with the same
//! snapshot file and member list. Each member's data directory receives the snapshot's state as its
//! own Raft snapshot at the snapshot's log index, with a fresh membership (the new members), and a log
//! purged up to that index. The nodes then start without `--initial-cluster`: they already share a
//! membership, elect a leader and continue at the next index. Every member restores the same bytes, so
//! their state digests and audit chains agree from the first moment.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::vote::RaftLeaderIdExt;
use openraft::{Membership, RaftTypeConfig};

use crate::db::open_db;
use crate::log_store::RocksLogStore;
use crate::sm_store::StateMachineStore;
use crate::snapshot::{verify_file, SnapshotHeader, SnapshotReader, SnapshotWriter};
use crate::types::{LogId, NodeId, NodeInfo, SnapshotMeta, StoredMembership, TypeConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub records: u64,
    pub index: u64,
}

/// Prepare `data_dir` (which must not hold a node yet) as a member of a new cluster whose members
/// are `members` (id -> cluster address), from `snapshot`.
pub async fn restore_data_dir(
    snapshot: &Path,
    data_dir: &Path,
    members: &BTreeMap<NodeId, String>,
) -> io::Result<RestoreReport> {
    if data_dir.join("db").exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already holds a node; restore needs an empty data directory",
                data_dir.display()
            ),
        ));
    }
    let Some(&first) = members.keys().next() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the new cluster needs at least one member",
        ));
    };
    let (old, _) = verify_file(snapshot)?;
    let index = old
        .meta
        .last_log_id
        .as_ref()
        .map(|l| l.index())
        .unwrap_or(0);
    // Term 0 sorts below every term the new cluster will elect, so no new leader's entries can be
    // confused with the restored position.
    let log_id: LogId = LogId::new(
        <TypeConfig as RaftTypeConfig>::LeaderId::new_committed(0, first),
        index,
    );
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, NodeInfo> = members
        .iter()
        .map(|(id, addr)| {
            (
                *id,
                NodeInfo {
                    cluster_addr: addr.clone(),
                    api_addr: String::new(),
                },
            )
        })
        .collect();
    let membership = Membership::new(vec![voters], nodes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    };

    std::fs::create_dir_all(data_dir.join("snapshots"))?;
    let staged = data_dir.join("snapshots").join("restore-staging");
    let header = SnapshotHeader {
        v: 1,
        meta,
        built_at_ms: old.built_at_ms,
    };
    let mut writer = SnapshotWriter::create(&staged, &header)?;
    let mut reader = SnapshotReader::open(snapshot)?;
    while let Some((ks, key, value)) = reader.next_record()? {
        writer.write_record(&ks, &key, &value)?;
    }
    let (_, records) = writer.finish()?;

    let db = open_db(&data_dir.join("db"))?;
    let sm = StateMachineStore::open(db.clone(), &data_dir.join("snapshots"))?;
    sm.install_snapshot_file(&staged)?;
    let mut log = RocksLogStore::new(db.clone())?;
    log.save_committed(Some(log_id)).await?;
    log.purge(log_id).await?;
    // The node has not run yet: make the purge marker and committed index durable before it does.
    db.flush_wal(true)
        .map_err(|e| crate::db::io_error("syncing the restored node", e))?;
    Ok(RestoreReport { records, index })
}

//! The openraft type configuration and the types shared by storage and network.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// Where a member can be reached. Stored in the membership config, so it is replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// host:port of the node's gRPC (node-to-node) listener.
    pub cluster_addr: String,
    /// Base URL of the node's HTTP API, e.g. `http://127.0.0.1:8200`.
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster={} api={}", self.cluster_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// certplane's Raft types: application data is a core `Proposal`, the response its `Outcome`.
    pub TypeConfig:
        D = certplane_core::Proposal,
        R = certplane_core::Outcome,
        NodeId = NodeId,
        Node = NodeInfo,
);

/// A snapshot as it moves through openraft: a file on disk, never a buffer in memory.
///
/// The file is a sequence of framed records (see `snapshot.rs`); it is built from a RocksDB snapshot,
/// streamed to followers in bounded chunks, and installed by reading it record by record.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

pub type Raft<SM> = openraft::Raft<TypeConfig, SM>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;

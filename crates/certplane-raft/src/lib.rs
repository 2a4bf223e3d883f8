//! certplane's replication layer: openraft over RocksDB, with tonic gRPC between nodes.

pub mod types;

pub use types::{NodeId, NodeInfo, SnapshotFile, TypeConfig};

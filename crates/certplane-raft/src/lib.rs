//! certplane's replication layer: openraft over RocksDB, with tonic gRPC between nodes.

pub mod codec;
pub mod db;
pub mod forward;
pub mod grpc;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod restore;
pub mod sm_store;
pub mod snapshot;
pub mod tls;
pub mod types;

pub use types::{NodeId, NodeInfo, SnapshotFile, TypeConfig};

//! A running Raft node: storage, openraft, the gRPC listener and the forwarder, wired together.
//!
//! ```text
//!   RaftNode ─ raft: openraft::Raft ─┬─ RocksLogStore ─┐
//!            │                       └─ StateMachineStore ─ one RocksDB (column families)
//!            ├─ forwarder ── PeerChannels (one cached channel per peer) ── other nodes' gRPC
//!            └─ gRPC server (RaftGrpcService) ◄── other nodes
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certplane_core::{Outcome, Proposal};
use openraft::async_runtime::WatchReceiver;
use openraft::{Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::open_db;
use crate::forward::{ForwardError, ForwardRequest, ForwardResponse, Forwarder};
use crate::grpc::{serve, RaftGrpcService};
use crate::log_store::RocksLogStore;
use crate::network::{NetworkFactory, PeerChannels};
use crate::sm_store::{StateMachineStore, StateView};
use crate::tls::ClusterTls;
use crate::types::{NodeId, NodeInfo, Raft};

pub type CertRaft = Raft<StateMachineStore>;

/// Open the node's RocksDB. A previous instance in this process (a restart) may still be releasing
/// the lock for a moment while its last handles drop, so a held lock is retried briefly.
async fn open_db_retrying(dir: PathBuf) -> io::Result<Arc<rocksdb::DB>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let path = dir.clone();
        match tokio::task::spawn_blocking(move || open_db(&path))
            .await
            .map_err(io::Error::other)?
        {
            Ok(db) => return Ok(db),
            Err(e) if e.to_string().contains("lock") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How a node is started. Timings are milliseconds.
#[derive(Clone)]
pub struct NodeOptions {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// How the other members reach this node (stored in the membership).
    pub advertise: NodeInfo,
    pub tls: Option<ClusterTls>,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot and purge the log after this many entries.
    pub snapshot_every: u64,
    /// Log entries kept behind the latest snapshot, so slightly lagging followers catch up by log.
    pub keep_after_snapshot: u64,
    pub channels: Option<PeerChannels>,
}

impl NodeOptions {
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>, advertise: NodeInfo) -> Self {
        NodeOptions {
            id,
            data_dir: data_dir.into(),
            advertise,
            tls: None,
            heartbeat_ms: 20,
            election_min_ms: 80,
            election_max_ms: 140,
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            channels: None,
        }
    }

    fn raft_config(&self) -> io::Result<Config> {
        let config = Config {
            cluster_name: "certplane".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            // Snapshots of large inventories take a while to ship on a busy node.
            install_snapshot_timeout: 10_000,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }
}

/// One member's line in the cluster view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub cluster_addr: String,
    pub api_addr: String,
    pub voter: bool,
    /// Highest log index known replicated to the member (known only on the leader).
    pub matched_index: Option<u64>,
    /// How far the member is behind the leader's last log index (leader only).
    pub lag: Option<u64>,
}

/// This node's view of the cluster, from openraft's metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    pub running: bool,
}

pub struct RaftNode {
    pub id: NodeId,
    pub raft: CertRaft,
    pub sm: StateMachineStore,
    pub log: RocksLogStore,
    pub forwarder: Forwarder<StateMachineStore>,
    pub advertise: NodeInfo,
    data_dir: PathBuf,
    shutdown_tx: watch::Sender<bool>,
    grpc_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RaftNode {
    /// Open storage under `opts.data_dir`, start openraft and serve gRPC on `cluster_listener`.
    pub async fn start(
        opts: NodeOptions,
        cluster_listener: TcpListener,
    ) -> io::Result<Arc<RaftNode>> {
        std::fs::create_dir_all(&opts.data_dir)?;
        let config = Arc::new(opts.raft_config()?);
        let db_dir = opts.data_dir.join("db");
        let snapshot_dir = opts.data_dir.join("snapshots");
        let incoming_dir = opts.data_dir.join("snapshots-incoming");
        let db = open_db_retrying(db_dir).await?;
        let log = RocksLogStore::new(db.clone())?;
        let sm_db = db.clone();
        let sm = tokio::task::spawn_blocking(move || StateMachineStore::open(sm_db, &snapshot_dir))
            .await
            .map_err(io::Error::other)??;
        let channels = opts
            .channels
            .clone()
            .unwrap_or_else(|| PeerChannels::new(opts.tls.clone()));
        let network = NetworkFactory::new(opts.id, channels.clone());
        let raft = openraft::Raft::new(opts.id, config, network, log.clone(), sm.clone())
            .await
            .map_err(|e| io::Error::other(format!("starting raft: {e}")))?;
        let service = RaftGrpcService::new(raft.clone(), incoming_dir)?;
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        let tls = opts.tls.clone();
        let id = opts.id;
        let grpc_task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = serve(cluster_listener, service, tls, shutdown).await {
                tracing::error!(node = id, error = %e, "cluster gRPC server stopped");
            }
        });
        let forwarder = Forwarder::new(raft.clone(), opts.id, channels);
        let node = Arc::new(RaftNode {
            id: opts.id,
            raft,
            sm,
            log,
            forwarder,
            advertise: opts.advertise.clone(),
            data_dir: opts.data_dir.clone(),
            shutdown_tx,
            grpc_task: std::sync::Mutex::new(Some(grpc_task)),
        });
        crate::metrics::spawn_raft_metrics(node.raft.clone(), node.shutdown_tx.subscribe());
        Ok(node)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Form a new cluster with `members` (static bootstrap). Harmless on a node that already has a
    /// membership: it answers `Ok(false)` then.
    pub async fn bootstrap(
        &self,
        members: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<bool, ForwardError> {
        if self.is_initialized().await {
            return Ok(false);
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Ok(false),
            Err(e) => Err(ForwardError::Raft(e.to_string())),
        }
    }

    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Replicate a proposal through the leader and return its outcome once applied.
    pub async fn write(&self, proposal: Proposal) -> Result<Outcome, ForwardError> {
        let started = std::time::Instant::now();
        let answer = self.forwarder.submit(ForwardRequest::Write(proposal)).await;
        metrics::histogram!("certplane_raft_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match answer? {
            ForwardResponse::Written(outcome) => Ok(outcome),
            other => Err(ForwardError::Raft(format!(
                "unexpected answer to a write: {other:?}"
            ))),
        }
    }

    /// Wait until reads from this node's state machine are linearizable.
    pub async fn read_barrier(&self) -> Result<u64, ForwardError> {
        self.forwarder.read_barrier().await
    }

    pub async fn add_member(
        &self,
        id: NodeId,
        node: NodeInfo,
        voter: bool,
    ) -> Result<u64, ForwardError> {
        let req = ForwardRequest::AddMember { id, node, voter };
        match self
            .forwarder
            .submit_within(req, Duration::from_secs(60))
            .await?
        {
            ForwardResponse::MembershipChanged { log_index } => Ok(log_index),
            other => Err(ForwardError::Raft(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Update how this cluster reaches member `id` (e.g. record its API URL).
    pub async fn set_node_info(&self, node: NodeInfo) -> Result<u64, ForwardError> {
        match self
            .forwarder
            .submit(ForwardRequest::SetNode { id: self.id, node })
            .await?
        {
            ForwardResponse::MembershipChanged { log_index } => Ok(log_index),
            other => Err(ForwardError::Raft(format!("unexpected answer: {other:?}"))),
        }
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<u64, ForwardError> {
        match self
            .forwarder
            .submit_within(ForwardRequest::RemoveMember { id }, Duration::from_secs(30))
            .await?
        {
            ForwardResponse::MembershipChanged { log_index } => Ok(log_index),
            other => Err(ForwardError::Raft(format!("unexpected answer: {other:?}"))),
        }
    }

    /// Hand leadership to `to`, or to the most caught-up other voter when `None`.
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<NodeId, ForwardError> {
        let status = self.status();
        let target = match to {
            Some(t) => t,
            None => status
                .members
                .iter()
                .filter(|m| m.voter && Some(m.id) != status.leader)
                .max_by_key(|m| (m.matched_index, std::cmp::Reverse(m.id)))
                .map(|m| m.id)
                .ok_or_else(|| {
                    ForwardError::BadRequest("there is no other voter to take over".into())
                })?,
        };
        if !status.members.iter().any(|m| m.id == target && m.voter) {
            return Err(ForwardError::BadRequest(format!(
                "node {target} is not a voter of this cluster"
            )));
        }
        match self
            .forwarder
            .submit(ForwardRequest::TransferLeader { to: target })
            .await?
        {
            ForwardResponse::TransferStarted => Ok(target),
            other => Err(ForwardError::Raft(format!("unexpected answer: {other:?}"))),
        }
    }

    pub fn view(&self) -> StateView {
        self.sm.view()
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index;
        let members = membership
            .nodes()
            .map(|(id, info)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|l| l.as_ref().map(|l| l.index()));
                let matched_index = matched.flatten();
                let lag = matched.map(|mi| last.unwrap_or(0).saturating_sub(mi.unwrap_or(0)));
                MemberStatus {
                    id: *id,
                    cluster_addr: info.cluster_addr.clone(),
                    api_addr: info.api_addr.clone(),
                    voter: voters.contains(id),
                    matched_index,
                    lag,
                }
            })
            .collect();
        NodeStatus {
            id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index()),
            applied_index: m.last_applied.as_ref().map(|l| l.index()),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
            purged_index: m.purged.as_ref().map(|l| l.index()),
            members,
            running: m.running_state.is_ok(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Ready for the load balancer: part of a cluster, a leader is known, and this node has applied
    /// what it knows to be committed.
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let in_cluster = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        let caught_up = m.last_applied.as_ref().map(|l| l.index())
            >= m.local_committed.as_ref().map(|l| l.index());
        m.running_state.is_ok() && in_cluster && m.current_leader.is_some() && caught_up
    }

    /// Stop openraft and the gRPC server; the RocksDB handle is released when the last clone drops.
    pub async fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.id, error = %e, "raft shutdown");
        }
        let task = self.grpc_task.lock().ok().and_then(|mut t| t.take());
        if let Some(mut task) = task {
            // Graceful shutdown waits for open streams (a leader's append stream never ends on its own).
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

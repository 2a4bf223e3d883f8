//! Harness for network tests: in-process nodes on `127.0.0.1:0`, optional mutual TLS from a
//! throw-away CA. Waits on Raft metrics, never on fixed sleeps.

#![allow(dead_code)] // each test binary uses a different part

pub mod mem_store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certplane_core::{Command, Principal, Proposal, Timestamp};
use certplane_raft::forward::Forwarder;
use certplane_raft::grpc::{self, RaftGrpcService};
use certplane_raft::network::{NetworkFactory, PeerChannels};
use certplane_raft::tls::ClusterTls;
use certplane_raft::types::Raft;
use certplane_raft::{NodeId, NodeInfo};
use mem_store::{FileSm, MemLog};
use tokio::sync::oneshot;

pub type TestRaft = Raft<FileSm>;

/// A CA and node certificates (SANs `localhost`, `node-N`, `127.0.0.1`), generated per test.
pub struct TestPki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "certplane test cluster CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        TestPki {
            ca_pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    pub fn node_tls(&self, id: NodeId) -> ClusterTls {
        let names = vec![
            "localhost".to_string(),
            format!("node-{id}"),
            "127.0.0.1".to_string(),
        ];
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClusterTls::from_pem(
            self.ca_pem.clone().into_bytes(),
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )
        .unwrap()
    }
}

pub fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "certplane-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Generous: snapshot transfers in tests carry several MiB.
        install_snapshot_timeout: 2000,
        // Snapshots only when a test asks for one.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        // Exercise the PreVote RPC too.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

/// One in-process node: Raft, its gRPC server and a forwarder.
pub struct TestNode {
    pub id: NodeId,
    pub info: NodeInfo,
    pub raft: TestRaft,
    pub sm: FileSm,
    pub forwarder: Forwarder<FileSm>,
    pub incoming_dir: std::path::PathBuf,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestNode {
    /// Starts a node with its data under `dir`. `ballast` pads the state machine (and so snapshots).
    pub async fn start(
        id: NodeId,
        dir: &Path,
        tls: Option<ClusterTls>,
        ballast: usize,
    ) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let info = NodeInfo {
            cluster_addr: addr.to_string(),
            api_addr: format!("http://127.0.0.1:{}", 20000 + id),
        };
        let channels = PeerChannels::new(tls.clone());
        let sm = FileSm::new(dir.join(format!("n{id}/snapshots")), ballast);
        let network = NetworkFactory::new(id, channels.clone());
        let raft = Raft::new(id, raft_config(), network, MemLog::default(), sm.clone())
            .await
            .unwrap();
        let incoming_dir = dir.join(format!("n{id}/incoming"));
        let service = RaftGrpcService::new(raft.clone(), &incoming_dir).unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            grpc::serve(listener, service, tls, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
        let forwarder = Forwarder::new(raft.clone(), id, channels);
        TestNode {
            id,
            info,
            raft,
            sm,
            forwarder,
            incoming_dir,
            stop_server: Some(stop_tx),
            server: Some(server),
        }
    }

    /// Stops the gRPC server and Raft: the node looks dead to its peers.
    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let _ = self.raft.shutdown().await;
    }

    pub async fn wait_leader(&self, timeout: Duration) -> NodeId {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .unwrap_or_else(|e| panic!("node {}: no leader: {e}", self.id));
        metrics.current_leader.unwrap()
    }

    pub async fn wait_applied(&self, index: u64, timeout: Duration) {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .unwrap_or_else(|e| panic!("node {}: not applied up to {index}: {e}", self.id));
    }
}

/// Starts `ids` and initialises a cluster with the first one as its only voter.
pub async fn start_nodes(
    ids: &[NodeId],
    dir: &Path,
    pki: Option<&TestPki>,
    ballast: usize,
) -> BTreeMap<NodeId, TestNode> {
    let mut nodes = BTreeMap::new();
    for &id in ids {
        let tls = pki.map(|p| p.node_tls(id));
        nodes.insert(id, TestNode::start(id, dir, tls, ballast).await);
    }
    nodes
}

pub fn noop_proposal(n: i64, key: Option<&str>) -> Proposal {
    Proposal::new(
        Timestamp::from_millis(1_700_000_000_000 + n),
        Principal::bootstrap(),
        Command::Noop,
    )
    .with_idempotency(key.map(str::to_string), None)
}

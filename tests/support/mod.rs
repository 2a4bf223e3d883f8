//! In-process cluster harness: real nodes (RocksDB, openraft, gRPC, HTTP API) on 127.0.0.1:0 ports,
//! driven only through the HTTP API, with links between nodes that can be cut.

#![allow(dead_code)]

pub mod aws;
pub mod proxy;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use certplane_raft::network::{ChannelConfig, PeerChannels};
use certplane_server::config::{RaftTiming, ServerConfig, DEFAULT_MAX_BODY_BYTES};
use certplane_server::server::{start_node_with, NodeHandle};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use proxy::LinkProxy;

/// Poll `check` every 20 ms until it yields `Some`, or fail the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

pub struct TestNode {
    pub id: u64,
    pub api_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub config: ServerConfig,
    pub handle: Option<NodeHandle>,
}

impl TestNode {
    pub fn url(&self) -> String {
        let scheme = if self.config.api_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.api_addr)
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
    /// links[(from, to)]
    pub links: HashMap<(u64, u64), LinkProxy>,
    pub token: String,
    pub http: reqwest::Client,
}

/// The process-wide TLS provider, and logs when `CERTPLANE_TEST_LOG` is set (e.g. `openraft=info`).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(filter) = std::env::var("CERTPLANE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl TestCluster {
    /// Start `n` nodes with `tune` applied to each config, bootstrap and initialise the cluster.
    pub async fn start(n: usize, tune: impl Fn(&mut ServerConfig)) -> TestCluster {
        Self::start_with_client(n, tune, None).await
    }

    /// As [`TestCluster::start`], talking to the nodes through `http` (e.g. one that trusts the
    /// API's TLS certificate).
    pub async fn start_with_client(
        n: usize,
        tune: impl Fn(&mut ServerConfig),
        http: Option<reqwest::Client>,
    ) -> TestCluster {
        let (mut cluster, listeners) = Self::prepare(n, tune).await;
        if let Some(http) = http {
            cluster.http = http;
        }
        for (i, (api, c)) in listeners.into_iter().enumerate() {
            cluster.boot(i as u64 + 1, api, c).await;
        }
        let first = cluster.node(1).url();
        let body: Value = wait_for(
            "cluster initialisation",
            Duration::from_secs(20),
            || async {
                let resp = cluster
                    .http
                    .post(format!("{first}/v1/sys/init"))
                    .json(&json!({}))
                    .send()
                    .await
                    .ok()?;
                (resp.status().as_u16() == 201).then_some(())?;
                resp.json().await.ok()
            },
        )
        .await;
        cluster.token = body["root_token"].as_str().expect("root token").to_string();
        cluster
    }

    /// Start a new `n`-node cluster from a snapshot file, as `certplane operator restore` does.
    pub async fn start_restored(snapshot: &std::path::Path, n: usize, token: &str) -> TestCluster {
        let (mut cluster, listeners) =
            Self::prepare(n, |c| c.initial_cluster = BTreeMap::new()).await;
        let members: BTreeMap<u64, String> = cluster
            .nodes
            .iter()
            .map(|n| (n.id, n.cluster_addr.to_string()))
            .collect();
        for node in &cluster.nodes {
            certplane_raft::restore::restore_data_dir(snapshot, &node.config.data_dir, &members)
                .await
                .expect("restore");
        }
        for (i, (api, c)) in listeners.into_iter().enumerate() {
            cluster.boot(i as u64 + 1, api, c).await;
        }
        cluster.token = token.to_string();
        cluster
    }

    async fn prepare(
        n: usize,
        tune: impl Fn(&mut ServerConfig),
    ) -> (TestCluster, Vec<(TcpListener, TcpListener)>) {
        install_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = Vec::new();
        for _ in 0..n {
            let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
            let cluster = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind cluster");
            listeners.push((api, cluster));
        }
        let initial: BTreeMap<u64, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, (_, c))| (i as u64 + 1, c.local_addr().expect("addr").to_string()))
            .collect();
        let mut cluster = TestCluster {
            dir,
            nodes: Vec::new(),
            links: HashMap::new(),
            token: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        for (i, (api, c)) in listeners.iter().enumerate() {
            let id = i as u64 + 1;
            let mut config = ServerConfig {
                node_id: id,
                data_dir: cluster.dir.path().join(format!("node-{id}")),
                api_addr: api.local_addr().expect("addr"),
                cluster_addr: c.local_addr().expect("addr"),
                advertise_api: None,
                advertise_cluster: None,
                initial_cluster: initial.clone(),
                join: None,
                join_token: None,
                join_as_learner: false,
                kek_file: None,
                tls: None,
                insecure: true,
                raft: RaftTiming::default(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                api_tls: None,
                webhooks: Default::default(),
                deploy: Default::default(),
                audit_verify_interval_ms: 60_000,
                log: "warn".into(),
            };
            tune(&mut config);
            cluster.nodes.push(TestNode {
                id,
                api_addr: config.api_addr,
                cluster_addr: config.cluster_addr,
                config,
                handle: None,
            });
        }
        for from in 1..=n as u64 {
            for to in 1..=n as u64 {
                if from != to {
                    let target = cluster.node(to).cluster_addr;
                    cluster
                        .links
                        .insert((from, to), LinkProxy::start(target).await);
                }
            }
        }
        (cluster, listeners)
    }

    pub fn node(&self, id: u64) -> &TestNode {
        &self.nodes[(id - 1) as usize]
    }

    fn channels_for(&self, id: u64) -> PeerChannels {
        let mut overrides = HashMap::new();
        for other in &self.nodes {
            if let Some(link) = self.links.get(&(id, other.id)) {
                overrides.insert(other.cluster_addr.to_string(), link.addr.to_string());
            }
        }
        PeerChannels::with_config(
            None,
            ChannelConfig {
                dial_overrides: overrides,
                ..ChannelConfig::default()
            },
        )
    }

    async fn boot(&mut self, id: u64, api: TcpListener, cluster: TcpListener) {
        let channels = self.channels_for(id);
        let config = self.node(id).config.clone();
        let handle = start_node_with(&config, api, cluster, Some(channels))
            .await
            .expect("start node");
        self.nodes[(id - 1) as usize].handle = Some(handle);
    }

    /// Add a node that is not yet a member (for join tests); returns its id.
    pub async fn add_unstarted_node(&mut self, tune: impl Fn(&mut ServerConfig)) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let cluster = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut config = self.node(1).config.clone();
        config.node_id = id;
        config.data_dir = self.dir.path().join(format!("node-{id}"));
        config.api_addr = api.local_addr().expect("addr");
        config.cluster_addr = cluster.local_addr().expect("addr");
        config.initial_cluster = BTreeMap::new();
        tune(&mut config);
        self.nodes.push(TestNode {
            id,
            api_addr: config.api_addr,
            cluster_addr: config.cluster_addr,
            config,
            handle: None,
        });
        for other in 1..id {
            let to_new = LinkProxy::start(self.node(id).cluster_addr).await;
            self.links.insert((other, id), to_new);
            let from_new = LinkProxy::start(self.node(other).cluster_addr).await;
            self.links.insert((id, other), from_new);
        }
        // Existing nodes learn the new link through their dial overrides only after a restart; the
        // new node's address is reached directly by them, which is fine for tests that do not cut it.
        self.boot(id, api, cluster).await;
        id
    }

    /// Stop a node gracefully (its storage is kept).
    pub async fn stop(&mut self, id: u64) {
        if let Some(h) = self.nodes[(id - 1) as usize].handle.take() {
            h.shutdown().await;
        }
    }

    /// Start a stopped node again on the same ports and data directory.
    pub async fn restart(&mut self, id: u64) {
        let (api_addr, cluster_addr) = (self.node(id).api_addr, self.node(id).cluster_addr);
        let api = TcpListener::bind(api_addr).await.expect("rebind api");
        let cluster = TcpListener::bind(cluster_addr)
            .await
            .expect("rebind cluster");
        self.boot(id, api, cluster).await;
    }

    pub fn running(&self) -> impl Iterator<Item = &TestNode> {
        self.nodes.iter().filter(|n| n.handle.is_some())
    }

    /// Cut every link to and from `id`.
    pub fn partition(&self, id: u64) {
        for ((from, to), link) in &self.links {
            if *from == id || *to == id {
                link.cut();
            }
        }
    }

    pub fn heal(&self, id: u64) {
        for ((from, to), link) in &self.links {
            if *from == id || *to == id {
                link.heal();
            }
        }
    }

    pub async fn get(&self, id: u64, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.node(id).url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, id: u64, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.node(id).url()))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The leader as seen by the running nodes that agree on one.
    pub async fn leader(&self) -> u64 {
        self.leader_among(&self.running().map(|n| n.id).collect::<Vec<_>>())
            .await
    }

    /// Wait until all `ids` report the same leader, which is one of them.
    pub async fn leader_among(&self, ids: &[u64]) -> u64 {
        wait_for("an agreed leader", Duration::from_secs(20), || async {
            let mut leaders = Vec::new();
            for id in ids {
                let h = self.node(*id).handle.as_ref()?;
                leaders.push(h.node.status().leader?);
            }
            let first = *leaders.first()?;
            (leaders.iter().all(|l| *l == first) && ids.contains(&first)).then_some(first)
        })
        .await
    }

    /// Wait until every running node has applied the same index and reports the same state digest
    /// and audit chain head; returns (applied index, digest).
    pub async fn wait_converged(&self) -> (u64, String) {
        wait_for(
            "all running nodes to converge",
            Duration::from_secs(30),
            || async {
                let mut seen = Vec::new();
                for n in self.running() {
                    let (status, report) = self.get(n.id, "/v1/sys/node").await;
                    if status != 200 {
                        return None;
                    }
                    seen.push((
                        report["node"]["applied_index"].as_u64()?,
                        report["state_digest"].as_str()?.to_string(),
                        report["audit_head"]["hash"].as_str()?.to_string(),
                    ));
                }
                let first = seen.first()?.clone();
                seen.iter()
                    .all(|s| *s == first)
                    .then_some((first.0, first.1))
            },
        )
        .await
    }

    pub async fn shutdown(mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.stop(id).await;
        }
    }
}

/// A source of distinct, valid certificate chains.
pub struct Certs {
    ca: certplane_pki::testing::TestCa,
    now: i64,
}

impl Certs {
    pub fn new() -> Self {
        Certs {
            ca: certplane_pki::testing::TestCa::new(),
            now: certplane_pki::testing::now_ms(),
        }
    }

    /// A chain for `cn` valid from yesterday for `days`.
    pub fn chain(&self, cn: &str, days: i64) -> (String, String) {
        self.ca.issue_leaf(
            cn,
            &[cn],
            self.now - 86_400_000,
            self.now + days * 86_400_000,
        )
    }

    pub fn import_body(&self, cn: &str, days: i64, owner: &str, zone: &str) -> Value {
        let (chain, _) = self.chain(cn, days);
        json!({ "chain_pem": chain, "owner": owner, "zone": zone, "tags": { "test": "yes" } })
    }
}

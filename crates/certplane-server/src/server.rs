//! Running one node: storage and Raft, the HTTP API, bootstrap or join, graceful shutdown.
//!
//! `start_node` takes already-bound listeners so that tests and `certplane dev` can use port 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use certplane_pki::Kek;
use certplane_raft::node::{NodeOptions, RaftNode};
use certplane_raft::tls::ClusterTls;
use certplane_raft::NodeInfo;
use metrics_exporter_prometheus::PrometheusHandle;
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::ServerConfig;

/// A running node and its API server.
pub struct NodeHandle {
    pub node: Arc<RaftNode>,
    pub api_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub api_url: String,
    api_task: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl NodeHandle {
    /// Stop serving the API, then stop Raft and release storage.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(task) = self.api_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.node.shutdown().await;
    }
}

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

pub async fn start_node(
    config: &ServerConfig,
    api_listener: TcpListener,
    cluster_listener: TcpListener,
) -> anyhow::Result<NodeHandle> {
    start_node_with(config, api_listener, cluster_listener, None).await
}

/// [`start_node`] with the peer channels supplied by the caller (tests route them through relays
/// that can be cut to simulate partitions).
pub async fn start_node_with(
    config: &ServerConfig,
    api_listener: TcpListener,
    cluster_listener: TcpListener,
    channels: Option<certplane_raft::network::PeerChannels>,
) -> anyhow::Result<NodeHandle> {
    let api_addr = api_listener.local_addr()?;
    let cluster_addr = cluster_listener.local_addr()?;
    let advertise_api = config
        .advertise_api
        .clone()
        .unwrap_or_else(|| format!("http://{api_addr}"));
    let advertise_cluster = config
        .advertise_cluster
        .clone()
        .unwrap_or_else(|| cluster_addr.to_string());
    let tls = match &config.tls {
        Some(files) => Some(
            ClusterTls::load(&files.ca, &files.cert, &files.key)
                .context("loading cluster TLS files")?,
        ),
        None => {
            tracing::warn!("--insecure: node-to-node traffic is PLAINTEXT and unauthenticated. Never use this outside development.");
            None
        }
    };
    let kek = match &config.kek_file {
        Some(path) => {
            Some(Arc::new(Kek::load(path).with_context(|| {
                format!("loading --kek-file {}", path.display())
            })?))
        }
        None => None,
    };
    let mut opts = NodeOptions::new(
        config.node_id,
        &config.data_dir,
        NodeInfo {
            cluster_addr: advertise_cluster.clone(),
            api_addr: advertise_api.clone(),
        },
    );
    opts.tls = tls;
    opts.heartbeat_ms = config.raft.heartbeat_ms;
    opts.election_min_ms = config.raft.election_min_ms;
    opts.election_max_ms = config.raft.election_max_ms;
    opts.snapshot_every = config.raft.snapshot_every;
    opts.keep_after_snapshot = config.raft.keep_after_snapshot;
    opts.channels = channels;
    let node = RaftNode::start(opts, cluster_listener)
        .await
        .context("starting the raft node")?;

    let (stop, stop_rx) = watch::channel(false);
    let signers = Arc::new(crate::workers::issuance::SignerCache::default());
    let state = AppState {
        node: node.clone(),
        kek: kek.clone(),
        max_body_bytes: config.max_body_bytes,
        metrics: metrics_handle(),
        signers: signers.clone(),
        crls: Arc::new(api::issuers::CrlCache::default()),
        aws_endpoint_url: config.deploy.aws_endpoint_url.clone(),
    };
    let app = api::router(state);
    let api_tls = match &config.api_tls {
        Some(tls) => Some(crate::api_tls::server_config(tls).context("the API's TLS settings")?),
        None => None,
    };
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(async move {
        if let Some(tls) = api_tls {
            crate::api_tls::serve(api_listener, app, tls, api_stop).await;
            return;
        }
        let shutdown = async move {
            let _ = api_stop.wait_for(|s| *s).await;
        };
        // Without TCP_NODELAY a response written in pieces waits on the client's delayed ACK (~40 ms).
        let listener = axum::serve::ListenerExt::tap_io(api_listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "API server stopped");
        }
    });

    let mut background = Vec::new();
    let worker = crate::workers::issuance::IssuanceWorker::new(
        node.clone(),
        kek.clone(),
        signers.clone(),
        config.deploy.aws_endpoint_url.clone(),
        config.deploy.acm_check_interval_ms,
    );
    background.push(tokio::spawn(worker.run(stop_rx.clone())));
    let deliveries =
        crate::workers::webhooks::DeliveryWorker::new(node.clone(), kek.clone(), config.webhooks);
    background.push(tokio::spawn(deliveries.run(stop_rx.clone())));
    background.push(tokio::spawn(crate::workers::notices::run(
        node.clone(),
        stop_rx.clone(),
    )));
    background.push(tokio::spawn(crate::workers::audit::run(
        node.clone(),
        std::time::Duration::from_millis(config.audit_verify_interval_ms),
        stop_rx.clone(),
    )));
    background.push(tokio::spawn(crate::workers::renewals::run(
        node.clone(),
        crate::workers::renewals::Signing {
            signers,
            kek: kek.clone(),
        },
        config.deploy.renewal_rate,
        config.deploy.clock.clone(),
        stop_rx.clone(),
    )));
    let deployer =
        crate::workers::deploy::DeployWorker::new(node.clone(), kek.clone(), config.deploy.clone());
    background.push(tokio::spawn(deployer.run(stop_rx.clone())));
    background.push(tokio::spawn(crate::workers::approvals::run(
        node.clone(),
        stop_rx.clone(),
    )));
    if !config.initial_cluster.is_empty() {
        let lowest = config.initial_cluster.keys().next().copied();
        if lowest == Some(config.node_id) {
            let members: BTreeMap<u64, NodeInfo> = config
                .initial_cluster
                .iter()
                .map(|(id, addr)| {
                    let api = if *id == config.node_id {
                        advertise_api.clone()
                    } else {
                        String::new()
                    };
                    (
                        *id,
                        NodeInfo {
                            cluster_addr: addr.clone(),
                            api_addr: api,
                        },
                    )
                })
                .collect();
            if node
                .bootstrap(members)
                .await
                .map_err(|e| anyhow::anyhow!("bootstrap failed: {e}"))?
            {
                tracing::info!(members = ?config.initial_cluster, "initialised a new cluster");
            }
        }
    } else if let Some(join_url) = &config.join {
        if !node.is_initialized().await {
            let token = config
                .join_token
                .clone()
                .context("--join needs --join-token (an operator or admin token)")?;
            let info = NodeInfo {
                cluster_addr: advertise_cluster,
                api_addr: advertise_api.clone(),
            };
            background.push(tokio::spawn(join_cluster(
                join_url.clone(),
                token,
                config.node_id,
                info,
                !config.join_as_learner,
            )));
        }
    }
    // After a static bootstrap or a restore the membership knows only cluster addresses.
    background.push(tokio::spawn(register_api_addr(
        node.clone(),
        stop_rx.clone(),
    )));
    Ok(NodeHandle {
        node,
        api_addr,
        cluster_addr,
        api_url: advertise_api,
        api_task: Some(api_task),
        background,
        stop,
    })
}

/// Static bootstrap and restore know only cluster addresses: once a leader exists, each node records
/// its own API URL in the membership so clients can find every member's API.
async fn register_api_addr(node: Arc<RaftNode>, mut stop: watch::Receiver<bool>) {
    let mut metrics = node.raft.metrics();
    loop {
        let recorded = {
            let m = metrics.borrow_watched();
            m.current_leader.is_some()
                && m.membership_config
                    .membership()
                    .get_node(&node.id)
                    .map(|n| n.api_addr.as_str())
                    == Some(node.advertise.api_addr.as_str())
        };
        if recorded {
            return;
        }
        let leader_known = metrics.borrow_watched().current_leader.is_some();
        if leader_known
            && node
                .raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .get_node(&node.id)
                .is_some()
        {
            if let Err(e) = node.set_node_info(node.advertise.clone()).await {
                tracing::debug!(error = %e, "recording this node's API address; will retry");
            }
        }
        tokio::select! {
            _ = metrics.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn join_cluster(url: String, token: String, id: u64, info: NodeInfo, voter: bool) {
    let client = crate::client::ApiClient::new(&url, Some(token));
    let body = serde_json::json!({ "id": id, "cluster_addr": info.cluster_addr, "api_addr": info.api_addr, "voter": voter });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match client.post("/v1/sys/cluster/members", &body, None).await {
            Ok(_) => {
                tracing::info!(%url, id, "joined the cluster");
                return;
            }
            Err(e) if e.retryable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "joining the cluster; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not join the cluster");
                return;
            }
        }
    }
}

/// Run `certplane server` until SIGINT/SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    if config.insecure {
        eprintln!("WARNING: --insecure: node-to-node traffic is plaintext and unauthenticated. Development only.");
    }
    let api = TcpListener::bind(config.api_addr)
        .await
        .with_context(|| format!("binding --api-addr {}", config.api_addr))?;
    let cluster = TcpListener::bind(config.cluster_addr)
        .await
        .with_context(|| format!("binding --cluster-addr {}", config.cluster_addr))?;
    let handle = start_node(&config, api, cluster).await?;
    tracing::info!(node = config.node_id, api = %handle.api_url, cluster = %handle.cluster_addr, "certplane node running");
    wait_for_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

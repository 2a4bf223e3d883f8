//! `certplane dev`: a local cluster on loopback for trying certplane out.
//!
//! Generates the cluster TLS material and a key-encryption key, starts N nodes in this process on
//! 127.0.0.1 (mutual TLS between them), initialises the cluster, prints the API URLs and the root
//! token, and stops cleanly on Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::client::ApiClient;
use crate::config::{RaftTiming, ServerConfig, TlsFiles, DEFAULT_MAX_BODY_BYTES};
use crate::server::{start_node, wait_for_signal, NodeHandle};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Number of nodes (1, or 3 for a real cluster).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Keep data here across runs (default: a fresh temporary directory, removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// First API port; node i uses base+10*(i-1) for its API and that plus 1 for gRPC. 0 picks free ports.
    #[arg(long, default_value_t = 8200)]
    pub base_port: u16,
    #[arg(long, default_value = "info,openraft=warn")]
    pub log: String,
}

async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot bind {addr} (is another certplane running? try --base-port 0)")
    })
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        anyhow::bail!("--nodes must be between 1 and 9");
    }
    let (root, ephemeral) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("certplane-dev-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&root)?;
    let tls_dir = root.join("tls");
    if !tls_dir.join("ca.pem").exists() {
        certplane_pki::cluster_tls::write_cluster_tls(&tls_dir, args.nodes, &[], &[], false)?;
    }
    let kek_file = root.join("kek");
    if !kek_file.exists() {
        certplane_pki::Kek::generate_file(&kek_file)?;
    }

    let mut listeners = Vec::new();
    for i in 0..args.nodes {
        let base = if args.base_port == 0 {
            0
        } else {
            args.base_port + 10 * i as u16
        };
        let api = bind(base).await?;
        let cluster = bind(if base == 0 { 0 } else { base + 1 }).await?;
        listeners.push((api, cluster));
    }
    let initial: BTreeMap<u64, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, (_, c))| Ok((i as u64 + 1, c.local_addr()?.to_string())))
        .collect::<std::io::Result<_>>()?;

    let mut handles: Vec<NodeHandle> = Vec::new();
    for (i, (api, cluster)) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let config = ServerConfig {
            node_id: id,
            data_dir: root.join(format!("node-{id}")),
            api_addr: api.local_addr()?,
            cluster_addr: cluster.local_addr()?,
            advertise_api: None,
            advertise_cluster: None,
            initial_cluster: initial.clone(),
            join: None,
            join_token: None,
            join_as_learner: false,
            kek_file: Some(kek_file.clone()),
            tls: Some(TlsFiles {
                ca: tls_dir.join("ca.pem"),
                cert: tls_dir.join(format!("node-{id}.pem")),
                key: tls_dir.join(format!("node-{id}-key.pem")),
            }),
            insecure: false,
            raft: RaftTiming::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            api_tls: None,
            webhooks: Default::default(),
            deploy: Default::default(),
            audit_verify_interval_ms: 60_000,
            log: args.log.clone(),
        };
        handles.push(start_node(&config, api, cluster).await?);
    }

    let first = ApiClient::new(&handles[0].api_url, None);
    let token_file = root.join("root-token");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let token = loop {
        match first
            .post("/v1/sys/init", &serde_json::json!({}), None)
            .await
        {
            Ok(v) => {
                let token = v["root_token"].as_str().unwrap_or_default().to_string();
                std::fs::write(&token_file, &token)?;
                break token;
            }
            Err(e) if e.code == "already_initialized" => {
                break std::fs::read_to_string(&token_file)
                    .unwrap_or_else(|_| "(printed when the cluster was first initialised)".into());
            }
            Err(e) if e.retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("initialising the dev cluster: {e}"),
        }
    };

    println!(
        "certplane dev cluster: {} node(s), data in {}",
        handles.len(),
        root.display()
    );
    for h in &handles {
        println!(
            "  node {}  api {}  cluster {}",
            h.node.id, h.api_url, h.cluster_addr
        );
    }
    println!();
    println!("export CERTPLANE_ADDR={}", handles[0].api_url);
    println!("export CERTPLANE_TOKEN={token}");
    println!();
    println!("Try: certplane cluster status; certplane cert list. Ctrl-C stops the cluster.");

    wait_for_signal().await;
    println!("stopping...");
    for h in handles {
        h.shutdown().await;
    }
    if ephemeral {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

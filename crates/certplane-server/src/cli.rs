//! Command-line interface. Exit codes: 0 success, 1 other failure, 2 usage, 3 not found,
//! 4 unauthenticated/forbidden, 5 conflict, 6 unavailable/unreachable, 7 invalid request.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::client::{ApiClient, ClientError};
use crate::config::ServerOptions;

#[derive(Debug, Parser)]
#[command(name = "certplane", version, about = "A highly available control plane for TLS certificates", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 unauthenticated/forbidden, 5 conflict, 6 unavailable, 7 invalid request";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// How to reach the API.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// API URL of any node.
    #[arg(
        long,
        env = "CERTPLANE_ADDR",
        default_value = "http://127.0.0.1:8200",
        global = true
    )]
    pub addr: String,
    /// Bearer token.
    #[arg(long, env = "CERTPLANE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Server(Box<ServerOptions>),
    /// Run a local development cluster on loopback with generated TLS; prints URLs and an admin token.
    Dev(crate::dev::DevArgs),
    /// Cluster mutual-TLS material.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Initialise a new cluster once and print the root token.
    Init {
        #[command(flatten)]
        target: Target,
    },
    /// Cluster status and membership.
    Cluster {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// The certificate inventory.
    Cert {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: CertCommand,
    },
    /// The audit trail.
    Audit {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Consistent snapshots of the whole state.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Offline operator tasks.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create a cluster CA and one certificate per node in DIR.
    Init {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS names for every node certificate.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Extra IP addresses for every node certificate.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Replace an existing CA (cuts nodes holding old certificates out of the cluster).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, terms, indexes and members (from the leader's view when reachable).
    Status,
    /// List members.
    Members,
    /// Add a node (as a voter unless --learner).
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        cluster_addr: String,
        #[arg(long)]
        api_addr: String,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node.
    Remove { id: u64 },
    /// Hand leadership to another voter (the most caught-up one when --to is absent).
    TransferLeader {
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Import a PEM chain (leaf first) and optionally its private key.
    Import {
        /// PEM file with the leaf and its intermediates.
        chain: PathBuf,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        owner: String,
        #[arg(long)]
        zone: String,
        /// key=value, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List certificates.
    List {
        #[arg(long)]
        expiring_within: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow cursors until the listing is complete.
        #[arg(long)]
        all: bool,
        /// Read this node's local state instead of a linearizable read.
        #[arg(long)]
        stale: bool,
    },
    Get {
        id: String,
    },
    /// Retire a certificate (the record and its history are kept).
    Retire {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        object: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Verify the hash chain on the node at --addr.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Download a consistent snapshot to FILE.
    Save {
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Prepare a node's data directory for a new cluster from a snapshot (same as `operator restore`).
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot file from `certplane snapshot save`.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// Empty data directory for the new node.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new cluster: `1=host:port,2=host:port,...` (cluster addresses). Run restore once per node
    /// with the same snapshot and list, then start the nodes without --initial-cluster.
    #[arg(long)]
    pub initial_cluster: String,
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Start a new cluster from a snapshot: prepares one node's data directory.
    Restore(RestoreArgs),
    /// Write a new random key-encryption key file (mode 0600).
    GenerateKek {
        #[arg(long)]
        out: PathBuf,
    },
}

fn print(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Text => println!("{}", text(value)),
    }
}

fn fail(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

fn local_fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    1
}

fn client(t: &Target) -> ApiClient {
    ApiClient::new(&t.addr, t.token.clone())
}

fn cert_line(c: &Value) -> String {
    format!(
        "{}  {:<8} {:>5}d  {}  owner={} zone={}",
        c["id"].as_str().unwrap_or(""),
        c["status"].as_str().unwrap_or(""),
        c["days_to_expiry"],
        c["common_name"]
            .as_str()
            .or(c["subject"].as_str())
            .unwrap_or(""),
        c["owner"].as_str().unwrap_or(""),
        c["zone"].as_str().unwrap_or(""),
    )
}

fn members_text(v: &Value) -> String {
    let mut out = String::new();
    for m in v["members"].as_array().into_iter().flatten() {
        let lag = m["lag"]
            .as_u64()
            .map(|l| format!(" lag={l}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>3} {:<8} cluster={} api={}{}\n",
            m["id"],
            if m["voter"].as_bool() == Some(true) {
                "voter"
            } else {
                "learner"
            },
            m["cluster_addr"].as_str().unwrap_or(""),
            m["api_addr"].as_str().unwrap_or(""),
            lag
        ));
    }
    out.trim_end().to_string()
}

pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Server(opts) => {
            let config = match opts.resolve() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return 2;
                }
            };
            init_tracing(&config.log);
            match crate::server::run(config).await {
                Ok(()) => 0,
                Err(e) => local_fail(format!("{e:#}")),
            }
        }
        Command::Dev(args) => {
            init_tracing(&args.log);
            match crate::dev::run(args).await {
                Ok(()) => 0,
                Err(e) => local_fail(format!("{e:#}")),
            }
        }
        Command::Tls {
            command:
                TlsCommand::Init {
                    nodes,
                    out,
                    dns,
                    ips,
                    force,
                },
        } => match certplane_pki::cluster_tls::write_cluster_tls(&out, nodes, &dns, &ips, force) {
            Ok(paths) => {
                for p in paths {
                    println!("wrote {}", p.display());
                }
                0
            }
            Err(e) => local_fail(e),
        },
        Command::Init { target } => {
            match client(&target).post("/v1/sys/init", &json!({}), None).await {
                Ok(v) => {
                    print(target.output, &v, |v| {
                        format!(
                            "root token: {}\n(shown once; store it safely)",
                            v["root_token"].as_str().unwrap_or("")
                        )
                    });
                    0
                }
                Err(e) => fail(&e),
            }
        }
        Command::Cluster { target, command } => cluster(target, command).await,
        Command::Cert { target, command } => cert(target, command).await,
        Command::Audit { target, command } => audit(target, command).await,
        Command::Snapshot {
            command: SnapshotCommand::Save { file, target },
        } => match client(&target).download("/v1/sys/snapshot", &file).await {
            Ok(bytes) => {
                print(
                    target.output,
                    &json!({ "file": file, "bytes": bytes }),
                    |_| format!("saved {bytes} bytes to {}", file.display()),
                );
                0
            }
            Err(e) => fail(&e),
        },
        Command::Snapshot {
            command: SnapshotCommand::Restore(args),
        }
        | Command::Operator {
            command: OperatorCommand::Restore(args),
        } => restore(args).await,
        Command::Operator {
            command: OperatorCommand::GenerateKek { out },
        } => match certplane_pki::Kek::generate_file(&out) {
            Ok(kek) => {
                println!("wrote {} (kek id {})", out.display(), kek.id());
                0
            }
            Err(e) => local_fail(e),
        },
    }
}

async fn restore(args: RestoreArgs) -> i32 {
    let members = match crate::config::parse_initial_cluster(&args.initial_cluster) {
        Ok(m) => m,
        Err(e) => return local_fail(e),
    };
    match certplane_raft::restore::restore_data_dir(&args.snapshot, &args.data_dir, &members).await
    {
        Ok(report) => {
            println!(
                "restored {} records at log index {} into {}; start the nodes of the new cluster without --initial-cluster",
                report.records,
                report.index,
                args.data_dir.display()
            );
            0
        }
        Err(e) => local_fail(e),
    }
}

async fn cluster(target: Target, command: ClusterCommand) -> i32 {
    let c = client(&target);
    let result = match command {
        ClusterCommand::Status => match c.get("/v1/sys/cluster", &[]).await {
            Ok(v) => {
                // The leader's view carries replication progress; ask it when it is elsewhere.
                let leader_view = match v["leader_api_addr"].as_str() {
                    Some(addr) if !addr.is_empty() && addr != c.base() && v["state"] != "Leader" => {
                        ApiClient::new(addr, target.token.clone()).get("/v1/sys/cluster", &[]).await.ok()
                    }
                    _ => None,
                };
                Ok(leader_view.unwrap_or(v))
            }
            Err(e) => Err(e),
        }
        .map(|v| {
            print(target.output, &v, |v| {
                format!(
                    "leader: {}  term: {}  committed: {}  applied(here): {}\n{}",
                    v["leader"], v["term"], v["committed_index"], v["applied_index"], members_text(v)
                )
            })
        }),
        ClusterCommand::Members => c.get("/v1/sys/cluster", &[]).await.map(|v| print(target.output, &v, members_text)),
        ClusterCommand::Add { id, cluster_addr, api_addr, learner } => c
            .post("/v1/sys/cluster/members", &json!({ "id": id, "cluster_addr": cluster_addr, "api_addr": api_addr, "voter": !learner }), None)
            .await
            .map(|v| print(target.output, &v, members_text)),
        ClusterCommand::Remove { id } => {
            c.delete(&format!("/v1/sys/cluster/members/{id}"), &[]).await.map(|v| print(target.output, &v, members_text))
        }
        ClusterCommand::TransferLeader { to } => c
            .post("/v1/sys/cluster/transfer-leader", &json!({ "to": to }), None)
            .await
            .map(|v| print(target.output, &v, |v| format!("leadership moving from {} to {}", v["from"], v["to"]))),
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

async fn cert(target: Target, command: CertCommand) -> i32 {
    let c = client(&target);
    let result = match command {
        CertCommand::Import {
            chain,
            key,
            owner,
            zone,
            tags,
            idempotency_key,
        } => {
            let chain_pem = match std::fs::read_to_string(&chain) {
                Ok(s) => s,
                Err(e) => return local_fail(format!("cannot read {}: {e}", chain.display())),
            };
            let key_pem = match key.map(std::fs::read_to_string).transpose() {
                Ok(k) => k,
                Err(e) => return local_fail(format!("cannot read the key: {e}")),
            };
            let mut tag_map = serde_json::Map::new();
            for t in tags {
                let Some((k, v)) = t.split_once('=') else {
                    return local_fail(format!("--tag {t:?} is not key=value"));
                };
                tag_map.insert(k.to_string(), Value::String(v.to_string()));
            }
            let body = json!({ "chain_pem": chain_pem, "private_key_pem": key_pem, "owner": owner, "zone": zone, "tags": tag_map });
            c.post("/v1/certificates/import", &body, idempotency_key.as_deref())
                .await
                .map(|v| print(target.output, &v, cert_line))
        }
        CertCommand::List {
            expiring_within,
            owner,
            zone,
            issuer,
            name,
            status,
            limit,
            cursor,
            all,
            stale,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("expiring_within", expiring_within),
                ("owner", owner),
                ("zone", zone),
                ("issuer", issuer),
                ("name", name),
                ("status", status),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            if stale {
                query.push(("consistency", "stale".into()));
            }
            let mut cursor = cursor;
            let mut items = Vec::new();
            let mut next;
            loop {
                let mut q = query.clone();
                if let Some(c) = &cursor {
                    q.push(("cursor", c.clone()));
                }
                match c.get("/v1/certificates", &q).await {
                    Ok(v) => {
                        items.extend(v["items"].as_array().cloned().unwrap_or_default());
                        next = v["next_cursor"].as_str().map(str::to_string);
                        if all && next.is_some() {
                            cursor = next.clone();
                            continue;
                        }
                        break;
                    }
                    Err(e) => return fail(&e),
                }
            }
            let v = json!({ "items": items, "next_cursor": next });
            print(target.output, &v, |v| {
                let mut lines: Vec<String> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cert_line)
                    .collect();
                if let Some(n) = v["next_cursor"].as_str() {
                    lines.push(format!("(more: --cursor {n})"));
                }
                lines.join("\n")
            });
            Ok(())
        }
        CertCommand::Get { id } => c
            .get(&format!("/v1/certificates/{id}"), &[])
            .await
            .map(|v| {
                print(target.output, &v, |v| {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                })
            }),
        CertCommand::Retire { id, reason } => {
            let q: Vec<(&str, String)> = reason.map(|r| vec![("reason", r)]).unwrap_or_default();
            c.delete(&format!("/v1/certificates/{id}"), &q)
                .await
                .map(|v| print(target.output, &v, cert_line))
        }
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

async fn audit(target: Target, command: AuditCommand) -> i32 {
    let c = client(&target);
    match command {
        AuditCommand::List {
            actor,
            action,
            object,
            limit,
            cursor,
        } => {
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("actor", actor),
                ("action", action),
                ("object", object),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            match c.get("/v1/audit", &q).await {
                Ok(v) => {
                    print(target.output, &v, |v| {
                        v["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|r| {
                                format!(
                                    "{:>6} {} {:<20} {:<40} {} by {}",
                                    r["seq"],
                                    r["at"],
                                    r["action"].as_str().unwrap_or(""),
                                    r["object"].as_str().unwrap_or(""),
                                    r["outcome"].as_str().unwrap_or(""),
                                    r["actor"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    0
                }
                Err(e) => fail(&e),
            }
        }
        AuditCommand::Verify => match c.get("/v1/audit/verify", &[]).await {
            Ok(v) => {
                let ok = v["ok"].as_bool() == Some(true);
                print(target.output, &v, |v| {
                    if ok {
                        format!(
                            "audit chain OK: {} records, head {}",
                            v["records_checked"],
                            v["head"]["hash"].as_str().unwrap_or("")
                        )
                    } else {
                        format!(
                            "audit chain BROKEN at record {}: {}",
                            v["first_broken"]["seq"],
                            v["first_broken"]["reason"].as_str().unwrap_or("")
                        )
                    }
                });
                if ok {
                    0
                } else {
                    1
                }
            }
            Err(e) => fail(&e),
        },
    }
}

pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

//! Command-line interface. Exit codes: 0 success, 1 other failure, 2 usage, 3 not found,
//! 4 unauthenticated/forbidden, 5 conflict, 6 unavailable/unreachable, 7 invalid request.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

mod commands;
mod drill;
mod governance;
mod issuance;
mod renewals;

use crate::config::ServerOptions;
pub use commands::verify_export;
use commands::{audit, cert, client, cluster, fail, local_fail, print};

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
    /// CA certificate (PEM) that signed the API's TLS certificate, for an https:// address.
    #[arg(long, env = "CERTPLANE_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, instead of a token.
    #[arg(
        long,
        env = "CERTPLANE_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "CERTPLANE_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
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
    /// Policy zones: get, set, effective policy, dry-run evaluation.
    Zone {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: issuance::ZoneCommand,
    },
    /// Certificate requests: create (and wait for the certificate), get, list.
    Request {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: issuance::RequestCommand,
    },
    /// Principals: bearer tokens and client-certificate subjects, with role bindings per zone.
    Token {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: governance::TokenCommand,
    },
    /// Requests waiting for approval.
    Approvals {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: governance::ApprovalsCommand,
    },
    /// Automatic renewal and deployment: what will happen when.
    Renewals {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: renewals::RenewalsCommand,
    },
    /// AWS integration: the IAM policy the configured destinations need.
    Aws {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: renewals::AwsCommand,
    },
    /// Failover drills: watch availability while you inject a fault, or transfer leadership.
    Drill {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: drill::DrillCommand,
    },
    /// The calling principal and its role bindings.
    Whoami {
        #[command(flatten)]
        target: Target,
    },
    /// certplane's CAs: list, get, CRL, import an internal CA.
    Issuer {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: issuance::IssuerCommand,
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
    /// Issue a successor under the current policy; the old certificate stays, linked as superseded.
    Renew {
        id: String,
        #[arg(long)]
        validity: Option<String>,
        /// A new key type (default: the same type, a fresh key).
        #[arg(long)]
        key_type: Option<String>,
        /// A new CSR file: rotate to a key you hold.
        #[arg(long, conflicts_with = "key_type")]
        csr: Option<PathBuf>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Revoke at its certplane issuer (listed on the issuer's CRL).
    Revoke {
        id: String,
        /// RFC 5280 reason, e.g. key_compromise, superseded, cessation_of_operation.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Export the private key certplane holds (audited); written with mode 0600.
    ExportKey {
        id: String,
        /// File to create (`-` prints to standard output).
        #[arg(long)]
        out: PathBuf,
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
    /// Every audit record of one object (`request/<id>`, `certificate/<id>`, ...), newest first, with
    /// its accountable details: approvers, policy versions, serial, and for AWS calls the AWS
    /// request id, CA ARN and certificate ARN (to join CloudTrail).
    Show {
        object: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Verify the hash chain on the node at --addr, or offline in an export with --file.
    Verify {
        /// An export (`certplane audit export`): checked offline, no node needed.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: also require the chain to end at this head hash.
        #[arg(long)]
        head: Option<String>,
    },
    /// Download the audit trail as JSON lines (with the chain hashes) to FILE.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        from_seq: Option<u64>,
    },
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
        Command::Zone { target, command } => issuance::zone(target, command).await,
        Command::Request { target, command } => issuance::request(target, command).await,
        Command::Issuer { target, command } => issuance::issuer(target, command).await,
        Command::Token { target, command } => governance::token(target, command).await,
        Command::Approvals { target, command } => governance::approvals(target, command).await,
        Command::Whoami { target } => governance::whoami(target).await,
        Command::Drill { target, command } => drill::drill(target, command).await,
        Command::Renewals { target, command } => renewals::renewals(target, command).await,
        Command::Aws { target, command } => renewals::aws(target, command).await,
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

pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

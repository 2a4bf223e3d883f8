//! The node's configuration: one typed struct fed by flags, `CERTPLANE_*` environment variables and
//! a TOML file (`--config`), in that order of precedence, with defaults and a `validate()` at start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

/// Everything `certplane server` accepts. Every field is optional here so that a flag, an environment
/// variable and the config file can each supply it; [`ServerOptions::resolve`] applies defaults.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerOptions {
    /// TOML file with any of these settings (keys as the long flag names).
    #[arg(long, env = "CERTPLANE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster (1, 2, 3, ...).
    #[arg(long, env = "CERTPLANE_NODE_ID")]
    pub node_id: Option<u64>,
    /// Directory for RocksDB and snapshots.
    #[arg(long, env = "CERTPLANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API listen address.
    #[arg(long, env = "CERTPLANE_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// gRPC (node-to-node) listen address.
    #[arg(long, env = "CERTPLANE_CLUSTER_ADDR")]
    pub cluster_addr: Option<SocketAddr>,
    /// URL other nodes and clients use to reach this node's API (default: http://<api-addr>).
    #[arg(long, env = "CERTPLANE_ADVERTISE_API")]
    pub advertise_api: Option<String>,
    /// host:port other nodes use to reach this node's gRPC listener (default: <cluster-addr>).
    #[arg(long, env = "CERTPLANE_ADVERTISE_CLUSTER")]
    pub advertise_cluster: Option<String>,
    /// Static bootstrap: `1=host:port,2=host:port,3=host:port` (cluster addresses). The node with the
    /// lowest id initialises the cluster once all are reachable.
    #[arg(long, env = "CERTPLANE_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// API URL of any member of a running cluster to join (as a voter).
    #[arg(long, env = "CERTPLANE_JOIN")]
    pub join: Option<String>,
    /// Token used with --join (an admin or operator token).
    #[arg(long, env = "CERTPLANE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Join as a non-voting learner.
    #[arg(long, env = "CERTPLANE_JOIN_AS_LEARNER", num_args = 0..=1, default_missing_value = "true")]
    pub join_as_learner: Option<bool>,
    /// File with the 32-byte key-encryption key (hex or base64) that seals imported private keys.
    #[arg(long, env = "CERTPLANE_KEK_FILE")]
    pub kek_file: Option<PathBuf>,
    /// Cluster CA certificate (PEM) for node-to-node mutual TLS.
    #[arg(long, env = "CERTPLANE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the cluster CA.
    #[arg(long, env = "CERTPLANE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "CERTPLANE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Plaintext node-to-node traffic. Development only.
    #[arg(long, env = "CERTPLANE_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "CERTPLANE_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Lower bound of the randomised election timeout in milliseconds.
    #[arg(long, env = "CERTPLANE_ELECTION_MIN_MS")]
    pub election_min_ms: Option<u64>,
    /// Upper bound of the randomised election timeout in milliseconds.
    #[arg(long, env = "CERTPLANE_ELECTION_MAX_MS")]
    pub election_max_ms: Option<u64>,
    /// Build a snapshot (and purge the log before it) after this many applied entries.
    #[arg(long, env = "CERTPLANE_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind the latest snapshot (lagging followers catch up from the log).
    #[arg(long, env = "CERTPLANE_KEEP_AFTER_SNAPSHOT")]
    pub keep_after_snapshot: Option<u64>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CERTPLANE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Serve the HTTP API over TLS with this certificate chain (PEM).
    #[arg(long, env = "CERTPLANE_API_TLS_CERT")]
    pub api_tls_cert: Option<PathBuf>,
    /// The API certificate's private key (PEM).
    #[arg(long, env = "CERTPLANE_API_TLS_KEY")]
    pub api_tls_key: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates may authenticate over mutual TLS; clients
    /// without a certificate still use bearer tokens.
    #[arg(long, env = "CERTPLANE_API_CLIENT_CA")]
    pub api_client_ca: Option<PathBuf>,
    /// First webhook retry delay in milliseconds; each further retry doubles it (at most 10 minutes).
    #[arg(long, env = "CERTPLANE_WEBHOOK_RETRY_BASE_MS")]
    pub webhook_retry_base_ms: Option<u64>,
    /// Attempts per webhook delivery before it is recorded as failed.
    #[arg(long, env = "CERTPLANE_WEBHOOK_MAX_ATTEMPTS")]
    pub webhook_max_attempts: Option<u64>,
    /// AWS endpoint for ACM and STS (default: the SDK's own, or AWS_ENDPOINT_URL). Tests point
    /// it at moto.
    #[arg(long, env = "CERTPLANE_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// ImportCertificate calls per second per account and region (ACM's default quota is 1).
    #[arg(long, env = "CERTPLANE_ACM_IMPORT_RATE")]
    pub acm_import_rate: Option<f64>,
    /// Deployments the leader runs at once.
    #[arg(long, env = "CERTPLANE_DEPLOY_CONCURRENCY")]
    pub deploy_concurrency: Option<usize>,
    /// First retry delay of a failed deployment in milliseconds (doubling, at most an hour).
    #[arg(long, env = "CERTPLANE_DEPLOY_RETRY_BASE_MS")]
    pub deploy_retry_base_ms: Option<u64>,
    /// Renewals the leader submits per second at most (due renewals beyond it wait their turn).
    #[arg(long, env = "CERTPLANE_RENEWAL_RATE")]
    pub renewal_rate: Option<f64>,
    /// How often the leader asks ACM about each acm-native certificate (status, and a renewal ACM
    /// made by itself), in milliseconds.
    #[arg(long, env = "CERTPLANE_ACM_CHECK_INTERVAL_MS")]
    pub acm_check_interval_ms: Option<u64>,
    /// How often each node verifies the audit records appended to its chain since the last pass,
    /// in milliseconds (default 60000).
    #[arg(long, env = "CERTPLANE_AUDIT_VERIFY_INTERVAL_MS")]
    pub audit_verify_interval_ms: Option<u64>,
    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "CERTPLANE_LOG")]
    pub log: Option<String>,
}

/// The resolved configuration a node runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub advertise_api: Option<String>,
    pub advertise_cluster: Option<String>,
    pub initial_cluster: BTreeMap<u64, String>,
    pub join: Option<String>,
    pub join_token: Option<String>,
    pub join_as_learner: bool,
    pub kek_file: Option<PathBuf>,
    pub tls: Option<TlsFiles>,
    pub insecure: bool,
    pub raft: RaftTiming,
    pub max_body_bytes: usize,
    pub api_tls: Option<ApiTls>,
    pub webhooks: WebhookSettings,
    pub deploy: DeploySettings,
    pub audit_verify_interval_ms: u64,
    pub log: String,
}

/// The leader's renewal and deployment workers.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub aws_endpoint_url: Option<String>,
    pub acm_import_rate: f64,
    pub concurrency: usize,
    pub retry_base_ms: u64,
    pub renewal_rate: f64,
    pub acm_check_interval_ms: u64,
    /// The renewal scheduler's clock (tests move it forward).
    pub clock: crate::workers::clock::SchedulerClock,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            aws_endpoint_url: None,
            acm_import_rate: 1.0,
            concurrency: 4,
            retry_base_ms: 30_000,
            renewal_rate: 200.0,
            acm_check_interval_ms: 6 * 3_600_000,
            clock: crate::workers::clock::SchedulerClock::system(),
        }
    }
}

/// TLS for the HTTP API, optionally verifying client certificates (mutual TLS).
#[derive(Debug, Clone)]
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
pub struct WebhookSettings {
    pub retry_base_ms: u64,
    pub max_attempts: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry_base_ms: 1000,
            max_attempts: 12,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Raft timing. The defaults are for a LAN. A follower honours its leader's lease for
/// `election_max_ms` after the last heartbeat, so the first election timeout that fires inside the
/// lease is skipped and the election starts at the second one: losing a leader costs about two
/// random election timeouts. With 20 ms heartbeats and an 80–140 ms election timeout a new leader
/// takes writes about 250–300 ms after the old one dies (docs/benchmarks.md has the measurements).
#[derive(Debug, Clone, Copy)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every: u64,
    pub keep_after_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 20,
            election_min_ms: 80,
            election_max_ms: 140,
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

impl ServerOptions {
    /// Fill unset fields from `file` (flags and environment win).
    fn merge(self, file: ServerOptions) -> ServerOptions {
        macro_rules! pick {
            ($($f:ident),*) => { ServerOptions { config: self.config, $($f: self.$f.or(file.$f)),* } };
        }
        pick!(
            node_id,
            data_dir,
            api_addr,
            cluster_addr,
            advertise_api,
            advertise_cluster,
            initial_cluster,
            join,
            join_token,
            join_as_learner,
            kek_file,
            tls_ca,
            tls_cert,
            tls_key,
            insecure,
            heartbeat_ms,
            election_min_ms,
            election_max_ms,
            snapshot_every,
            keep_after_snapshot,
            max_body_bytes,
            api_tls_cert,
            api_tls_key,
            api_client_ca,
            webhook_retry_base_ms,
            webhook_max_attempts,
            aws_endpoint_url,
            acm_import_rate,
            deploy_concurrency,
            deploy_retry_base_ms,
            renewal_rate,
            acm_check_interval_ms,
            audit_verify_interval_ms,
            log
        )
    }

    pub fn load_file(path: &Path) -> anyhow::Result<ServerOptions> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))
    }

    pub fn resolve(self) -> anyhow::Result<ServerConfig> {
        let opts = match &self.config {
            Some(path) => {
                let file = Self::load_file(path)?;
                self.merge(file)
            }
            None => self,
        };
        let timing_default = RaftTiming::default();
        let tls = match (opts.tls_ca, opts.tls_cert, opts.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
            (None, None, None) => None,
            _ => anyhow::bail!("--tls-ca, --tls-cert and --tls-key go together"),
        };
        let api_tls = match (opts.api_tls_cert, opts.api_tls_key, opts.api_client_ca) {
            (Some(cert), Some(key), client_ca) => Some(ApiTls {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => None,
            _ => anyhow::bail!(
                "--api-tls-cert and --api-tls-key go together, and --api-client-ca needs them"
            ),
        };
        let webhook_default = WebhookSettings::default();
        let config = ServerConfig {
            node_id: opts
                .node_id
                .ok_or_else(|| anyhow::anyhow!("--node-id is required"))?,
            data_dir: opts
                .data_dir
                .ok_or_else(|| anyhow::anyhow!("--data-dir is required"))?,
            api_addr: opts
                .api_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8200))),
            cluster_addr: opts
                .cluster_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8201))),
            advertise_api: opts.advertise_api,
            advertise_cluster: opts.advertise_cluster,
            initial_cluster: match opts.initial_cluster {
                Some(spec) => parse_initial_cluster(&spec)?,
                None => BTreeMap::new(),
            },
            join: opts.join,
            join_token: opts.join_token,
            join_as_learner: opts.join_as_learner.unwrap_or(false),
            kek_file: opts.kek_file,
            tls,
            insecure: opts.insecure.unwrap_or(false),
            raft: RaftTiming {
                heartbeat_ms: opts.heartbeat_ms.unwrap_or(timing_default.heartbeat_ms),
                election_min_ms: opts
                    .election_min_ms
                    .unwrap_or(timing_default.election_min_ms),
                election_max_ms: opts
                    .election_max_ms
                    .unwrap_or(timing_default.election_max_ms),
                snapshot_every: opts.snapshot_every.unwrap_or(timing_default.snapshot_every),
                keep_after_snapshot: opts
                    .keep_after_snapshot
                    .unwrap_or(timing_default.keep_after_snapshot),
            },
            max_body_bytes: opts.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            api_tls,
            webhooks: WebhookSettings {
                retry_base_ms: opts
                    .webhook_retry_base_ms
                    .unwrap_or(webhook_default.retry_base_ms),
                max_attempts: opts
                    .webhook_max_attempts
                    .map(|n| n.clamp(1, 100) as u32)
                    .unwrap_or(webhook_default.max_attempts),
            },
            deploy: {
                let d = DeploySettings::default();
                DeploySettings {
                    aws_endpoint_url: opts.aws_endpoint_url,
                    acm_import_rate: opts.acm_import_rate.unwrap_or(d.acm_import_rate),
                    concurrency: opts
                        .deploy_concurrency
                        .unwrap_or(d.concurrency)
                        .clamp(1, 256),
                    retry_base_ms: opts
                        .deploy_retry_base_ms
                        .unwrap_or(d.retry_base_ms)
                        .clamp(1, 3_600_000),
                    renewal_rate: opts.renewal_rate.unwrap_or(d.renewal_rate),
                    acm_check_interval_ms: opts
                        .acm_check_interval_ms
                        .unwrap_or(d.acm_check_interval_ms)
                        .clamp(100, 7 * 86_400_000),
                    clock: d.clock,
                }
            },
            audit_verify_interval_ms: opts
                .audit_verify_interval_ms
                .unwrap_or(60_000)
                .clamp(100, 86_400_000),
            log: opts.log.unwrap_or_else(|| "info".into()),
        };
        config.validate()?;
        Ok(config)
    }
}

impl ServerConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.node_id == 0 {
            anyhow::bail!("--node-id must be 1 or more");
        }
        for (flag, rate) in [
            ("--acm-import-rate", self.deploy.acm_import_rate),
            ("--renewal-rate", self.deploy.renewal_rate),
        ] {
            if !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0) {
                anyhow::bail!("{flag} must be a positive number of calls per second, not {rate}");
            }
        }
        if self.tls.is_none() && !self.insecure {
            anyhow::bail!("node-to-node TLS is required: pass --tls-ca/--tls-cert/--tls-key (see `certplane tls init`), or --insecure for development");
        }
        if self.tls.is_some() && self.insecure {
            anyhow::bail!("--insecure and TLS files are mutually exclusive");
        }
        let t = &self.raft;
        if t.heartbeat_ms == 0
            || t.election_min_ms <= t.heartbeat_ms
            || t.election_max_ms <= t.election_min_ms
        {
            anyhow::bail!("raft timing needs 0 < heartbeat-ms < election-min-ms < election-max-ms");
        }
        if t.snapshot_every == 0 {
            anyhow::bail!("--snapshot-every must be 1 or more");
        }
        if !self.initial_cluster.is_empty() && !self.initial_cluster.contains_key(&self.node_id) {
            anyhow::bail!(
                "--initial-cluster does not list this node's id {}",
                self.node_id
            );
        }
        if !self.initial_cluster.is_empty() && self.join.is_some() {
            anyhow::bail!("--initial-cluster and --join are mutually exclusive");
        }
        if self.max_body_bytes < 1024 {
            anyhow::bail!("--max-body-bytes must be at least 1024");
        }
        Ok(())
    }

    pub fn advertised_api(&self) -> String {
        self.advertise_api
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.api_addr))
    }

    pub fn advertised_cluster(&self) -> String {
        self.advertise_cluster
            .clone()
            .unwrap_or_else(|| self.cluster_addr.to_string())
    }
}

pub fn parse_initial_cluster(spec: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut members = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--initial-cluster entry {part:?} is not id=host:port")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--initial-cluster id {id:?} is not a number"))?;
        if id == 0 || addr.trim().is_empty() || !addr.contains(':') {
            anyhow::bail!("--initial-cluster entry {part:?} is not id=host:port");
        }
        if members.insert(id, addr.trim().to_string()).is_some() {
            anyhow::bail!("--initial-cluster lists node {id} twice");
        }
    }
    if members.is_empty() {
        anyhow::bail!("--initial-cluster is empty");
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_bad_entries() {
        let m = parse_initial_cluster("1=127.0.0.1:8201, 2=127.0.0.1:8211").unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(parse_initial_cluster("x=a:1").is_err());
        assert!(parse_initial_cluster("1").is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "node-id = 3\ndata-dir = \"/tmp/x\"\ninsecure = true\nheartbeat-ms = 40\n",
        )
        .unwrap();
        let cli = ServerOptions {
            config: Some(path.clone()),
            node_id: Some(5),
            ..Default::default()
        };
        let c = cli.resolve().unwrap();
        assert_eq!(c.node_id, 5);
        assert_eq!(c.raft.heartbeat_ms, 40);
        assert_eq!(c.raft.election_min_ms, 80);
        std::fs::write(&path, "node-idd = 3\n").unwrap();
        assert!(ServerOptions {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }

    #[test]
    fn tls_is_required_unless_insecure() {
        let base = ServerOptions {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        assert!(base.clone().resolve().is_err());
        assert!(ServerOptions {
            insecure: Some(true),
            ..base
        }
        .resolve()
        .is_ok());
    }
}

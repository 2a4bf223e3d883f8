//! Shared by the benchmarks: start `certplane server` processes on loopback and drive them over HTTP.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_certplane");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub struct Node {
    pub id: u64,
    pub api: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        self.child = Some(
            Command::new(BIN)
                .args(&self.args)
                // moto's test credentials, for benchmarks that deploy to ACM.
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn certplane"),
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub token: String,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Start `n` nodes with mutual TLS and durable (fsync'd) writes, initialise, wait for a leader.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// As [`Cluster::start`], with `extra` flags for every node.
    pub async fn start_with(n: usize, extra: &[String]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = dir.path().join("tls");
        let out = Command::new(BIN)
            .args(["tls", "init", "--nodes", &n.to_string(), "--out"])
            .arg(&tls)
            .output()
            .expect("tls");
        assert!(out.status.success());
        // Every node holds the same key-encryption key, so any leader can use the built-in CA.
        let kek = dir.path().join("kek");
        let out = Command::new(BIN)
            .args(["operator", "generate-kek", "--out"])
            .arg(&kek)
            .output()
            .expect("kek");
        assert!(out.status.success());
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}=127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (api, cluster))| {
                let id = i as u64 + 1;
                Node {
                    id,
                    api: format!("http://127.0.0.1:{api}"),
                    args: vec![
                        "server".into(),
                        format!("--node-id={id}"),
                        format!(
                            "--data-dir={}",
                            dir.path().join(format!("node-{id}")).display()
                        ),
                        format!("--api-addr=127.0.0.1:{api}"),
                        format!("--cluster-addr=127.0.0.1:{cluster}"),
                        format!("--initial-cluster={initial}"),
                        format!("--tls-ca={}", tls.join("ca.pem").display()),
                        format!(
                            "--tls-cert={}",
                            tls.join(format!("node-{id}.pem")).display()
                        ),
                        format!(
                            "--tls-key={}",
                            tls.join(format!("node-{id}-key.pem")).display()
                        ),
                        format!("--kek-file={}", kek.display()),
                        "--log=error".into(),
                    ]
                    .into_iter()
                    .chain(extra.iter().cloned())
                    .collect(),
                    child: None,
                    log: dir.path().join(format!("node-{id}.log")),
                }
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            nodes,
            token: String::new(),
            http: reqwest::Client::new(),
        };
        for node in &mut cluster.nodes {
            node.start();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = cluster
                .http
                .post(format!("{}/v1/sys/init", cluster.nodes[0].api))
                .json(&json!({}))
                .send()
                .await
            {
                if r.status().as_u16() == 201 {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    cluster.token = v["root_token"].as_str().unwrap_or_default().to_string();
                    break;
                }
            }
            assert!(Instant::now() < deadline, "cluster did not initialise");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.leader(None).await;
        cluster
    }

    pub async fn status(&self, node: &Node) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/v1/sys/cluster", node.api))
            .bearer_auth(&self.token)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The leader agreed by the running nodes, other than `not`.
    pub async fn leader(&self, not: Option<u64>) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for n in self.nodes.iter().filter(|n| n.running()) {
                leaders.push(self.status(n).await.and_then(|v| v["leader"].as_u64()));
            }
            if let Some(Some(first)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*first)) && Some(*first) != not {
                    return *first;
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// One import; Ok(latency) when acknowledged.
    pub async fn import(&self, api: &str, body: &Value, key: &str) -> Result<Duration, u16> {
        let started = Instant::now();
        let r = self
            .http
            .post(format!("{api}/v1/certificates/import"))
            .bearer_auth(&self.token)
            .header("idempotency-key", key)
            .timeout(Duration::from_secs(10))
            .json(body)
            .send()
            .await
            .map_err(|_| 0u16)?;
        if r.status().is_success() {
            Ok(started.elapsed())
        } else {
            Err(r.status().as_u16())
        }
    }

    /// Wait until every running node has applied the same index.
    pub async fn converge(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut applied = Vec::new();
            for n in self.nodes.iter().filter(|n| n.running()) {
                applied.push(
                    self.status(n)
                        .await
                        .and_then(|v| v["applied_index"].as_u64()),
                );
            }
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                return;
            }
            assert!(Instant::now() < deadline, "nodes did not converge");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn import_body(certs: &certplane_pki::testing::TestCa, now: i64, i: usize, tag: &str) -> Value {
    let cn = format!("{tag}-{i}.bench.example.com");
    let (chain, _) = certs.issue_leaf(&cn, &[&cn], now - 86_400_000, now + 30 * 86_400_000);
    json!({ "chain_pem": chain, "owner": "bench", "zone": "bench" })
}

pub struct Run {
    pub ok: usize,
    pub throughput: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// `clients` tasks share `n` requests; `send(i, client)` returns true when request `i` succeeded.
pub async fn drive<F, Fut>(n: usize, clients: usize, send: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let send = Arc::new(send);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (next, send) = (next.clone(), send.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                if send(i, c).await {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    lat.sort();
    Run {
        ok: lat.len(),
        throughput: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Keep a copy of the report next to the build output (never inside the source tree).
pub fn write_report(name: &str, text: &str) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    if std::fs::write(&path, text).is_ok() {
        eprintln!("report written to {}", path.display());
    }
}

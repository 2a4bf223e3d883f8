//! Import throughput and latency on a 3-node loopback cluster with durable writes, for 1, 16 and 64
//! concurrent clients, as a ratio against a 1-node cluster measured in the same run.
//!
//! Run: `cargo bench -p certplane-server --bench import_throughput` (add `-- --imports N` to change
//! the number of imports per run; default 2,000).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{import_body, ms, percentile, Cluster};
use serde_json::Value;

struct Run {
    clients: usize,
    throughput: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(cluster: &Cluster, bodies: Arc<Vec<Value>>, clients: usize, tag: &str) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let apis: Vec<String> = cluster.nodes.iter().map(|n| n.api.clone()).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (bodies, next, apis) = (bodies.clone(), next.clone(), apis.clone());
        let http = cluster.http.clone();
        let token = cluster.token.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= bodies.len() {
                    break;
                }
                // Spread clients over every node, as a load balancer would.
                let api = &apis[c % apis.len()];
                let t = Instant::now();
                let r = http
                    .post(format!("{api}/v1/certificates/import"))
                    .bearer_auth(&token)
                    .header("idempotency-key", format!("{tag}-{i}"))
                    .json(&bodies[i])
                    .send()
                    .await;
                if matches!(r, Ok(ref r) if r.status().is_success()) {
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
        clients,
        throughput: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let imports: usize = args
        .iter()
        .position(|a| a == "--imports")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let ca = certplane_pki::testing::TestCa::new();
    let now = certplane_pki::testing::now_ms();
    let mut report = String::new();
    report.push_str(&format!("imports per run: {imports}\n"));
    report.push_str("| nodes | clients | imports/s | p50 ms | p99 ms | throughput vs 1 node |\n|---|---|---|---|---|---|\n");
    let mut baseline = Vec::new();
    for nodes in [1usize, 3] {
        let cluster = Cluster::start(nodes).await;
        for (k, clients) in [1usize, 16, 64].into_iter().enumerate() {
            let tag = format!("n{nodes}c{clients}");
            let bodies: Arc<Vec<Value>> = Arc::new(
                (0..imports)
                    .map(|i| import_body(&ca, now, i, &tag))
                    .collect(),
            );
            let r = run(&cluster, bodies, clients, &tag).await;
            if nodes == 1 {
                baseline.push(r.throughput);
            }
            let ratio = r.throughput / baseline.get(k).copied().unwrap_or(r.throughput);
            let line = format!(
                "| {nodes} | {} | {:.0} | {:.1} | {:.1} | {:.2} |\n",
                r.clients,
                r.throughput,
                ms(r.p50),
                ms(r.p99),
                ratio
            );
            print!("{line}");
            report.push_str(&line);
        }
    }
    println!("{report}");
    common::write_report("bench-import-throughput.md", &report);
}

//! Import throughput and latency on a 3-node loopback cluster with durable writes, for 1, 16 and 64
//! concurrent clients, as a ratio against a 1-node cluster measured in the same run.
//!
//! Run: `cargo bench -p certplane-server --bench import_throughput` (add `-- --imports N` to change
//! the number of imports per run; default 2,000).

mod common;

use std::sync::Arc;

use common::{drive, import_body, ms, Cluster, Run};
use serde_json::Value;

/// `clients` importers share the bodies; each is spread over every node, as a load balancer would.
async fn run(cluster: &Cluster, bodies: Arc<Vec<Value>>, clients: usize, tag: &str) -> Run {
    let apis: Vec<String> = cluster.nodes.iter().map(|n| n.api.clone()).collect();
    let http = cluster.http.clone();
    let token = cluster.token.clone();
    let tag = tag.to_string();
    let n = bodies.len();
    drive(n, clients, move |i, c| {
        let api = apis[c % apis.len()].clone();
        let (http, token, bodies) = (http.clone(), token.clone(), bodies.clone());
        let key = format!("{tag}-{i}");
        async move {
            http.post(format!("{api}/v1/certificates/import"))
                .bearer_auth(&token)
                .header("idempotency-key", key)
                .json(&bodies[i])
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await
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
                "| {nodes} | {clients} | {:.0} | {:.1} | {:.1} | {:.2} |\n",
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

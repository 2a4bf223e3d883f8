//! Failover: SIGKILL the leader of a 3-node cluster and time the first acknowledged write through a
//! survivor (>= 20 trials); and the longest write gap around a planned `transfer-leader`. Both are
//! reported against the steady-state write latency measured in the same run.
//!
//! Run: `cargo bench -p certplane-server --bench failover` (`-- --trials N`, default 20).

mod common;

use std::time::{Duration, Instant};

use common::{import_body, ms, percentile, Cluster};
use serde_json::json;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = args
        .iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ca = certplane_pki::testing::TestCa::new();
    let now = certplane_pki::testing::now_ms();
    let mut cluster = Cluster::start(3).await;
    let mut seq = 0usize;

    // Baseline: steady-state write latency through a follower.
    let leader = cluster.leader(None).await;
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .map(|n| n.api.clone())
        .unwrap_or_default();
    let mut steady = Vec::new();
    for _ in 0..200 {
        seq += 1;
        if let Ok(d) = cluster
            .import(
                &follower,
                &import_body(&ca, now, seq, "steady"),
                &format!("s-{seq}"),
            )
            .await
        {
            steady.push(d);
        }
    }
    steady.sort();
    let steady_p50 = percentile(&steady, 0.5);

    // Unplanned: SIGKILL the leader, then write through a survivor until one is acknowledged.
    let mut failover = Vec::new();
    for trial in 0..trials {
        let leader = cluster.leader(None).await;
        let survivor = cluster
            .nodes
            .iter()
            .find(|n| n.id != leader)
            .map(|n| n.api.clone())
            .unwrap_or_default();
        cluster.node(leader).kill();
        let killed_at = Instant::now();
        loop {
            seq += 1;
            let body = import_body(&ca, now, seq, "failover");
            if cluster
                .import(&survivor, &body, &format!("f-{seq}"))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "no write acknowledged after killing the leader"
            );
        }
        failover.push(killed_at.elapsed());
        cluster.node(leader).start();
        cluster.converge().await;
        eprintln!(
            "trial {trial}: first acknowledged write {:.0} ms after SIGKILL",
            ms(failover[failover.len() - 1])
        );
    }
    failover.sort();

    // Planned: continuous writes through a follower while leadership moves; the gap is the longest
    // time between two consecutive acknowledgements around the transfer.
    let mut gaps = Vec::new();
    for _ in 0..10 {
        let leader = cluster.leader(None).await;
        let writer_api = cluster
            .nodes
            .iter()
            .find(|n| n.id != leader)
            .map(|n| n.api.clone())
            .unwrap_or_default();
        let leader_api = cluster
            .nodes
            .iter()
            .find(|n| n.id == leader)
            .map(|n| n.api.clone())
            .unwrap_or_default();
        let mut last_ack = Instant::now();
        let mut max_gap = Duration::ZERO;
        let mut transferred_at = None;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            if transferred_at.is_none() && started.elapsed() > Duration::from_millis(500) {
                let r = cluster
                    .http
                    .post(format!("{leader_api}/v1/sys/cluster/transfer-leader"))
                    .bearer_auth(&cluster.token)
                    .json(&json!({}))
                    .send()
                    .await;
                assert!(
                    matches!(r, Ok(ref r) if r.status().is_success()),
                    "transfer-leader failed"
                );
                transferred_at = Some(Instant::now());
            }
            seq += 1;
            if cluster
                .import(
                    &writer_api,
                    &import_body(&ca, now, seq, "planned"),
                    &format!("p-{seq}"),
                )
                .await
                .is_ok()
            {
                if transferred_at.is_some() {
                    max_gap = max_gap.max(last_ack.elapsed());
                }
                last_ack = Instant::now();
            }
        }
        assert_ne!(cluster.leader(Some(leader)).await, leader);
        gaps.push(max_gap);
    }
    gaps.sort();

    let report = format!(
        "steady-state write p50 through a follower (baseline): {:.1} ms\n\
         unplanned failover, {} trials: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (p50 = {:.0}x baseline)\n\
         planned transfer-leader, {} trials: write gap p50 {:.0} ms, max {:.0} ms (p50 = {:.1}x baseline)\n",
        ms(steady_p50),
        failover.len(),
        ms(percentile(&failover, 0.5)),
        ms(percentile(&failover, 0.99)),
        ms(*failover.last().unwrap_or(&Duration::ZERO)),
        ms(percentile(&failover, 0.5)) / ms(steady_p50).max(0.001),
        gaps.len(),
        ms(percentile(&gaps, 0.5)),
        ms(*gaps.last().unwrap_or(&Duration::ZERO)),
        ms(percentile(&gaps, 0.5)) / ms(steady_p50).max(0.001),
    );
    println!("{report}");
    common::write_report("bench-failover.md", &report);
}

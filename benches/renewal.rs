//! Automatic renewal and ACM deployment, two measurements in one run:
//!
//! 1. **Renewal sweep** (built-in CA, no ACM): `--certs N` certificates (default 10,000) on a
//!    3-node cluster are issued so they all expire at the same second, with `renew_before` 10 s.
//!    The sweep time is measured from the moment they come due until the issuer has issued every
//!    renewal. Baseline, in the same run: issuing the same number of fresh certificates through
//!    the API with 64 clients. The ratio compares renewals/s with that issuance throughput.
//! 2. **ACM quota**: `--deploys M` certificates (default 40) are deployed through the
//!    fault-injecting proxy, which enforces ImportCertificate at 1 call/s like ACM's default quota,
//!    with `--acm-import-rate=1`. The report gives the share of the quota used
//!    ((imports - 1) / seconds from first to last), the calls the quota refused (retried), and the
//!    failed deployments (goal: none).
//!
//! Run: `cargo bench -p certplane-server --bench renewal -- [--certs N] [--deploys M]` (add
//! `--profile dev` before `--` to reuse the test build)

#[path = "../tests/support/aws.rs"]
mod aws;
mod common;

use std::time::{Duration, Instant};

use common::{drive, Cluster};
use serde_json::{json, Value};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn put_zone(cluster: &Cluster, path: &str, policy: Value) {
    let r = cluster
        .http
        .put(format!("{}/v1/zones{path}", cluster.nodes[0].api))
        .bearer_auth(&cluster.token)
        .json(&json!({ "policy": policy }))
        .send()
        .await
        .expect("zone");
    assert!(
        r.status().is_success(),
        "zone: {}",
        r.text().await.unwrap_or_default()
    );
}

/// The sum over nodes of `certplane_renewal_started_total` (only the leader's is non-zero).
async fn renewals_started(cluster: &Cluster) -> u64 {
    metric_sum(cluster, "certplane_renewal_started_total").await as u64
}

/// A metric summed over every node (the workers that record it run on the leader only).
async fn metric_sum(cluster: &Cluster, name: &str) -> f64 {
    let mut total = 0.0;
    for node in &cluster.nodes {
        if let Ok(r) = cluster
            .http
            .get(format!("{}/metrics", node.api))
            .send()
            .await
        {
            let text = r.text().await.unwrap_or_default();
            total += text
                .lines()
                .filter(|l| l.split([' ', '{']).next() == Some(name))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    total
}

async fn issued_count(cluster: &Cluster) -> u64 {
    for node in &cluster.nodes {
        if let Ok(r) = cluster
            .http
            .get(format!("{}/v1/issuers/builtin?consistency=stale", node.api))
            .bearer_auth(&cluster.token)
            .send()
            .await
        {
            if let Ok(v) = r.json::<Value>().await {
                if let Some(n) = v["issued_count"].as_u64() {
                    return n;
                }
            }
        }
    }
    0
}

/// Issue `n` certificates in `zone` with 64 clients; `validity(i)` gives each one's validity.
async fn issue_many(
    cluster: &Cluster,
    zone: &str,
    tag: &str,
    n: usize,
    validity: impl Fn() -> String + Send + Sync + 'static,
) -> common::Run {
    let apis: Vec<String> = cluster.nodes.iter().map(|n| n.api.clone()).collect();
    let (http, token, zone, tag) = (
        cluster.http.clone(),
        cluster.token.clone(),
        zone.to_string(),
        tag.to_string(),
    );
    drive(n, 64, move |i, c| {
        let (http, token) = (http.clone(), token.clone());
        let api = apis[c % apis.len()].clone();
        let body = json!({"zone": zone, "sans": [format!("{tag}-{i}.bench.example")],
                          "key": {"type": "ecdsa_p256"}, "validity": validity()});
        let key = format!("{tag}-{i}");
        async move {
            for _ in 0..20 {
                let r = http
                    .post(format!("{api}/v1/certificate-requests?wait=0s"))
                    .bearer_auth(&token)
                    .header("idempotency-key", &key)
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => return true,
                    Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {}
                    Ok(r) => {
                        eprintln!(
                            "request refused: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        return false;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    })
    .await
}

async fn wait_issued(cluster: &Cluster, target: u64, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if issued_count(cluster).await >= target {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "issuer stuck below {target}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sweep(n: usize) -> String {
    let cluster = Cluster::start_with(3, &["--renewal-rate=100000".to_string()]).await;
    // Baseline: fresh issuance, 64 clients.
    put_zone(&cluster, "/fresh", json!({"auto_renew": {"value": false}})).await;
    let started = Instant::now();
    let fresh = issue_many(&cluster, "/fresh", "fresh", n, || "30d".to_string()).await;
    wait_issued(&cluster, n as u64, Duration::from_secs(600)).await;
    let fresh_rate = n as f64 / started.elapsed().as_secs_f64();

    // The batch: every certificate expires at the same second, so all come due together.
    let renew_before_s = 10;
    put_zone(
        &cluster,
        "/sweep",
        json!({"max_validity": {"value": "1h"}, "notify_before": {"value": "50s"},
               "renew_before": {"value": format!("{renew_before_s}s")}}),
    )
    .await;
    let margin_s = (n as i64 / 200).max(30);
    let expires_at_ms = (now_ms() / 1000 + margin_s + renew_before_s) * 1000;
    let batch = issue_many(&cluster, "/sweep", "sweep", n, move || {
        format!("{}s", (expires_at_ms - now_ms()) / 1000)
    })
    .await;
    assert_eq!(batch.ok, n, "every batch request accepted");
    wait_issued(&cluster, 2 * n as u64, Duration::from_secs(600)).await;
    // Successors are not renewed again during the measurement.
    put_zone(
        &cluster,
        "/sweep",
        json!({"max_validity": {"value": "1h"}, "notify_before": {"value": "50s"},
               "renew_before": {"value": format!("{renew_before_s}s")}, "auto_renew": {"value": false}}),
    )
    .await;
    let due_ms = expires_at_ms - renew_before_s * 1000;
    let wait = due_ms - now_ms();
    assert!(wait > 0, "the batch took longer to issue than its margin");
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    let due = Instant::now();
    eprintln!("sweep: {n} renewals due now");
    let batched_before = (
        metric_sum(&cluster, "certplane_worker_batch_commands_sum").await,
        metric_sum(&cluster, "certplane_worker_batch_commands_count").await,
    );
    // Also note when the renewal worker had submitted every renewal (its counter on the leader).
    let mut submitted_s = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut polls = 0u64;
    let done = loop {
        // The counter needs a scrape of every node's /metrics: look at it every 10th poll only, so
        // the measurement does not load the nodes it measures.
        polls += 1;
        if submitted_s.is_none()
            && polls.is_multiple_of(10)
            && renewals_started(&cluster).await >= n as u64
        {
            submitted_s = Some(due.elapsed().as_secs_f64());
        }
        if issued_count(&cluster).await >= 3 * n as u64 {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the sweep did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sweep_s = done.duration_since(due).as_secs_f64();
    eprintln!("sweep: done in {sweep_s:.1} s");
    let commands =
        metric_sum(&cluster, "certplane_worker_batch_commands_sum").await - batched_before.0;
    let entries =
        metric_sum(&cluster, "certplane_worker_batch_commands_count").await - batched_before.1;
    let submitted_s = submitted_s.unwrap_or(sweep_s);
    let renew_rate = n as f64 / sweep_s;
    format!(
        "| {n} | {:.0} | {submitted_s:.1} | {:.1} | {:.0} | {:.2} |\n\nfresh issuance p50 {:.1} ms, p99 {:.1} ms; the sweep includes the spread of up to {} ms (a tenth of renew_before); the workers proposed {commands:.0} commands in {entries:.0} log entries ({:.1} per entry)\n",
        fresh_rate,
        sweep_s,
        renew_rate,
        renew_rate / fresh_rate,
        common::ms(fresh.p50),
        common::ms(fresh.p99),
        renew_before_s * 100,
        commands / entries.max(1.0),
    )
}

async fn quota(m: usize) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_moto, proxy, _procs) = aws::start_aws(dir.path()).await;
    aws::proxy_config(&proxy, json!({"import_rate": 1.0})).await;
    let cluster = Cluster::start_with(
        3,
        &[
            format!("--aws-endpoint-url={proxy}"),
            "--acm-import-rate=1".to_string(),
            "--deploy-concurrency=8".to_string(),
        ],
    )
    .await;
    put_zone(
        &cluster,
        "/acm",
        json!({"auto_renew": {"value": false},
               "destinations": {"value": [{"type": "acm", "region": "eu-west-1"}]}}),
    )
    .await;
    let run = issue_many(&cluster, "/acm", "acm", m, || "30d".to_string()).await;
    assert_eq!(run.ok, m);
    // Wait for every deployment; count failed ones on the way.
    let deadline = Instant::now() + Duration::from_secs(m as u64 * 4 + 120);
    let (deployed, failed) = loop {
        let r = cluster
            .http
            .get(format!(
                "{}/v1/certificates?zone=/acm&limit=1000",
                cluster.nodes[0].api
            ))
            .bearer_auth(&cluster.token)
            .send()
            .await
            .expect("list");
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let deployed = items
            .iter()
            .filter(|c| c["deployments"][0]["state"] == "deployed")
            .count();
        let failed = items
            .iter()
            .filter(|c| {
                c["deployments"][0]["state"] == "failed"
                    || c["deployments"][0]["attempts"].as_u64() > Some(2)
            })
            .count();
        if deployed == m || Instant::now() > deadline {
            break (deployed, failed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let log = aws::proxy_log(&proxy).await;
    let imports: Vec<f64> = log
        .iter()
        .filter(|c| c["operation"] == "ImportCertificate" && c["status"] == 200)
        .filter_map(|c| c["at"].as_f64())
        .collect();
    let refused = log
        .iter()
        .filter(|c| c["operation"] == "ImportCertificate" && c["injected"] == "rate_limit")
        .count();
    let span = imports.last().copied().unwrap_or(0.0) - imports.first().copied().unwrap_or(0.0);
    let share = if span > 0.0 {
        (imports.len() as f64 - 1.0) / span
    } else {
        0.0
    };
    format!(
        "| {m} | {deployed} | {} | {span:.1} | {:.1} % | {refused} | {failed} |\n",
        imports.len(),
        share * 100.0
    )
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n = arg("--certs", 10_000);
    let m = arg("--deploys", 40);
    let mut report = String::from(
        "## Renewal sweep\n\n| certificates | fresh issuance/s | all submitted s | sweep s | renewals/s | vs fresh issuance |\n|---|---|---|---|---|---|\n",
    );
    report.push_str(&sweep(n).await);
    report.push_str(
        "\n## ACM import quota (1 ImportCertificate/s enforced by the proxy)\n\n| certificates | deployed | imports | seconds | quota used | refused by quota | failed deployments |\n|---|---|---|---|---|---|---|\n",
    );
    report.push_str(&quota(m).await);
    println!("{report}");
    common::write_report("bench-renewal.md", &report);
}

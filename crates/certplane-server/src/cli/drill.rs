//! Failover drills: `certplane drill watch` (the operator injects the fault) and
//! `certplane drill failover --transfer` (a planned leader transfer, measured).
//!
//! `watch` writes a probe through the address it is given (a load balancer or a node) at a steady
//! rate and reads it back, linearizably, after each write. Every stretch of failed probes is a
//! window (start, length). At the end it waits for the members to settle and compares their applied
//! index, state digest and audit chain head, and verifies each node's audit chain.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::commands::{client, local_fail, print};
use super::Target;
use crate::client::ApiClient;

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Probe writes and reads at a steady rate; report unavailability windows and whether every
    /// node ends with the same state. Stop with Ctrl-C or after --duration.
    Watch(WatchArgs),
    /// Transfer leadership while writing as fast as possible; report the longest write gap.
    Failover(FailoverArgs),
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// How long to watch (e.g. 60s, 10m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time between probes.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long a probe (write, then read) may take before it counts as failed. A write through a
    /// follower during an election waits for the new leader instead of failing, so this is what
    /// turns a stall into a reported window.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How long to wait at the end for the nodes to agree.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Name the drill (its probe record is `GET /v1/sys/probe/<id>`); default: a random id.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Do the planned variant: transfer leadership to another voter (required; for an unplanned
    /// failover run `drill watch` and stop the leader yourself).
    #[arg(long)]
    pub transfer: bool,
    /// Transfer to this node (default: the most caught-up other voter).
    #[arg(long)]
    pub to: Option<u64>,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn drill_id() -> String {
    format!("drill-{}", uuid::Uuid::new_v4().simple())
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// One probe: write `seq`, then read it back; `Err` says which half failed.
async fn probe(
    c: &ApiClient,
    drill: &str,
    seq: u64,
    timeout: Duration,
) -> Result<(), &'static str> {
    let write = tokio::time::timeout(
        timeout,
        c.post(
            "/v1/sys/probe",
            &json!({ "drill": drill, "seq": seq }),
            None,
        ),
    )
    .await;
    if !matches!(write, Ok(Ok(_))) {
        return Err("write");
    }
    let read = tokio::time::timeout(timeout, c.get(&format!("/v1/sys/probe/{drill}"), &[])).await;
    match read {
        Ok(Ok(v)) if v["seq"].as_u64().is_some_and(|s| s >= seq) => Ok(()),
        _ => Err("read"),
    }
}

#[derive(Default)]
struct Window {
    start: Duration,
    end: Option<Duration>,
    failed_writes: u64,
    failed_reads: u64,
}

/// Each member's applied index, digest and audit head, once they agree or `settle` passes.
async fn settle(c: &ApiClient, settle: Duration) -> Value {
    let deadline = Instant::now() + settle;
    loop {
        let members = match c.get("/v1/sys/cluster", &[]).await {
            Ok(v) => v["members"].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut nodes = Vec::new();
        for m in &members {
            let api = m["api_addr"].as_str().unwrap_or("").to_string();
            let report = if api.is_empty() {
                None
            } else {
                c.at(&api).get("/v1/sys/node", &[]).await.ok()
            };
            nodes.push(json!({
                "id": m["id"],
                "api": api,
                "reachable": report.is_some(),
                "applied_index": report.as_ref().map(|r| r["node"]["applied_index"].clone()),
                "state_digest": report.as_ref().map(|r| r["state_digest"].clone()),
                "audit_head": report.as_ref().map(|r| r["audit_head"]["hash"].clone()),
            }));
        }
        let same = |nodes: &[Value], field: &str| {
            !nodes.is_empty()
                && nodes.iter().all(|n| n["reachable"] == true)
                && nodes.iter().all(|n| n[field] == nodes[0][field])
        };
        let digests = same(&nodes, "applied_index") && same(&nodes, "state_digest");
        let heads = same(&nodes, "audit_head");
        if (digests && heads) || Instant::now() >= deadline {
            let mut verified = true;
            for n in nodes.iter_mut() {
                let api = n["api"].as_str().unwrap_or("").to_string();
                let ok = match c
                    .at(&api)
                    .get("/v1/audit/verify", &[("consistency", "stale".to_string())])
                    .await
                {
                    Ok(v) => v["ok"] == true,
                    Err(_) => false,
                };
                n["audit_chain_ok"] = json!(ok);
                verified &= ok;
            }
            return json!({
                "nodes": nodes,
                "digests_agree": digests,
                "audit_heads_agree": heads,
                "audit_chains_verified": verified,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn watch_text(v: &Value) -> String {
    let mut lines = vec![format!(
        "{} probes through {} in {} ms: {} failed writes, {} failed reads",
        v["probes"],
        v["target"].as_str().unwrap_or(""),
        v["duration_ms"],
        v["failed_writes"],
        v["failed_reads"]
    )];
    for w in v["windows"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  unavailable from +{} ms for {} ms ({} writes, {} reads failed)",
            w["start_ms"], w["length_ms"], w["failed_writes"], w["failed_reads"]
        ));
    }
    for n in v["settled"]["nodes"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  node {} {}: applied {} digest {} audit head {} chain {}",
            n["id"],
            n["api"].as_str().unwrap_or(""),
            n["applied_index"],
            n["state_digest"].as_str().unwrap_or("-"),
            n["audit_head"].as_str().unwrap_or("-"),
            if n["audit_chain_ok"] == true {
                "ok"
            } else {
                "NOT VERIFIED"
            }
        ));
    }
    lines.push(format!(
        "digests agree: {}, audit heads agree: {}, audit chains verified: {}",
        v["settled"]["digests_agree"],
        v["settled"]["audit_heads_agree"],
        v["settled"]["audit_chains_verified"]
    ));
    lines.join("\n")
}

async fn watch(target: &Target, args: WatchArgs) -> i32 {
    let c = client(target);
    let drill = args.id.clone().unwrap_or_else(drill_id);
    if !certplane_core::apply::is_drill_id(&drill) {
        return local_fail("--id is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_'");
    }
    let started = Instant::now();
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seq, mut failed_writes, mut failed_reads) = (0u64, 0u64, 0u64);
    let mut windows: Vec<Window> = Vec::new();
    // Ctrl-C, or `kill` (SIGTERM) when the watch runs in the background: stop probing and report.
    let stop = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        if started.elapsed() >= args.duration {
            break;
        }
        seq += 1;
        let at = started.elapsed();
        match probe(&c, &drill, seq, args.timeout).await {
            Ok(()) => {
                if let Some(w) = windows.last_mut().filter(|w| w.end.is_none()) {
                    w.end = Some(at);
                }
            }
            Err(which) => {
                if windows.last().is_none_or(|w| w.end.is_some()) {
                    windows.push(Window {
                        start: at,
                        ..Window::default()
                    });
                }
                if let Some(w) = windows.last_mut() {
                    if which == "write" {
                        w.failed_writes += 1;
                        failed_writes += 1;
                    } else {
                        w.failed_reads += 1;
                        failed_reads += 1;
                    }
                }
            }
        }
    }
    let ended = started.elapsed();
    let windows_json: Vec<Value> = windows
        .iter()
        .map(|w| {
            let end = w.end.unwrap_or(ended);
            json!({
                "start_ms": millis(w.start),
                "length_ms": millis(end.saturating_sub(w.start)),
                "open_at_end": w.end.is_none(),
                "failed_writes": w.failed_writes,
                "failed_reads": w.failed_reads,
            })
        })
        .collect();
    let settled = settle(&c, args.settle).await;
    let ok = settled["digests_agree"] == true
        && settled["audit_heads_agree"] == true
        && settled["audit_chains_verified"] == true;
    let report = json!({
        "drill": drill,
        "target": c.base(),
        "duration_ms": millis(ended),
        "interval_ms": millis(args.interval),
        "probes": seq,
        "failed_writes": failed_writes,
        "failed_reads": failed_reads,
        "windows": windows_json,
        "longest_window_ms": windows_json.iter().filter_map(|w| w["length_ms"].as_u64()).max().unwrap_or(0),
        "settled": settled,
        "ok": ok,
    });
    print(target.output, &report, watch_text);
    if ok {
        0
    } else {
        1
    }
}

async fn failover(target: &Target, args: FailoverArgs) -> i32 {
    if !args.transfer {
        return local_fail(
            "only the planned variant runs by itself: pass --transfer (for an unplanned failover, run `certplane drill watch` and stop the leader)",
        );
    }
    let c = client(target);
    let before = match c.get("/v1/sys/cluster", &[]).await {
        Ok(v) => v,
        Err(e) => return super::commands::fail(&e),
    };
    let from = before["leader"].as_u64();
    let drill = drill_id();
    let started = Instant::now();
    let writer_client = c.clone();
    let writer_drill = drill.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let timeout = args.timeout;
    let writer = tokio::spawn(async move {
        let mut acks: Vec<(Duration, Duration)> = Vec::new();
        let mut failed = 0u64;
        let mut seq = 0u64;
        while !*stop_rx.borrow_and_update() {
            seq += 1;
            let sent = started.elapsed();
            let write = tokio::time::timeout(
                timeout,
                writer_client.post(
                    "/v1/sys/probe",
                    &json!({ "drill": writer_drill, "seq": seq }),
                    None,
                ),
            )
            .await;
            match write {
                Ok(Ok(_)) => acks.push((sent, started.elapsed())),
                _ => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        (acks, failed)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let transfer_at = started.elapsed();
    let body = match args.to {
        Some(to) => json!({ "to": to }),
        None => json!({}),
    };
    let transferred = c.post("/v1/sys/cluster/transfer-leader", &body, None).await;
    // Keep writing while the new leader settles in.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let (acks, failed) = match writer.await {
        Ok(r) => r,
        Err(e) => return local_fail(format!("the probe writer stopped: {e}")),
    };
    let after = c.get("/v1/sys/cluster", &[]).await.ok();
    let to = after.as_ref().and_then(|v| v["leader"].as_u64());
    let mut baseline: Vec<u64> = acks
        .iter()
        .filter(|(sent, _)| *sent < transfer_at)
        .map(|(sent, done)| millis(done.saturating_sub(*sent)))
        .collect();
    baseline.sort_unstable();
    let baseline_p50 = baseline.get(baseline.len() / 2).copied().unwrap_or(0);
    // The gap: the longest time between consecutive acknowledgements from the transfer on.
    let mut gap = 0u64;
    let mut last = transfer_at;
    for (_, done) in acks.iter().filter(|(_, done)| *done >= transfer_at) {
        gap = gap.max(millis(done.saturating_sub(last)));
        last = *done;
    }
    let ok = transferred.is_ok() && to.is_some() && to != from;
    let report = json!({
        "drill": drill,
        "target": c.base(),
        "from": from,
        "to": to,
        "transfer": match &transferred { Ok(v) => v.clone(), Err(e) => json!({ "error": e.to_string() }) },
        "writes": acks.len(),
        "failed_writes": failed,
        "baseline_write_p50_ms": baseline_p50,
        "write_gap_ms": gap,
        "ok": ok,
    });
    print(target.output, &report, |v| {
        format!(
            "leader {} -> {}: longest write gap {} ms ({} writes, {} failed; steady p50 {} ms)",
            v["from"],
            v["to"],
            v["write_gap_ms"],
            v["writes"],
            v["failed_writes"],
            v["baseline_write_p50_ms"]
        )
    });
    if ok {
        0
    } else {
        1
    }
}

pub async fn drill(target: Target, command: DrillCommand) -> i32 {
    match command {
        DrillCommand::Watch(args) => watch(&target, args).await,
        DrillCommand::Failover(args) => failover(&target, args).await,
    }
}

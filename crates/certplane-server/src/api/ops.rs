//! Operations endpoints: liveness, readiness (the load balancer's target check) and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use certplane_core::keys::time_bytes;
use certplane_core::{Keyspace, StateRead, Timestamp};
use serde_json::json;

use super::error::ApiError;
use super::{blocking, now_ms, AppState};

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when this node is a member of a cluster with a known leader and has applied what it knows
/// to be committed; 503 otherwise, so the load balancer sends no traffic here.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "Member of a cluster with a leader, caught up"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.node.status();
    let body = json!({
        "ready": state.node.is_ready(),
        "leader": status.leader,
        "applied_index": status.applied_index,
        "committed_index": status.committed_index,
    });
    let code = if state.node.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

const DAY_MS: i64 = 86_400_000;
/// Days-to-expiry buckets reported as `certplane_inventory_expiring{within=...}`; beyond the last
/// bucket nothing is scanned.
const BUCKETS: [(&str, i64); 4] = [("expired", 0), ("7d", 7), ("30d", 30), ("90d", 90)];
const MAX_BUCKET_SCAN: usize = 1_000_000;
/// The gauges above scan index ranges, so a scrape recomputes them at most this often and serves the
/// last values in between: frequent scrapes (several Prometheus servers, a dashboard polling) cost the
/// node nothing extra.
const INVENTORY_GAUGES_EVERY_MS: i64 = 5_000;
/// When this process last computed them (ms since the epoch; 0 = never).
static INVENTORY_GAUGES_AT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Whether a scrape at `now` should recompute the inventory gauges (and if so, claims the refresh).
fn inventory_gauges_due(now: i64) -> bool {
    use std::sync::atomic::Ordering;
    let last = INVENTORY_GAUGES_AT.load(Ordering::Relaxed);
    let stale = last == 0 || now < last || now - last >= INVENTORY_GAUGES_EVERY_MS;
    stale
        && INVENTORY_GAUGES_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

fn inventory_gauges(view: &impl StateRead, now: i64) -> Result<(), certplane_core::CoreError> {
    let counts = certplane_core::apply::counts(view)?;
    metrics::gauge!("certplane_inventory_certificates", "status" => "active")
        .set(counts.active as f64);
    metrics::gauge!("certplane_inventory_certificates", "status" => "retired")
        .set(counts.retired as f64);
    // The buckets nest (expired within 7 days within 30 ...): count each stretch between two bounds
    // once and add up, so one pass over the index covers all four.
    let mut from = Vec::new();
    let mut within = 0usize;
    for (label, days) in BUCKETS {
        let bound = time_bytes(Timestamp(now + days * DAY_MS)).to_vec();
        within += view.count(Keyspace::ByExpiry, &from, &bound, MAX_BUCKET_SCAN)?;
        metrics::gauge!("certplane_inventory_expiring", "within" => label).set(within as f64);
        from = bound;
    }
    // Renewals: due and not yet submitted; submitted and still running (the worker's request ids
    // start with `renew-`); deployments still owed an attempt.
    let now_key = time_bytes(Timestamp(now.saturating_add(1)));
    let due = view.count(Keyspace::RenewalQueue, &[], &now_key, MAX_BUCKET_SCAN)?;
    metrics::gauge!("certplane_renewal_due").set(due as f64);
    let mut running = 0usize;
    for state in ["pending_approval", "approved"] {
        let prefix = certplane_core::keys::index_prefix(&format!("state\0{state}"));
        let mut from = prefix.clone();
        from.extend_from_slice(b"renew-");
        let mut to = prefix;
        to.extend_from_slice(b"renew.");
        running += view.count(Keyspace::RequestIndex, &from, &to, MAX_BUCKET_SCAN)?;
    }
    metrics::gauge!("certplane_renewal_in_progress").set(running as f64);
    let open = view.count(Keyspace::DeploymentQueue, &[], &[], MAX_BUCKET_SCAN)?;
    metrics::gauge!("certplane_deployments_open").set(open as f64);
    Ok(())
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = now_ms();
    if inventory_gauges_due(now) {
        let view = state.node.view();
        if let Err(e) = blocking(move || {
            inventory_gauges(&view, now).map_err(|e| ApiError::unavailable(e.to_string()))
        })
        .await
        {
            // Recompute on the next scrape rather than serve values that could not be refreshed.
            INVENTORY_GAUGES_AT.store(0, std::sync::atomic::Ordering::Relaxed);
            return e.into_response();
        }
    }
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

//! `/v1/audit`: the audit trail and its verification.

use axum::extract::State;
use axum::Json;
use certplane_core::audit::{verify_chain, AuditRecord, ChainVerification};
use certplane_core::query::{list_audit, AuditFilter, QueryError};
use certplane_core::Timestamp;
use serde::Deserialize;

use super::certificates::read_barrier;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiQuery, Auth, Consistency};
use super::openapi::ErrorResponse;
use super::view::PageView;
use super::{blocking, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (e.g. `certificate.`).
    pub action: Option<String>,
    pub object: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    pub since: Option<i64>,
    /// Milliseconds since the epoch, exclusive.
    pub until: Option<i64>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub consistency: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])), responses((status = 200, description = "Audit records, newest first, with `next_cursor`"), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<PageView<AuditRecord>>> {
    read_barrier(&state, consistency).await?;
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        object: q.object,
        since: q.since.map(Timestamp),
        until: q.until.map(Timestamp),
    };
    let view = state.node.view();
    let limit = q.limit.unwrap_or(100);
    let cursor = q.cursor;
    let page = blocking(move || {
        list_audit(&view, &filter, cursor.as_deref(), limit).map_err(|e| match e {
            QueryError::InvalidArgument(m) => ApiError::bad_request("invalid_query", m),
            QueryError::Core(e) => ApiError::unavailable(e.to_string()),
        })
    })
    .await?;
    Ok(Json(PageView {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Walk the whole chain on this node and report the first broken link.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])), responses((status = 200, description = "Chain verification: ok, records checked, first broken link"), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn verify(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
) -> ApiResult<Json<ChainVerification>> {
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let report =
        blocking(move || verify_chain(&view).map_err(|e| ApiError::unavailable(e.to_string())))
            .await?;
    Ok(Json(report))
}

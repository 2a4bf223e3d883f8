//! `/v1/audit`: the audit trail and its verification.

use axum::extract::State;
use axum::Json;
use certplane_core::audit::{verify_chain, AuditRecord, ChainVerification};
use certplane_core::query::{list_audit, AuditFilter, QueryError};
use certplane_core::store::StateRead;
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

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First sequence number to export (default 1: the whole chain).
    pub from_seq: Option<u64>,
    pub consistency: Option<String>,
}

/// The audit trail as JSON lines, one record per line in chain order, each exactly as hashed (see
/// docs/audit-chain.md). `certplane audit verify --file` checks such an export offline.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", security(("bearer" = [])), params(("from_seq" = Option<u64>, Query, description = "First sequence number (default 1)")), responses((status = 200, description = "application/x-ndjson: one audit record per line, in chain order", content_type = "application/x-ndjson"), (status = 400, description = "Invalid query", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs audit_read on /", body = ErrorResponse), (status = 503, description = "Unavailable; retry", body = ErrorResponse)))]
pub async fn export(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    const PAGE: usize = 512;
    let from_seq = q.from_seq.unwrap_or(1).max(1);
    read_barrier(&state, consistency).await?;
    // The head at the start bounds the export: records appended meanwhile are left for the next one.
    let view = state.node.view();
    let head = blocking(move || {
        certplane_core::audit::chain_head(&view).map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    let node = state.node.clone();
    tokio::task::spawn_blocking(move || {
        let mut seq = from_seq;
        while seq <= head.seq {
            let view = node.view();
            let rows = match view.scan(
                certplane_core::Keyspace::Audit,
                &certplane_core::keys::seq_key(seq),
                &[],
                PAGE,
            ) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            let mut chunk = Vec::with_capacity(rows.len() * 512);
            for (_, value) in rows {
                // Stored records are a version byte then the JSON that was hashed.
                let Some((_, json)) = value.split_first() else {
                    continue;
                };
                if seq > head.seq {
                    break;
                }
                chunk.extend_from_slice(json);
                chunk.push(b'\n');
                seq += 1;
            }
            if tx.blocking_send(Ok(chunk.into())).is_err() {
                return;
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("{}:{}", head.seq, head.hash)) {
        headers.insert("x-certplane-audit-head", value);
    }
    Ok(response)
}

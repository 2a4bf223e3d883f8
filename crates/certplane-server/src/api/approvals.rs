//! Approval decisions and queues: `POST /v1/certificate-requests/{id}/approve` and `/reject`,
//! `GET /v1/approvals` (with `?mine=true`, what the caller may decide now).
//!
//! Every decision is a replicated command; the state machine enforces separation of duties (see
//! `certplane_core::apply` approvals). The final approval puts the request in the issuance queue;
//! the answer waits (bounded by `?wait`) for the certificate like a submission does.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use certplane_core::apply::eligible_for_current_stage;
use certplane_core::command::DecideApproval;
use certplane_core::request::{Decision, RequestRecord, RequestState};
use certplane_core::{Applied, Command, Permission, Proposal, Timestamp};
use serde::{Deserialize, Serialize};

use super::certificates::read_barrier;
use super::error::{ApiError, ApiResult};
use super::extract::{request_hash, ApiJson, ApiQuery, Auth, Consistency, IdempotencyKey};
use super::openapi::ErrorResponse;
use super::requests::{
    certificate_of, check_request_id, list_requests, wait_for_progress, RequestView, MAX_WAIT,
};
use super::view::PageView;
use super::{blocking, now_ms, AppState};

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why; required for a rejection, kept in the request and the audit trail.
    #[serde(default)]
    pub comment: String,
    /// Decide only if the request is still at this generation (from `GET`).
    #[serde(default)]
    pub expected_generation: Option<u64>,
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DecideQuery {
    /// Seconds to wait for the certificate after the final approval (default 10, at most 30).
    pub wait: Option<u64>,
}

/// One decision as the route received it.
struct Decide {
    id: String,
    decision: Decision,
    body: DecisionBody,
    wait: Option<u64>,
}

async fn decide(
    state: AppState,
    principal: certplane_core::Principal,
    idem: Option<String>,
    call: Decide,
    bytes: &[u8],
) -> ApiResult<Json<RequestView>> {
    let Decide {
        id,
        decision,
        body,
        wait,
    } = call;
    check_request_id(&id)?;
    let comment = body.comment.trim().to_string();
    if comment.len() > 2000 || comment.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "comment is at most 2000 characters, without control characters",
        ));
    }
    if decision == Decision::Reject && comment.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "a rejection needs a comment giving the reason",
        ));
    }
    let route = match decision {
        Decision::Approve => format!("POST /v1/certificate-requests/{id}/approve"),
        Decision::Reject => format!("POST /v1/certificate-requests/{id}/reject"),
    };
    let hash = idem.as_ref().map(|_| request_hash(&route, bytes));
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::DecideApproval(Box::new(DecideApproval {
            request_id: id,
            decision,
            comment,
            expected_generation: body.expected_generation,
        })),
    )
    .with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    let record = match outcome.result.map_err(ApiError::from)? {
        Applied::RequestUpdated { request } => *request,
        other => {
            return Err(ApiError::unavailable(format!(
                "unexpected outcome {other:?}"
            )))
        }
    };
    let wait = Duration::from_secs(wait.unwrap_or(10)).min(MAX_WAIT);
    let record = wait_for_progress(&state, record, wait).await;
    let certificate = certificate_of(&state, &record).await?;
    Ok(Json(RequestView::new(record, certificate)))
}

/// Approve the current stage of a pending request.
#[utoipa::path(post, path = "/v1/certificate-requests/{id}/approve", tag = "approvals", security(("bearer" = [])), params(("id" = String, Path), DecideQuery, ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first answer")), request_body = DecisionBody, responses((status = 200, description = "The request after the decision (issued once the last stage approved, within `wait`)", body = RequestView), (status = 403, description = "Not eligible: own request, already decided a stage, wrong zone, group or role", body = ErrorResponse), (status = 404, description = "Unknown request", body = ErrorResponse), (status = 409, description = "Not pending approval, expired, or a stale generation", body = ErrorResponse), (status = 400, description = "Invalid body", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn approve(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DecideQuery>,
    ApiJson(body, bytes): ApiJson<DecisionBody>,
) -> ApiResult<Json<RequestView>> {
    let call = Decide {
        id,
        decision: Decision::Approve,
        body,
        wait: q.wait,
    };
    decide(state, principal, idem, call, &bytes).await
}

/// Reject a pending request (ends it, with the comment as the reason).
#[utoipa::path(post, path = "/v1/certificate-requests/{id}/reject", tag = "approvals", security(("bearer" = [])), params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first answer")), request_body = DecisionBody, responses((status = 200, description = "The rejected request", body = RequestView), (status = 403, description = "Not eligible", body = ErrorResponse), (status = 404, description = "Unknown request", body = ErrorResponse), (status = 409, description = "Not pending approval, expired, or a stale generation", body = ErrorResponse), (status = 400, description = "Invalid body (a rejection needs a comment)", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn reject(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body, bytes): ApiJson<DecisionBody>,
) -> ApiResult<Json<RequestView>> {
    let call = Decide {
        id,
        decision: Decision::Reject,
        body,
        wait: Some(0),
    };
    decide(state, principal, idem, call, &bytes).await
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// Only requests the caller may decide now (eligible for the current stage).
    pub mine: Option<bool>,
    pub zone: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub consistency: Option<String>,
}

/// Pending requests in zones the caller may approve in; with `mine=true`, only those whose current
/// stage the caller may decide.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", security(("bearer" = [])), params(ApprovalsQuery), responses((status = 200, description = "Pending requests, oldest id first, with `next_cursor`"), (status = 400, description = "Invalid query", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs the approve permission somewhere", body = ErrorResponse), (status = 503, description = "Unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    ApiQuery(q): ApiQuery<ApprovalsQuery>,
) -> ApiResult<Json<PageView<RequestView>>> {
    let zone = q
        .zone
        .as_deref()
        .map(super::certificates::normalize_zone)
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    if let Some(c) = &q.cursor {
        check_request_id(c).map_err(|_| ApiError::bad_request("invalid_query", "bad cursor"))?;
    }
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let mine = q.mine.unwrap_or(false);
    let cursor = q.cursor.clone();
    let (items, next) = blocking(move || {
        let keep = |r: &RequestRecord| {
            principal.allows(Permission::Approve, &r.spec.zone)
                && zone
                    .as_deref()
                    .is_none_or(|z| certplane_core::principal::zone_within(&r.spec.zone, z))
                && (!mine || eligible_for_current_stage(r, &principal).is_none())
        };
        let pending = RequestState::PendingApproval.as_str();
        list_requests(
            &view,
            Some(("state", pending)),
            keep,
            cursor.as_deref(),
            limit,
        )
    })
    .await?;
    Ok(Json(PageView {
        items: items
            .into_iter()
            .map(|r| RequestView::new(r, None))
            .collect(),
        next_cursor: next,
    }))
}

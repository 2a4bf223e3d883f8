//! `/v1/zones`: the tree of policy folders.
//!
//! ```text
//!  GET  /v1/zones                         every zone (path, version)
//!  GET  /v1/zones/{path}                  the zone's own policy and version
//!  PUT  /v1/zones/{path}                  store a policy (versioned, audited; locks of ancestors hold)
//!  GET  /v1/zones/{path}/effective        the merged policy, each value with the zone that set it
//!  POST /v1/zones/{path}/evaluate         a certificate request checked as a dry run
//! ```
//!
//! `{path}` is the zone path without its leading slash (`prod/payments`); the root zone is `%2F`
//! (an encoded `/`), and its actions are `/v1/zones/effective` and `/v1/zones/evaluate`. Zone
//! segments cannot be named `effective` or `evaluate`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use certplane_core::command::PutZone;
use certplane_core::policy::{EffectivePolicy, Violation, ZonePolicy};
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::zone::{self, ZoneRecord};
use certplane_core::{Applied, Command, Permission, Proposal, Timestamp};
use serde::{Deserialize, Serialize};

use super::access::require_in;
use super::certificates::{normalize_zone, read_barrier};
use super::error::{ApiError, ApiResult};
use super::extract::{request_hash, ApiJson, ApiQuery, Auth, Consistency, IdempotencyKey};
use super::openapi::ErrorResponse;
use super::requests::{intake, RequestBody};
use super::view::rfc3339;
use super::{blocking, now_ms, AppState};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ZoneView {
    pub path: String,
    #[schema(value_type = Object)]
    pub policy: ZonePolicy,
    pub version: u64,
    pub updated_at: String,
    pub updated_by: String,
}

impl From<ZoneRecord> for ZoneView {
    fn from(z: ZoneRecord) -> Self {
        ZoneView {
            path: z.path,
            policy: z.policy,
            version: z.version,
            updated_at: rfc3339(z.updated_at),
            updated_by: z.updated_by,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutZoneBody {
    /// Fields as `{"value": ..., "locked": bool}`; absent fields inherit.
    #[schema(value_type = Object)]
    pub policy: ZonePolicy,
    /// The version you read; a concurrent change makes the write fail with 409 instead of being lost.
    #[serde(default)]
    pub expected_version: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EffectiveView {
    pub path: String,
    /// Every field as `{"value", "zone", "locked"}`; `zone` is where the value was set.
    #[schema(value_type = Object)]
    pub policy: EffectivePolicy,
    /// The zones merged, root first, with their versions.
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<(String, u64)>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EvaluateView {
    pub zone: String,
    /// True when a real submission would be approved or wait for approval.
    pub allowed: bool,
    pub approval_required: bool,
    pub issuer: String,
    #[schema(value_type = Vec<Object>)]
    pub violations: Vec<Violation>,
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<(String, u64)>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ZoneQuery {
    /// An earlier version of the zone's policy (every version is kept).
    pub version: Option<u64>,
    pub consistency: Option<String>,
}

enum Target {
    Zone(String),
    Effective(String),
    Evaluate(String),
}

fn target(raw: &str) -> ApiResult<Target> {
    let trimmed = raw.trim_end_matches('/');
    let (action, path) = match trimmed.rsplit_once('/') {
        Some((rest, last)) if last == "effective" || last == "evaluate" => (Some(last), rest),
        None if trimmed == "effective" || trimmed == "evaluate" => (Some(trimmed), ""),
        _ => (None, trimmed),
    };
    let path = normalize_zone(path)?;
    Ok(match action {
        Some("effective") => Target::Effective(path),
        Some(_) => Target::Evaluate(path),
        None => Target::Zone(path),
    })
}

async fn load_zone(state: &AppState, path: String) -> ApiResult<ZoneRecord> {
    let view = state.node.view();
    let lookup = path.clone();
    blocking(move || {
        zone::get_zone(&view, &lookup).map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("zone {path} does not exist")))
}

#[utoipa::path(get, path = "/v1/zones", tag = "zones", security(("bearer" = [])), responses((status = 200, description = "Every zone with its version, in path order"), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
) -> ApiResult<Json<Vec<ZoneView>>> {
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let zones = blocking(move || {
        let rows = view
            .scan(Keyspace::Zones, b"", b"", 10_000)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| certplane_core::keys::decode_record::<ZoneRecord>("zone", &v).ok())
            .filter(|z| principal.allows(Permission::ZoneRead, &z.path))
            .map(ZoneView::from)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(zones))
}

#[utoipa::path(get, path = "/v1/zones/{path}", tag = "zones", security(("bearer" = [])), params(("path" = String, Path, description = "Zone path without the leading slash; `%2F` for the root; append `/effective` for the merged policy"), ZoneQuery), responses((status = 200, description = "The zone (ZoneView), an earlier version with `?version=N`, or with `/effective` the merged policy (EffectiveView)", body = ZoneView), (status = 404, description = "No such zone", body = ErrorResponse), (status = 400, description = "Not a zone path", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    Path(raw): Path<String>,
    ApiQuery(q): ApiQuery<ZoneQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let target = target(&raw)?;
    let (Target::Zone(p) | Target::Effective(p) | Target::Evaluate(p)) = &target;
    require_in(&principal, Permission::ZoneRead, p)?;
    read_barrier(&state, consistency).await?;
    let value = match target {
        Target::Zone(path) => match q.version {
            None => serde_json::to_value(ZoneView::from(load_zone(&state, path).await?)),
            Some(version) => {
                let view = state.node.view();
                let key = zone::history_key(&path, version);
                let found = blocking(move || {
                    view.get(Keyspace::ZoneHistory, &key)
                        .map_err(|e| ApiError::unavailable(e.to_string()))?
                        .map(|b| certplane_core::keys::decode_record::<ZoneRecord>("zone", &b))
                        .transpose()
                        .map_err(|e| ApiError::unavailable(e.to_string()))
                })
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("zone {path} has no version {version}"))
                })?;
                serde_json::to_value(ZoneView::from(found))
            }
        },
        Target::Effective(path) => {
            load_zone(&state, path.clone()).await?;
            let view = state.node.view();
            let lookup = path.clone();
            let (policy, versions) = blocking(move || {
                zone::effective_for(&view, &lookup)
                    .map_err(|e| ApiError::unavailable(e.to_string()))
            })
            .await?;
            serde_json::to_value(EffectiveView {
                path,
                policy,
                versions,
            })
        }
        Target::Evaluate(_) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "evaluate is a POST with a certificate request body",
            ))
        }
    };
    value
        .map(Json)
        .map_err(|e| ApiError::unavailable(format!("cannot encode the answer: {e}")))
}

#[utoipa::path(put, path = "/v1/zones/{path}", tag = "zones", security(("bearer" = [])), params(("path" = String, Path, description = "Zone path without the leading slash; `%2F` for the root"), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first answer")), request_body = PutZoneBody, responses((status = 200, description = "Stored; `version` grows by one on every change", body = ZoneView), (status = 422, description = "The policy changes a field an ancestor locked; each conflict in `details`", body = ErrorResponse), (status = 409, description = "expected_version is stale", body = ErrorResponse), (status = 404, description = "The parent zone does not exist", body = ErrorResponse), (status = 400, description = "Invalid policy", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 403, description = "Not an owner of this zone", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn put(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    Path(raw): Path<String>,
    ApiJson(body, bytes): ApiJson<PutZoneBody>,
) -> ApiResult<Json<ZoneView>> {
    let Target::Zone(path) = target(&raw)? else {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "zone segments cannot be named effective or evaluate",
        ));
    };
    let policy = body
        .policy
        .normalized()
        .map_err(|e| ApiError::bad_request("invalid_policy", e.to_string()))?;
    let hash = idem
        .as_ref()
        .map(|_| request_hash(&format!("PUT /v1/zones{path}"), &bytes));
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::PutZone(Box::new(PutZone {
            path,
            policy,
            expected_version: body.expected_version,
        })),
    )
    .with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::ZoneStored { zone } => Ok(Json(ZoneView::from(*zone))),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/zones/{path}/evaluate", tag = "zones", security(("bearer" = [])), params(("path" = String, Path, description = "Zone path without the leading slash")), request_body = RequestBody, responses((status = 200, description = "The verdict a submission would get now; nothing is stored", body = EvaluateView), (status = 422, description = "Names that can never be issued", body = ErrorResponse), (status = 404, description = "No such zone", body = ErrorResponse), (status = 400, description = "Invalid request or CSR", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn evaluate(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    Path(raw): Path<String>,
    ApiJson(body, _): ApiJson<RequestBody>,
) -> ApiResult<Json<EvaluateView>> {
    let Target::Evaluate(path) = target(&raw)? else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST /v1/zones/{path}/evaluate is the only POST on zones",
        ));
    };
    require_in(&principal, Permission::ZoneRead, &path)?;
    if body
        .zone
        .as_deref()
        .is_some_and(|z| normalize_zone(z).ok().as_deref() != Some(&path))
    {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "the body names a different zone than the path",
        ));
    }
    read_barrier(&state, consistency).await?;
    load_zone(&state, path.clone()).await?;
    let intake = intake(&state, path.clone(), body, None)?;
    let view = state.node.view();
    let spec = intake.spec;
    let (issuer, violations, versions, approval_required) = blocking(move || {
        certplane_core::apply::evaluate_request(&view, &spec)
            .map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?;
    Ok(Json(EvaluateView {
        zone: path,
        allowed: violations.is_empty(),
        approval_required: approval_required.required,
        issuer,
        violations,
        versions,
        warnings: intake.warnings,
    }))
}

//! What will renew and deploy when (`GET /v1/renewals/plan`), and the IAM policy the configured
//! destinations need (`GET /v1/aws/iam-policy`).

use axum::extract::State;
use axum::Json;
use certplane_core::deploy::windows_next_open;
use certplane_core::keys::{expiry_key, id_of_expiry_key};
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{Permission, Timestamp};
use serde::{Deserialize, Serialize};

use super::certificates::{parse_duration_ms, read_barrier};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiQuery, Auth, Consistency};
use super::openapi::ErrorResponse;
use super::view::rfc3339;
use super::{blocking, now_ms, AppState};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    /// How far ahead to look, e.g. `30d` (default `7d`).
    pub within: Option<String>,
    /// Most entries of each kind (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlannedRenewal {
    pub certificate_id: String,
    pub common_name: Option<String>,
    pub zone: String,
    pub not_after: String,
    /// When the renewal worker submits the renewal (the zone's threshold, spread).
    pub renew_at: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Regions the renewal will be deployed to.
    pub destinations: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlannedDeployment {
    pub certificate_id: String,
    pub common_name: Option<String>,
    pub zone: String,
    pub region: String,
    pub arn: Option<String>,
    /// pending or failed
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next attempt may run: its retry time, moved to the zone's next maintenance window.
    pub deploy_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenewalPlan {
    pub now: String,
    pub until: String,
    pub renewals: Vec<PlannedRenewal>,
    pub deployments: Vec<PlannedDeployment>,
}

#[utoipa::path(get, path = "/v1/renewals/plan", tag = "renewals", security(("bearer" = [])), params(PlanQuery), responses((status = 200, description = "Renewals due and deployments open within the horizon, soonest first (only zones the caller may read)", body = RenewalPlan), (status = 400, description = "Invalid query", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn plan(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> ApiResult<Json<RenewalPlan>> {
    let now = now_ms();
    let within = match &q.within {
        Some(w) => parse_duration_ms(w).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "within must look like 30d, 12h, 45m or 90s",
            )
        })?,
        None => 7 * 86_400_000,
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let until = Timestamp(now.saturating_add(within));
    blocking(move || {
        let unavailable = |e: certplane_core::CoreError| ApiError::unavailable(e.to_string());
        let end = expiry_key(Timestamp(until.0.saturating_add(1)), "");
        let mut renewals = Vec::new();
        // Bounded reads: the queues are ordered by time; unreadable zones are skipped, at most
        // 10x the limit is read.
        let rows = view
            .scan(Keyspace::RenewalQueue, b"", &end, limit * 10)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        for (key, _) in rows {
            let Some(id) = id_of_expiry_key(&key) else {
                continue;
            };
            let Some(cert) =
                certplane_core::apply::get_certificate(&view, id).map_err(unavailable)?
            else {
                continue;
            };
            if !principal.allows(Permission::InventoryRead, &cert.zone) {
                continue;
            }
            let Some(schedule) = &cert.renewal else {
                continue;
            };
            renewals.push(PlannedRenewal {
                certificate_id: cert.id.clone(),
                common_name: cert.details.common_name.clone(),
                zone: cert.zone.clone(),
                not_after: rfc3339(cert.details.not_after),
                renew_at: rfc3339(schedule.due_at),
                attempts: schedule.attempts,
                last_error: schedule.last_error.clone(),
                destinations: cert
                    .deployments
                    .iter()
                    .map(|d| d.destination.region.clone())
                    .collect(),
            });
            if renewals.len() >= limit {
                break;
            }
        }
        let mut deployments = Vec::new();
        let rows = view
            .scan(Keyspace::DeploymentQueue, b"", &end, limit * 10)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        for (id, index, _) in crate::workers::deploy::parse_queue(rows) {
            let Some(cert) =
                certplane_core::apply::get_certificate(&view, &id).map_err(unavailable)?
            else {
                continue;
            };
            if !principal.allows(Permission::InventoryRead, &cert.zone) {
                continue;
            }
            let Some(d) = cert.deployments.get(index) else {
                continue;
            };
            let windows = certplane_core::zone::effective_for(&view, &cert.zone)
                .map_err(unavailable)?
                .0
                .deploy_windows
                .value;
            let at = Timestamp(d.next_attempt_at.0.max(now));
            deployments.push(PlannedDeployment {
                certificate_id: cert.id.clone(),
                common_name: cert.details.common_name.clone(),
                zone: cert.zone.clone(),
                region: d.destination.region.clone(),
                arn: d.arn.clone(),
                state: d.state.as_str().into(),
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                deploy_at: rfc3339(windows_next_open(&windows, at)),
            });
            if deployments.len() >= limit {
                break;
            }
        }
        Ok(Json(RenewalPlan {
            now: rfc3339(Timestamp(now)),
            until: rfc3339(until),
            renewals,
            deployments,
        }))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IamQuery {
    /// The nodes' own AWS account, for destinations that assume no role (default `*`).
    pub account: Option<String>,
}

#[utoipa::path(get, path = "/v1/aws/iam-policy", tag = "renewals", security(("bearer" = [])), params(IamQuery), responses((status = 200, description = "The IAM policies the deploy worker needs: for the nodes' role and for each role a destination assumes"), (status = 400, description = "Invalid account", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn iam_policy(
    State(state): State<AppState>,
    consistency: Consistency,
    ApiQuery(q): ApiQuery<IamQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    if let Some(a) = &q.account {
        if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "account must be a 12-digit AWS account id",
            ));
        }
    }
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    blocking(move || {
        let unavailable = |e: certplane_core::CoreError| ApiError::unavailable(e.to_string());
        let mut places: std::collections::BTreeSet<certplane_aws::iam::Place> =
            certplane_core::apply::deploy_places(&view)
                .map_err(unavailable)?
                .into_iter()
                .map(|(region, role_arn, account)| certplane_aws::iam::Place {
                    region,
                    role_arn,
                    account,
                })
                .collect();
        // Zone policies name destinations before any certificate is deployed there.
        let mut cleanup = false;
        let zones = view
            .scan(Keyspace::Zones, b"", b"", 100_000)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        for (_, bytes) in zones {
            let zone: certplane_core::zone::ZoneRecord =
                certplane_core::keys::decode_record("zone", &bytes).map_err(unavailable)?;
            cleanup |= zone.policy.acm_cleanup.as_ref().is_some_and(|s| s.value);
            for d in zone.policy.destinations.iter().flat_map(|s| s.value.iter()) {
                places.insert(certplane_aws::iam::Place {
                    region: d.region.clone(),
                    role_arn: d.role_arn.clone(),
                    account: d.account(),
                });
            }
        }
        let places: Vec<_> = places.into_iter().collect();
        let mut authorities = Vec::new();
        let issuers = view
            .scan(Keyspace::Issuers, b"", b"", 100_000)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        for (_, bytes) in issuers {
            let issuer: certplane_core::issuer::IssuerRecord =
                certplane_core::keys::decode_record("issuer", &bytes).map_err(unavailable)?;
            if let Some(pca) = issuer.acm_pca {
                authorities.push(certplane_aws::iam::Authority {
                    ca_arn: pca.ca_arn,
                    region: pca.region,
                    role_arn: pca.role_arn,
                    acm_native: pca.mode == certplane_core::issuer::PcaMode::AcmNative,
                });
            }
        }
        Ok(Json(certplane_aws::iam::policies_with_authorities(
            &places,
            &authorities,
            q.account.as_deref(),
            cleanup,
        )))
    })
    .await
}

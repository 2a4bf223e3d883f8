//! Authorisation: the permission every route needs, checked before its handler runs.
//!
//! [`ROUTES`] maps each route (method and path pattern, as the router declares it) to its access
//! rule. The [`authorize`] layer looks the matched route up: a route missing from the table is
//! refused for everyone (deny by default), so adding a route without deciding its permission fails
//! the endpoint x role matrix test. The layer authenticates the caller (bearer token or client
//! certificate), checks the route's permission in at least one zone (cluster-wide permissions on
//! `/`), and hands the principal to the handler, which checks the zone of the object it touches.
//! Writes are checked once more inside `apply`, against the committed state.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use certplane_core::{Permission, Principal};

use super::error::{ApiError, ApiResult};
use super::extract::authenticate;
use super::AppState;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication: health, readiness, metrics, one-time initialisation, CRLs.
    Public,
    /// Any authenticated principal.
    Authenticated,
    /// The permission, in at least one zone (cluster-wide ones on `/`).
    Needs(Permission),
}

pub struct RouteAccess {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> RouteAccess {
    RouteAccess {
        method,
        path,
        access,
    }
}

use Access::{Authenticated, Needs, Public};
use Permission as P;

/// Every route of the router and what it needs.
pub const ROUTES: &[RouteAccess] = &[
    route("GET", "/healthz", Public),
    route("GET", "/readyz", Public),
    route("GET", "/metrics", Public),
    route("POST", "/v1/sys/init", Public),
    // Relying parties fetch CRLs without credentials (docs/decisions/0008).
    route("GET", "/v1/issuers/{name}/crl", Public),
    route("GET", "/v1/openapi.json", Authenticated),
    route("GET", "/v1/whoami", Authenticated),
    route("GET", "/v1/sys/node", Needs(P::ClusterRead)),
    route("GET", "/v1/sys/cluster", Needs(P::ClusterRead)),
    route("POST", "/v1/sys/cluster/members", Needs(P::ClusterManage)),
    route(
        "DELETE",
        "/v1/sys/cluster/members/{id}",
        Needs(P::ClusterManage),
    ),
    route(
        "POST",
        "/v1/sys/cluster/transfer-leader",
        Needs(P::ClusterManage),
    ),
    route("GET", "/v1/sys/snapshot", Needs(P::ClusterManage)),
    route("POST", "/v1/sys/probe", Needs(P::ClusterManage)),
    route("GET", "/v1/sys/probe/{drill}", Needs(P::ClusterManage)),
    route("GET", "/v1/tokens", Needs(P::PrincipalManage)),
    route("POST", "/v1/tokens", Needs(P::PrincipalManage)),
    route("GET", "/v1/tokens/{id}", Needs(P::PrincipalManage)),
    route("DELETE", "/v1/tokens/{id}", Needs(P::PrincipalManage)),
    route(
        "POST",
        "/v1/principals/certificate",
        Needs(P::PrincipalManage),
    ),
    route("GET", "/v1/certificates", Needs(P::InventoryRead)),
    route("GET", "/v1/renewals/plan", Needs(P::InventoryRead)),
    route("GET", "/v1/aws/iam-policy", Needs(P::ClusterRead)),
    route(
        "POST",
        "/v1/certificates/import",
        Needs(P::CertificateImport),
    ),
    route("GET", "/v1/certificates/{id}", Needs(P::InventoryRead)),
    route(
        "DELETE",
        "/v1/certificates/{id}",
        Needs(P::CertificateManage),
    ),
    route(
        "POST",
        "/v1/certificates/{id}/renew",
        Needs(P::CertificateRequest),
    ),
    route(
        "POST",
        "/v1/certificates/{id}/revoke",
        Needs(P::CertificateManage),
    ),
    route(
        "GET",
        "/v1/certificates/{id}/private-key",
        Needs(P::KeyExport),
    ),
    route("GET", "/v1/certificate-requests", Needs(P::InventoryRead)),
    route(
        "POST",
        "/v1/certificate-requests",
        Needs(P::CertificateRequest),
    ),
    route(
        "GET",
        "/v1/certificate-requests/{id}",
        Needs(P::InventoryRead),
    ),
    route(
        "POST",
        "/v1/certificate-requests/{id}/approve",
        Needs(P::Approve),
    ),
    route(
        "POST",
        "/v1/certificate-requests/{id}/reject",
        Needs(P::Approve),
    ),
    route("GET", "/v1/approvals", Needs(P::Approve)),
    route("GET", "/v1/zones", Needs(P::ZoneRead)),
    route("GET", "/v1/zones/{*path}", Needs(P::ZoneRead)),
    route("PUT", "/v1/zones/{*path}", Needs(P::ZoneWrite)),
    // The dry run (`/v1/zones/{path}/evaluate`) is the only POST under a zone path.
    route("POST", "/v1/zones/{*path}", Needs(P::ZoneRead)),
    route("GET", "/v1/issuers", Needs(P::InventoryRead)),
    route("POST", "/v1/issuers", Needs(P::IssuerManage)),
    route("POST", "/v1/aws/pca-issuers", Needs(P::IssuerManage)),
    route("GET", "/v1/issuers/{name}", Needs(P::InventoryRead)),
    route("GET", "/v1/issuers/{name}/issued", Needs(P::InventoryRead)),
    route("GET", "/v1/webhooks", Needs(P::WebhookManage)),
    route("POST", "/v1/webhooks", Needs(P::WebhookManage)),
    route("GET", "/v1/webhooks/{id}", Needs(P::WebhookManage)),
    route("DELETE", "/v1/webhooks/{id}", Needs(P::WebhookManage)),
    route(
        "GET",
        "/v1/webhooks/{id}/deliveries",
        Needs(P::WebhookManage),
    ),
    route("GET", "/v1/audit", Needs(P::AuditRead)),
    route("GET", "/v1/audit/verify", Needs(P::AuditRead)),
    route("GET", "/v1/audit/export", Needs(P::AuditRead)),
];

pub fn access_for(method: &Method, path: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|r| r.method == method.as_str() && r.path == path)
        .map(|r| r.access)
}

/// The principal the layer authenticated, for the handler's [`super::extract::Auth`].
#[derive(Clone)]
pub struct AuthenticatedPrincipal(pub Principal);

/// The route layer: authenticate, check the route's permission, pass the principal on.
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(matched) = req.extensions().get::<MatchedPath>().cloned() else {
        return next.run(req).await;
    };
    let access = match access_for(req.method(), matched.as_str()) {
        Some(access) => access,
        None => {
            return ApiError::forbidden(format!(
                "no permission is defined for {} {}; refused",
                req.method(),
                matched.as_str()
            ))
            .into_response()
        }
    };
    let needed = match access {
        Public => return next.run(req).await,
        Authenticated => None,
        Needs(p) => Some(p),
    };
    let principal = match authenticate(req.headers(), req.extensions(), &state).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(permission) = needed {
        if !principal.allows_somewhere(permission) {
            let scope = if permission.is_cluster_wide() {
                " on /"
            } else {
                " in any zone"
            };
            return ApiError::forbidden(format!(
                "principal {} lacks the {} permission{scope}",
                principal.id,
                permission.as_str()
            ))
            .into_response();
        }
    }
    req.extensions_mut()
        .insert(AuthenticatedPrincipal(principal));
    next.run(req).await
}

/// The handler's zone check: `permission` on the object's `zone`.
pub fn require_in(principal: &Principal, permission: Permission, zone: &str) -> ApiResult<()> {
    if principal.allows(permission, zone) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "principal {} lacks the {} permission on zone {zone}",
            principal.id,
            permission.as_str()
        )))
    }
}

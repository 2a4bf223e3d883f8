//! The HTTP API: routes, shared state and the mapping of cluster errors to HTTP answers.

pub mod access;
pub mod approvals;
pub mod audit;
pub mod certificates;
pub mod error;
pub mod extract;
pub mod issuers;
pub mod openapi;
pub mod ops;
pub mod renewals;
pub mod requests;
pub mod sys;
pub mod tokens;
pub mod view;
pub mod webhooks;
pub mod zones;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use certplane_pki::Kek;
use certplane_raft::forward::ForwardError;
use certplane_raft::node::RaftNode;
use metrics_exporter_prometheus::PrometheusHandle;

use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<RaftNode>,
    /// Seals imported private keys; `None` when the node was started without `--kek-file`.
    pub kek: Option<Arc<Kek>>,
    pub max_body_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
    /// Issuers' signers, opened once from their sealed keys (shared with the issuance worker).
    pub signers: Arc<crate::workers::issuance::SignerCache>,
    pub crls: Arc<issuers::CrlCache>,
    /// Where AWS calls made by the API go (reading an ACM PCA CA when it is registered); tests
    /// point it at moto.
    pub aws_endpoint_url: Option<String>,
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(openapi::openapi))
        .route("/v1/sys/init", post(sys::init))
        .route("/v1/sys/node", get(sys::node_status))
        .route("/v1/sys/cluster", get(sys::cluster))
        .route("/v1/sys/cluster/members", post(sys::add_member))
        .route("/v1/sys/cluster/members/{id}", delete(sys::remove_member))
        .route(
            "/v1/sys/cluster/transfer-leader",
            post(sys::transfer_leader),
        )
        .route("/v1/sys/snapshot", get(sys::snapshot))
        .route("/v1/sys/probe", post(sys::probe_write))
        .route("/v1/sys/probe/{drill}", get(sys::probe_read))
        .route("/v1/whoami", get(tokens::whoami))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route(
            "/v1/tokens/{id}",
            get(tokens::get_one).delete(tokens::revoke),
        )
        .route(
            "/v1/principals/certificate",
            post(tokens::create_certificate_principal),
        )
        .route("/v1/certificates", get(certificates::list))
        .route("/v1/certificates/import", post(certificates::import))
        .route(
            "/v1/certificates/{id}",
            get(certificates::get_one).delete(certificates::retire),
        )
        .route("/v1/certificates/{id}/renew", post(certificates::renew))
        .route("/v1/certificates/{id}/revoke", post(certificates::revoke))
        .route(
            "/v1/certificates/{id}/private-key",
            get(certificates::private_key),
        )
        .route(
            "/v1/certificate-requests",
            get(requests::list).post(requests::create),
        )
        .route("/v1/certificate-requests/{id}", get(requests::get_one))
        .route(
            "/v1/certificate-requests/{id}/approve",
            post(approvals::approve),
        )
        .route(
            "/v1/certificate-requests/{id}/reject",
            post(approvals::reject),
        )
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/zones", get(zones::list))
        .route(
            "/v1/zones/{*path}",
            get(zones::get).put(zones::put).post(zones::evaluate),
        )
        .route("/v1/issuers", get(issuers::list).post(issuers::import))
        .route("/v1/aws/pca-issuers", post(issuers::create_acm_pca))
        .route("/v1/issuers/{name}", get(issuers::get_one))
        .route("/v1/issuers/{name}/crl", get(issuers::crl))
        .route("/v1/issuers/{name}/issued", get(issuers::issued))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get_one).delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/renewals/plan", get(renewals::plan))
        .route("/v1/aws/iam-policy", get(renewals::iam_policy))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/audit/export", get(audit::export))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            refuse_oversized,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            // A panic is a bug; the node keeps serving and the client may retry.
            axum::response::IntoResponse::into_response(ApiError::unavailable(
                "internal error; the request was not applied",
            ))
        }))
        .with_state(state)
}

/// Bodies declared larger than this are refused without reading them; smaller oversized ones are
/// read and discarded first, so the client sees the 413 instead of a connection reset.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;

/// Answer 413 to a body whose declared length exceeds the limit. Draining it before answering
/// matters: closing a socket with unread data makes the kernel reset the connection, and a client
/// still sending would lose the JSON error.
async fn refuse_oversized(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => {
            if len <= DRAIN_CAP {
                let mut body = req.into_body();
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
            }
            ApiError::too_large(limit).into_response()
        }
        _ => next.run(req).await,
    }
}

/// How a cluster-side failure reads to a client.
impl From<ForwardError> for ApiError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::BadRequest(m) => ApiError::bad_request("invalid_argument", m),
            // Not committed (e.g. discarded by a leader change, or a membership change in flight).
            ForwardError::Raft(m) => {
                ApiError::unavailable(format!("the cluster did not apply the request: {m}"))
            }
            ForwardError::NotLeader { .. } | ForwardError::Timeout => ApiError::unavailable(
                "no leader is available right now; retry with the same Idempotency-Key",
            ),
            ForwardError::Unreachable(m) => {
                ApiError::unavailable(format!("the leader is unreachable: {m}"))
            }
            ForwardError::Fatal(m) => {
                ApiError::unavailable(format!("this node has stopped replicating: {m}"))
            }
        }
    }
}

/// Run blocking storage work (RocksDB scans) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::unavailable("the request was interrupted"))?
}

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

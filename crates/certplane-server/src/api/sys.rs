//! `/v1/sys/…`: initialisation, node and cluster status, membership, leader transfer, snapshots.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use certplane_core::audit::{chain_head, ChainHead};
use certplane_core::principal::CredentialKind;
use certplane_core::{
    Applied, Command, Principal, Proposal, Role, RoleBinding, Timestamp, TokenRecord,
};
use certplane_raft::node::NodeStatus;
use certplane_raft::NodeInfo;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{hash_secret, ApiJson, Auth, Consistency};
use super::openapi::ErrorResponse;
use super::{blocking, now_ms, AppState};

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A new bearer secret: 256 bits from the OS, URL-safe.
pub fn new_secret() -> String {
    let mut buf = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    format!(
        "cpt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InitResponse {
    pub root_token: String,
    pub token_id: String,
}

/// Settings of the built-in CA made at initialisation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuiltinCaSettings {
    /// Subjects become `CN=<name> Root CA` and `CN=<name> Intermediate CA`.
    #[serde(default = "default_ca_name")]
    pub name: String,
    /// `{"type":"ecdsa_p256"}` (default), `{"type":"ecdsa_p384"}`, `{"type":"rsa","bits":3072}`, ...
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub key: Option<certplane_core::request::KeySpec>,
    #[serde(default = "default_root_days")]
    pub root_validity_days: u32,
    #[serde(default = "default_intermediate_days")]
    pub intermediate_validity_days: u32,
}

fn default_ca_name() -> String {
    "certplane".into()
}
fn default_root_days() -> u32 {
    3650
}
fn default_intermediate_days() -> u32 {
    1825
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// The built-in CA (issuer `builtin`); made with defaults when omitted. Needs `--kek-file`.
    #[serde(default)]
    pub builtin_ca: Option<BuiltinCaSettings>,
}

/// The name of the issuer created at initialisation.
pub const BUILTIN_ISSUER: &str = "builtin";

/// The built-in CA: a fresh root and intermediate. Only the intermediate's key is kept (sealed); the
/// root's key exists only while it signs the intermediate, so no node ever stores a root key.
fn builtin_issuer(
    kek: &certplane_pki::Kek,
    settings: BuiltinCaSettings,
) -> ApiResult<certplane_core::issuer::IssuerRecord> {
    let spec = super::requests::pki_key_spec(
        settings
            .key
            .unwrap_or(certplane_core::request::KeySpec::EcdsaP256),
    );
    let (root, intermediate) = certplane_pki::create_root_and_intermediate(
        &settings.name,
        &spec,
        now_ms(),
        settings.root_validity_days,
        settings.intermediate_validity_days,
    )
    .map_err(|e| ApiError::bad_request("invalid_argument", e.to_string()))?;
    super::issuers::issuer_record(
        BUILTIN_ISSUER,
        &intermediate,
        &[&root],
        "",
        kek,
        false,
        &Principal::bootstrap(),
    )
}

/// One-time initialisation: the only unauthenticated `/v1` endpoint. The root token is shown here
/// once; only its hash is stored. With a key-encryption key, the built-in CA is created too.
#[utoipa::path(post, path = "/v1/sys/init", tag = "sys", request_body = Option<InitRequest>, responses((status = 201, description = "Initialised; the root token is shown once", body = InitResponse), (status = 409, description = "Already initialised", body = ErrorResponse), (status = 400, description = "Invalid CA settings", body = ErrorResponse), (status = 503, description = "No leader", body = ErrorResponse)))]
pub async fn init(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<InitResponse>)> {
    let request: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not an init request: {e}"),
            )
        })?
    };
    if certplane_core::apply::is_initialized(&state.node.view()).unwrap_or(false) {
        return Err(ApiError::conflict(
            "already_initialized",
            "the cluster is already initialised",
        ));
    }
    let builtin = match (&state.kek, request.builtin_ca) {
        (Some(kek), settings) => {
            let settings = settings.unwrap_or(BuiltinCaSettings {
                name: default_ca_name(),
                key: None,
                root_validity_days: default_root_days(),
                intermediate_validity_days: default_intermediate_days(),
            });
            let kek = kek.clone();
            Some(Box::new(
                super::blocking(move || builtin_issuer(&kek, settings)).await?,
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "no_key_encryption_key",
                "this node was started without --kek-file and cannot hold a CA key",
            ))
        }
        (None, None) => None,
    };
    let secret = new_secret();
    let token = TokenRecord {
        id: format!("tok_{}", random_hex(8)),
        name: "root".into(),
        kind: CredentialKind::Token,
        secret_sha256: hash_secret(&secret),
        subject: None,
        roles: vec![],
        zones: vec![],
        bindings: vec![RoleBinding::new(Role::Admin, "/")],
        groups: vec![],
        created_at: Timestamp(now_ms()),
        created_by: Principal::bootstrap().id,
        expires_at: None,
        revoked_at: None,
    };
    let token_id = token.id.clone();
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        Principal::bootstrap(),
        Command::Initialize {
            root_token: Box::new(token),
            builtin_issuer: builtin,
        },
    );
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::Initialized { .. } => Ok((
            StatusCode::CREATED,
            Json(InitResponse {
                root_token: secret,
                token_id,
            }),
        )),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: NodeStatus,
    pub ready: bool,
    pub initialized: bool,
    /// Rolling digest over every applied command: equal on nodes that applied the same log.
    pub state_digest: String,
    pub audit_head: ChainHead,
    pub certificates_active: u64,
    pub certificates_retired: u64,
}

/// This node's local view (never forwarded): used to compare nodes.
#[utoipa::path(get, path = "/v1/sys/node", tag = "sys", security(("bearer" = [])), responses((status = 200, description = "This node's local view: indexes, state digest, audit head, counts"), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn node_status(
    State(state): State<AppState>,
    Auth(_p): Auth,
) -> ApiResult<Json<NodeReport>> {
    let view = state.node.view();
    let (digest, head, counts, initialized) = blocking(move || {
        let err = |e: certplane_core::CoreError| ApiError::unavailable(e.to_string());
        Ok((
            certplane_core::apply::state_digest(&view).map_err(err)?,
            chain_head(&view).map_err(err)?,
            certplane_core::apply::counts(&view).map_err(err)?,
            certplane_core::apply::is_initialized(&view).map_err(err)?,
        ))
    })
    .await?;
    Ok(Json(NodeReport {
        node: state.node.status(),
        ready: state.node.is_ready(),
        initialized,
        state_digest: digest,
        audit_head: head,
        certificates_active: counts.active,
        certificates_retired: counts.retired,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterView {
    #[serde(flatten)]
    pub status: NodeStatus,
    /// API URL of the leader: its view includes replication progress.
    pub leader_api_addr: Option<String>,
}

#[utoipa::path(get, path = "/v1/sys/cluster", tag = "sys", security(("bearer" = [])), responses((status = 200, description = "Members, leader, indexes, replication lag (leader)"), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn cluster(
    State(state): State<AppState>,
    Auth(_p): Auth,
) -> ApiResult<Json<ClusterView>> {
    let status = state.node.status();
    let leader_api_addr = status
        .leader
        .and_then(|l| status.members.iter().find(|m| m.id == l))
        .map(|m| m.api_addr.clone());
    Ok(Json(ClusterView {
        status,
        leader_api_addr,
    }))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub id: u64,
    pub cluster_addr: String,
    pub api_addr: String,
    #[serde(default = "default_true")]
    pub voter: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MembershipResponse {
    pub log_index: u64,
    pub members: Vec<certplane_raft::node::MemberStatus>,
}

#[utoipa::path(post, path = "/v1/sys/cluster/members", tag = "sys", security(("bearer" = [])), request_body = AddMemberRequest, responses((status = 200, description = "Added (as learner, caught up, then promoted when voter)"), (status = 409, description = "Membership change refused", body = ErrorResponse), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn add_member(
    State(state): State<AppState>,
    Auth(_p): Auth,
    ApiJson(req, _): ApiJson<AddMemberRequest>,
) -> ApiResult<Json<MembershipResponse>> {
    if req.id == 0 || !req.cluster_addr.contains(':') || req.cluster_addr.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "id must be >= 1 and cluster_addr host:port",
        ));
    }
    if !(req.api_addr.starts_with("http://") || req.api_addr.starts_with("https://"))
        || req.api_addr.len() > 256
    {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "api_addr must be an http(s) URL",
        ));
    }
    let node = NodeInfo {
        cluster_addr: req.cluster_addr,
        api_addr: req.api_addr,
    };
    let log_index = state.node.add_member(req.id, node, req.voter).await?;
    Ok(Json(MembershipResponse {
        log_index,
        members: state.node.status().members,
    }))
}

#[utoipa::path(delete, path = "/v1/sys/cluster/members/{id}", tag = "sys", security(("bearer" = [])), params(("id" = u64, Path, description = "Node id")), responses((status = 200, description = "Removed"), (status = 404, description = "Not a member", body = ErrorResponse), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn remove_member(
    State(state): State<AppState>,
    Auth(_p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<MembershipResponse>> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no member {id:?}")))?;
    if !state.node.status().members.iter().any(|m| m.id == id) {
        return Err(ApiError::not_found(format!("node {id} is not a member")));
    }
    let log_index = state.node.remove_member(id).await?;
    Ok(Json(MembershipResponse {
        log_index,
        members: state.node.status().members,
    }))
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Target node; when absent, the most caught-up other voter.
    pub to: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferResponse {
    pub from: Option<u64>,
    pub to: u64,
}

#[utoipa::path(post, path = "/v1/sys/cluster/transfer-leader", tag = "sys", security(("bearer" = [])), request_body(content = TransferRequest, description = "Optional target"), responses((status = 200, description = "Transfer started", body = TransferResponse), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn transfer_leader(
    State(state): State<AppState>,
    Auth(_p): Auth,
    body: axum::body::Bytes,
) -> ApiResult<Json<TransferResponse>> {
    let req: TransferRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TransferRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON for this request: {e}"),
            )
        })?
    };
    let from = state.node.status().leader;
    let to = state.node.transfer_leader(req.to).await?;
    Ok(Json(TransferResponse { from, to }))
}

/// A consistent snapshot of the applied state, as a file download (see `certplane snapshot save`).
#[utoipa::path(get, path = "/v1/sys/snapshot", tag = "sys", security(("bearer" = [])), responses((status = 200, description = "A consistent snapshot file", content_type = "application/octet-stream"), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn snapshot(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
) -> ApiResult<Response> {
    super::certificates::read_barrier(&state, consistency).await?;
    let dir = state.node.data_dir().join("exports");
    let sm = state.node.sm.clone();
    let (file, header) = blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::unavailable(e.to_string()))?;
        let path = dir.join(format!("export-{}", random_hex(8)));
        let (header, _) = sm
            .export_to(&path)
            .map_err(|e| ApiError::unavailable(format!("snapshot failed: {e}")))?;
        let file = std::fs::File::open(&path).map_err(|e| ApiError::unavailable(e.to_string()))?;
        // The open handle keeps the data readable; the name goes now so nothing is left behind.
        let _ = std::fs::remove_file(&path);
        Ok((file, header))
    })
    .await?;
    let index = header
        .meta
        .last_log_id
        .as_ref()
        .map(|l| l.index())
        .unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"certplane-{index}.snap\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeBody {
    /// The drill's id (1 to 64 of A-Z, a-z, 0-9, '-', '_').
    pub drill: String,
    pub seq: u64,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProbeView {
    pub drill: String,
    pub seq: u64,
    /// Milliseconds since the epoch, from the proposer.
    pub at: i64,
}

/// A failover drill's probe write (`certplane drill`): one small record per drill, replaced each
/// time.
#[utoipa::path(post, path = "/v1/sys/probe", tag = "sys", security(("bearer" = [])), request_body = ProbeBody, responses((status = 200, description = "Committed", body = ProbeView), (status = 400, description = "Invalid drill id", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs cluster_manage on /", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn probe_write(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body, _): ApiJson<ProbeBody>,
) -> ApiResult<Json<ProbeView>> {
    if !certplane_core::apply::is_drill_id(&body.drill) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "a drill id is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_'",
        ));
    }
    let now = now_ms();
    let proposal = Proposal::new(
        Timestamp(now),
        principal,
        Command::Probe {
            drill: body.drill.clone(),
            seq: body.seq,
        },
    );
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::Probed { drill, seq } => Ok(Json(ProbeView {
            drill,
            seq,
            at: now,
        })),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

/// The latest probe of a drill (a linearizable read unless `?consistency=stale`).
#[utoipa::path(get, path = "/v1/sys/probe/{drill}", tag = "sys", security(("bearer" = [])), params(("drill" = String, Path)), responses((status = 200, description = "The latest probe", body = ProbeView), (status = 404, description = "No probe for this drill", body = ErrorResponse), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse), (status = 403, description = "Needs cluster_manage on /", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn probe_read(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
    Path(drill): Path<String>,
) -> ApiResult<Json<ProbeView>> {
    if !certplane_core::apply::is_drill_id(&drill) {
        return Err(ApiError::not_found("no such drill"));
    }
    super::certificates::read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let lookup = drill.clone();
    let record = blocking(move || {
        certplane_core::apply::get_probe(&view, &lookup)
            .map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no probe for drill {drill}")))?;
    Ok(Json(ProbeView {
        drill,
        seq: record.seq,
        at: record.at.0,
    }))
}

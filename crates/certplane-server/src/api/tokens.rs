//! `/v1/tokens` and `/v1/principals/certificate`: principals (bearer tokens and client-certificate
//! subjects) with role bindings per zone, groups and an expiry; `/v1/whoami`.
//!
//! Secrets are generated here, shown once in the creation answer, and stored only as their SHA-256.
//! Every change is a replicated command and an audit record; the cluster refuses to revoke its last
//! active admin on `/`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use certplane_core::apply::{get_token, list_tokens};
use certplane_core::policy::{normalize_zone_path, Span};
use certplane_core::principal::CredentialKind;
use certplane_core::{Applied, Command, Principal, Proposal, RoleBinding, Timestamp, TokenRecord};
use serde::{Deserialize, Serialize};

use super::certificates::read_barrier;
use super::error::{ApiError, ApiResult};
use super::extract::{
    hash_secret, request_hash, subject_hash, ApiJson, Auth, Consistency, IdempotencyKey,
};
use super::openapi::ErrorResponse;
use super::sys::{new_secret, random_hex};
use super::{blocking, now_ms, AppState};

/// Longest lifetime a principal may be given.
const MAX_LIFETIME: Span = Span::days(5 * 366);

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingBody {
    /// admin, zone_owner, approver, requester, auditor, operator
    #[schema(value_type = String)]
    pub role: certplane_core::Role,
    /// The zone the role covers, with every zone below it; `/` for all.
    pub zone: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    pub name: String,
    pub bindings: Vec<BindingBody>,
    /// Approval groups, e.g. `security`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// e.g. `90d`; without it the principal does not expire.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub expires_in: Option<Span>,
    /// Only for `/v1/principals/certificate`: the client certificate's subject (RFC 4514, as
    /// `certplane whoami` shows it over mutual TLS), e.g. `CN=deploy-bot,O=Example`.
    #[serde(default)]
    pub subject: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    #[schema(value_type = String)]
    pub kind: CredentialKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub bindings: Vec<RoleBinding>,
    pub groups: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        let principal = t.principal();
        TokenView {
            bindings: principal.all_bindings(),
            id: t.id,
            name: t.name,
            kind: t.kind,
            subject: t.subject,
            groups: t.groups,
            created_at: super::view::rfc3339(t.created_at),
            created_by: t.created_by,
            expires_at: t.expires_at.map(super::view::rfc3339),
            revoked_at: t.revoked_at.map(super::view::rfc3339),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The bearer secret, shown only in this answer (absent for client-certificate principals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub token: TokenView,
}

fn build_record(
    body: &CreateTokenBody,
    kind: CredentialKind,
) -> ApiResult<(TokenRecord, Option<String>)> {
    let mut bindings = Vec::new();
    for b in &body.bindings {
        let zone = normalize_zone_path(&b.zone)
            .map_err(|e| ApiError::bad_request("invalid_argument", format!("binding zone: {e}")))?;
        bindings.push(RoleBinding::new(b.role, &zone));
    }
    if bindings.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "bindings must list at least one {\"role\": ..., \"zone\": ...}",
        ));
    }
    bindings.sort();
    bindings.dedup();
    let now = now_ms();
    let expires_at = match body.expires_in {
        Some(span) if span.0 <= 0 || span > MAX_LIFETIME => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                "expires_in must be positive and at most 5 years",
            ))
        }
        Some(span) => Some(Timestamp(now + span.0 * 1000)),
        None => None,
    };
    let (id, secret, hash, subject) = match kind {
        CredentialKind::Token => {
            if body.subject.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_argument",
                    "subject is only for /v1/principals/certificate",
                ));
            }
            let secret = new_secret();
            let hash = hash_secret(&secret);
            (format!("tok_{}", random_hex(8)), Some(secret), hash, None)
        }
        CredentialKind::ClientCertificate => {
            let subject = body
                .subject
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 1024 && !s.chars().any(char::is_control))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_argument",
                        "subject is required: the client certificate's subject, e.g. CN=deploy-bot,O=Example",
                    )
                })?
                .to_string();
            (
                format!("cert_{}", random_hex(8)),
                None,
                subject_hash(&subject),
                Some(subject),
            )
        }
    };
    Ok((
        TokenRecord {
            id,
            name: body.name.trim().to_string(),
            kind,
            secret_sha256: hash,
            subject,
            roles: vec![],
            zones: vec![],
            bindings,
            groups: body.groups.clone(),
            created_at: Timestamp(now),
            created_by: String::new(),
            expires_at,
            revoked_at: None,
        },
        secret,
    ))
}

async fn create_principal(
    state: AppState,
    principal: Principal,
    idem: Option<String>,
    route: &str,
    body: CreateTokenBody,
    bytes: &[u8],
    kind: CredentialKind,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let (record, secret) = build_record(&body, kind)?;
    // A retry under the same Idempotency-Key returns the first answer; the first secret is not
    // stored anywhere, so the retry's answer carries none.
    let hash = idem.as_ref().map(|_| request_hash(route, bytes));
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::CreateToken(Box::new(record)),
    )
    .with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    let replayed = outcome.replayed;
    match outcome.result.map_err(ApiError::from)? {
        Applied::TokenCreated { token } => Ok((
            StatusCode::CREATED,
            Json(CreatedToken {
                secret: if replayed { None } else { secret },
                token: TokenView::from(*token),
            }),
        )),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

/// Create a bearer token with role bindings. The secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "principals", security(("bearer" = [])), request_body = CreateTokenBody, responses((status = 201, description = "Created; `secret` is shown once", body = CreatedToken), (status = 400, description = "Invalid bindings or expiry", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 403, description = "Needs principal_manage on /", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    ApiJson(body, bytes): ApiJson<CreateTokenBody>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    create_principal(
        state,
        principal,
        idem,
        "POST /v1/tokens",
        body,
        &bytes,
        CredentialKind::Token,
    )
    .await
}

/// Map a client certificate's subject (mutual TLS) to role bindings.
#[utoipa::path(post, path = "/v1/principals/certificate", tag = "principals", security(("bearer" = [])), request_body = CreateTokenBody, responses((status = 201, description = "Created", body = CreatedToken), (status = 400, description = "Invalid subject, bindings or expiry", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 403, description = "Needs principal_manage on /", body = ErrorResponse), (status = 409, description = "The subject is already mapped", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn create_certificate_principal(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    ApiJson(body, bytes): ApiJson<CreateTokenBody>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    create_principal(
        state,
        principal,
        idem,
        "POST /v1/principals/certificate",
        body,
        &bytes,
        CredentialKind::ClientCertificate,
    )
    .await
}

#[utoipa::path(get, path = "/v1/tokens", tag = "principals", security(("bearer" = [])), responses((status = 200, description = "Every token and client-certificate principal (never secrets)", body = Vec<TokenView>), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 403, description = "Needs principal_manage on /", body = ErrorResponse), (status = 503, description = "Unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
) -> ApiResult<Json<Vec<TokenView>>> {
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let tokens =
        blocking(move || list_tokens(&view).map_err(|e| ApiError::unavailable(e.to_string())))
            .await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

fn check_token_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no token with id {id:?}")))
    }
}

#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "principals", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, description = "The principal", body = TokenView), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 403, description = "Needs principal_manage on /", body = ErrorResponse), (status = 503, description = "Unavailable; retry", body = ErrorResponse)))]
pub async fn get_one(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    check_token_id(&id)?;
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let lookup = id.clone();
    let token = blocking(move || {
        get_token(&view, &lookup).map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no token with id {id}")))?;
    Ok(Json(TokenView::from(token)))
}

/// Revoke a token or client-certificate principal (the last active admin on `/` cannot be).
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "principals", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, description = "Revoked (or already revoked)", body = TokenView), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 409, description = "The last active admin on /", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 403, description = "Needs principal_manage on /", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    check_token_id(&id)?;
    let proposal = Proposal::new(Timestamp(now_ms()), principal, Command::RevokeToken { id });
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::TokenRevoked { token } => Ok(Json(TokenView::from(*token))),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub id: String,
    pub name: String,
    #[schema(value_type = Vec<Object>)]
    pub bindings: Vec<RoleBinding>,
    pub groups: Vec<String>,
}

/// The calling principal and its bindings.
#[utoipa::path(get, path = "/v1/whoami", tag = "principals", security(("bearer" = [])), responses((status = 200, description = "The caller", body = WhoAmI), (status = 401, description = "Missing or invalid credentials", body = ErrorResponse)))]
pub async fn whoami(Auth(p): Auth) -> Json<WhoAmI> {
    Json(WhoAmI {
        bindings: p.all_bindings(),
        id: p.id,
        name: p.name,
        groups: p.groups,
    })
}

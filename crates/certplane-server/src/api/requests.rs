//! `/v1/certificate-requests`: submit (CSR or key spec), get, list; and the intake shared with the
//! zone dry run (`POST /v1/zones/{path}/evaluate`) and renewals.
//!
//! ```text
//!  body ─► zone path, names (lowercase, IDNA, no trailing dot, wildcard rules), CSR verified or key
//!          spec checked, validity (default: the zone's maximum) ─► RequestSpec
//!       ─► SubmitRequest (policy evaluated in apply) ─► approved ─► leader's issuance worker
//!          (or, when the dry run here finds it approved at once, signed ahead and issued by the same
//!          entry: workers::signing)
//!       ─► wait (bounded) for issued / failed ─► answer
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use certplane_core::apply::get_request;
use certplane_core::command::SubmitRequest;
use certplane_core::names::{self, San};
use certplane_core::policy::{KeyFacts, KeyType, Span, Violation};
use certplane_core::request::{KeySource, KeySpec, RequestRecord, RequestSpec, RequestState};
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{Applied, Command, Permission, Principal, Proposal, Timestamp};
use serde::{Deserialize, Serialize};

use super::access::require_in;
use super::certificates::{check_tags, check_text, normalize_zone};
use super::error::{ApiError, ApiResult};
use super::extract::{request_hash, ApiJson, ApiQuery, Auth, Consistency, IdempotencyKey};
use super::openapi::ErrorResponse;
use super::view::{rfc3339, CertificateView, PageView};
use super::{blocking, now_ms, AppState};

/// Most SANs a request may list (zone policy usually allows far fewer).
pub const MAX_REQUEST_SANS: usize = 1000;
/// Longest a submission waits for the certificate before answering with the request as it stands.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// What a requester asks for. Send either `csr_pem` (you keep the key) or `key` (certplane generates
/// it and stores it sealed); with neither, certplane generates an ECDSA P-256 key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    /// Zone path, e.g. `/prod/payments`. Not used by `/v1/zones/{path}/evaluate` (the path says).
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub common_name: Option<String>,
    /// DNS names and IP addresses. Without SANs, the common name (or the CSR's names) are used.
    #[serde(default)]
    pub sans: Vec<String>,
    #[serde(default)]
    pub csr_pem: Option<String>,
    /// `{"type":"ecdsa_p256"}`, `{"type":"ecdsa_p384"}`, `{"type":"ed25519"}`, `{"type":"rsa","bits":3072}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub key: Option<KeySpec>,
    /// e.g. `90d`; default: the zone's maximum validity.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub validity: Option<Span>,
    /// Issuer name; default: the zone's default issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Where to deploy the certificate, e.g. `[{"type":"acm","region":"eu-west-1","tags":{"app":"shop"}}]`;
    /// absent: the zone's `destinations`; `[]`: nowhere.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub destinations: Option<Vec<certplane_core::deploy::Destination>>,
}

/// What intake made of a request body: the spec to propose and what it chose not to honour.
pub struct Intake {
    pub spec: RequestSpec,
    /// CSR contents certplane ignores (requested CA rights, extensions, names beyond the request).
    pub warnings: Vec<String>,
}

fn policy_error(violations: Vec<Violation>, message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "policy_violation",
        message,
    )
    .with_details(
        violations
            .into_iter()
            .map(|v| serde_json::to_value(v).unwrap_or_default())
            .collect(),
    )
}

fn name_violation(input: &str, e: names::NameError) -> Violation {
    Violation {
        rule: "names".into(),
        zone: certplane_core::policy::BUILTIN.into(),
        value: input.to_string(),
        message: e.to_string(),
    }
}

fn key_type_of(algorithm: certplane_pki::KeyAlgorithm) -> KeyType {
    match algorithm {
        certplane_pki::KeyAlgorithm::Rsa => KeyType::Rsa,
        certplane_pki::KeyAlgorithm::EcdsaP256 => KeyType::EcdsaP256,
        certplane_pki::KeyAlgorithm::EcdsaP384 => KeyType::EcdsaP384,
        certplane_pki::KeyAlgorithm::Ed25519 => KeyType::Ed25519,
    }
}

pub fn pki_key_spec(spec: KeySpec) -> certplane_pki::KeySpec {
    match spec {
        KeySpec::Rsa { bits } => certplane_pki::KeySpec::Rsa { bits },
        KeySpec::EcdsaP256 => certplane_pki::KeySpec::EcdsaP256,
        KeySpec::EcdsaP384 => certplane_pki::KeySpec::EcdsaP384,
        KeySpec::Ed25519 => certplane_pki::KeySpec::Ed25519,
    }
}

/// Turn a body into a normalised spec. `zone` is already canonical. Names that can never be issued
/// (malformed, misplaced wildcards, wildcards on public suffixes) are answered 422 here, every one of
/// them at once; everything else is for the policy in `apply` to judge.
pub fn intake(
    state: &AppState,
    zone: String,
    body: RequestBody,
    renewal_of: Option<String>,
) -> ApiResult<Intake> {
    let mut warnings = Vec::new();
    if body.sans.len() > MAX_REQUEST_SANS {
        return Err(ApiError::bad_request(
            "invalid_argument",
            format!("at most {MAX_REQUEST_SANS} SANs per request"),
        ));
    }
    if let Some(owner) = &body.owner {
        check_text("owner", owner, 128)?;
    }
    check_tags(&body.tags)?;
    if let Some(list) = &body.destinations {
        certplane_core::deploy::validate_destinations(list)
            .map_err(|e| ApiError::bad_request("invalid_argument", format!("destinations: {e}")))?;
    }
    if let Some(issuer) = &body.issuer {
        check_text("issuer", issuer, 64)?;
    }
    if body.csr_pem.is_some() && body.key.is_some() {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "send either csr_pem (you hold the key) or key (certplane generates it), not both",
        ));
    }

    // The key, and the names a CSR carries.
    let (key, key_facts, csr_names) = match (&body.csr_pem, body.key) {
        (Some(pem), _) => {
            let csr = certplane_pki::parse_csr(pem)
                .map_err(|e| ApiError::bad_request("invalid_csr", e.to_string()))?;
            if csr.requests_ca {
                warnings.push(
                    "the CSR asks for CA rights (CA:TRUE, keyCertSign or cRLSign); issued certificates are never CAs".into(),
                );
            }
            let ignored: Vec<&String> = csr
                .requested_extensions
                .iter()
                .filter(|e| e.as_str() != "subjectAltName")
                .collect();
            if !ignored.is_empty() {
                warnings.push(format!(
                    "requested extensions are ignored; certplane's profile decides: {}",
                    ignored
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !csr.other_names.is_empty() {
                warnings.push(format!(
                    "SAN types other than DNS and IP are never issued: {}",
                    csr.other_names.join(", ")
                ));
            }
            let mut csr_names: Vec<String> = csr.dns_names.clone();
            csr_names.extend(csr.ip_addresses.iter().map(|ip| ip.to_string()));
            let facts = KeyFacts {
                algorithm: key_type_of(csr.key.algorithm),
                bits: csr.key.bits,
            };
            (
                KeySource::Csr {
                    csr_pem: pem.clone(),
                },
                facts,
                Some((csr.common_name.clone(), csr_names)),
            )
        }
        (None, spec) => {
            let spec = spec.unwrap_or(KeySpec::EcdsaP256);
            let pki_spec = pki_key_spec(spec);
            pki_spec
                .validate()
                .map_err(|e| ApiError::bad_request("invalid_key_spec", e.to_string()))?;
            let facts = pki_spec.facts();
            (
                KeySource::Generate { spec },
                KeyFacts {
                    algorithm: key_type_of(facts.algorithm),
                    bits: facts.bits,
                },
                None,
            )
        }
    };

    // Names: the body's, else the CSR's; a lone common name doubles as the SAN.
    let mut common_name = body.common_name.clone();
    let mut raw_sans = body.sans.clone();
    if raw_sans.is_empty() && common_name.is_none() {
        if let Some((cn, names)) = &csr_names {
            common_name = cn.clone();
            raw_sans = names.clone();
        }
    } else if let Some((_, names)) = &csr_names {
        let beyond: Vec<&String> = names.iter().filter(|n| !raw_sans.contains(n)).collect();
        if !beyond.is_empty() {
            warnings.push(format!(
                "names in the CSR beyond the request are not issued: {}",
                beyond
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut violations = Vec::new();
    let mut sans: Vec<San> = Vec::with_capacity(raw_sans.len());
    for raw in &raw_sans {
        match names::normalize_san(raw) {
            Ok(san) if !sans.contains(&san) => sans.push(san),
            Ok(_) => {}
            Err(e) => violations.push(name_violation(raw, e)),
        }
    }
    let common_name = match common_name.map(|cn| cn.trim().to_string()) {
        None => None,
        Some(cn) if cn.is_empty() => None,
        Some(cn) => {
            if cn.chars().count() > certplane_pki::ca::MAX_COMMON_NAME_CHARS
                || cn.chars().any(char::is_control)
            {
                return Err(ApiError::bad_request(
                    "invalid_argument",
                    format!(
                        "the common name must be at most {} characters without control characters",
                        certplane_pki::ca::MAX_COMMON_NAME_CHARS
                    ),
                ));
            }
            // A common name that looks like a host name is normalised like a SAN.
            if cn.contains('.') || cn.contains(':') || cn.starts_with('*') {
                match names::normalize_san(&cn) {
                    Ok(san) => Some(san.to_string()),
                    Err(e) => {
                        violations.push(name_violation(&cn, e));
                        None
                    }
                }
            } else {
                Some(cn)
            }
        }
    };
    if sans.is_empty() && violations.is_empty() {
        if let Some(cn) = &common_name {
            if let Ok(san) = names::normalize_san(cn) {
                sans.push(san);
            }
        }
    }
    if !violations.is_empty() {
        let n = violations.len();
        return Err(policy_error(
            violations,
            format!("{n} name(s) can never be issued"),
        ));
    }

    // Validity: as asked, or the zone's maximum.
    let validity = match body.validity {
        Some(v) => v,
        None => {
            let view = state.node.view();
            certplane_core::zone::effective_for(&view, &zone)
                .map_err(|e| ApiError::unavailable(e.to_string()))?
                .0
                .max_validity
                .value
        }
    };
    Ok(Intake {
        spec: RequestSpec {
            zone,
            common_name,
            sans,
            key,
            key_facts,
            validity,
            issuer: body.issuer.map(|s| s.trim().to_string()),
            owner: body.owner,
            tags: body.tags,
            renewal_of,
            destinations: body.destinations,
        },
        warnings,
    })
}

/// A request as clients see it: never the CSR's key material beyond the CSR itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestView {
    pub id: String,
    pub state: String,
    pub zone: String,
    pub common_name: Option<String>,
    pub sans: Vec<String>,
    /// `csr` or `generated`.
    pub key_source: String,
    pub key_type: String,
    pub key_bits: u32,
    pub validity: String,
    pub issuer: String,
    pub owner: Option<String>,
    pub tags: BTreeMap<String, String>,
    #[schema(value_type = Vec<Object>)]
    pub violations: Vec<Violation>,
    /// The zone policy versions evaluated, root first: `[["/", 3], ["/prod", 1]]`.
    #[schema(value_type = Vec<Object>)]
    pub policy_versions: Vec<(String, u64)>,
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub certificate_id: Option<String>,
    pub renewal_of: Option<String>,
    pub error: Option<String>,
    pub generation: u64,
    /// The approval workflow: stages (copied from the zone at submission), the stage deciding now,
    /// every decision with its comment, and the deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub approval: Option<serde_json::Value>,
    /// The AWS side of an ACM PCA issuance: the CA, the idempotency token every try sends, the
    /// certificate ARN and AWS request id once AWS answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub aws: Option<serde_json::Value>,
    /// The issued certificate, once there is one.
    pub certificate: Option<CertificateView>,
    /// What certplane chose not to honour from the submission (only on the submission's answer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl RequestView {
    pub fn new(r: RequestRecord, certificate: Option<CertificateView>) -> Self {
        RequestView {
            id: r.id,
            state: r.state.as_str().into(),
            zone: r.spec.zone,
            common_name: r.spec.common_name,
            sans: r.spec.sans.iter().map(San::to_string).collect(),
            key_source: match r.spec.key {
                KeySource::Csr { .. } => "csr".into(),
                KeySource::Generate { .. } => "generated".into(),
            },
            key_type: r.spec.key_facts.algorithm.as_str().into(),
            key_bits: r.spec.key_facts.bits,
            validity: r.spec.validity.to_string(),
            issuer: r.issuer,
            owner: r.spec.owner,
            tags: r.spec.tags,
            violations: r.violations,
            policy_versions: r.policy_versions,
            requested_by: r.requested_by,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            certificate_id: r.certificate_id,
            renewal_of: r.spec.renewal_of,
            error: r.error,
            generation: r.generation,
            approval: r
                .approval
                .as_ref()
                .and_then(|a| serde_json::to_value(a).ok()),
            aws: r.aws.as_ref().and_then(|a| serde_json::to_value(a).ok()),
            certificate,
            warnings: Vec::new(),
        }
    }
}

fn new_request_id() -> String {
    use rand::RngCore;
    let mut buf = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    format!("req_{}", hex::encode(buf))
}

/// Propose a request and wait (at most `wait`) for it to leave the approved/issuing states.
pub async fn submit(
    state: &AppState,
    principal: Principal,
    intake: Intake,
    idem: Option<String>,
    hash: Option<String>,
    wait: Duration,
) -> ApiResult<(StatusCode, Json<RequestView>)> {
    let id = new_request_id();
    // Sign ahead when this node's dry run says the request is approved at once: one commit for the
    // submission and its certificate instead of two (decision 0015).
    let presigned = {
        let view = state.node.view();
        let signers = state.signers.clone();
        let kek = state.kek.clone();
        let spec = intake.spec.clone();
        let id = id.clone();
        state
            .signers
            .run_blocking(move || {
                crate::workers::signing::presign(
                    &view,
                    &id,
                    &spec,
                    &signers,
                    kek.as_deref(),
                    now_ms(),
                )
            })
            .await
            .flatten()
    };
    let command = Command::SubmitRequest(Box::new(SubmitRequest {
        id,
        spec: intake.spec,
        presigned,
    }));
    let proposal =
        Proposal::new(Timestamp(now_ms()), principal, command).with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    let (record, issued) = match outcome.result {
        Ok(Applied::RequestRecorded { request }) => (*request, None),
        // Issued by its own entry: the answer carries the certificate, so a follower need not
        // wait until it has applied the entry as well.
        Ok(Applied::RequestIssued {
            request,
            certificate,
        }) => (*request, Some(CertificateView::new(*certificate, now_ms()))),
        Ok(other) => {
            return Err(ApiError::unavailable(format!(
                "unexpected outcome {other:?}"
            )))
        }
        Err(rejection) => return Err(ApiError::from(rejection)),
    };
    let id = record.id.clone();
    let (record, certificate) = match issued {
        Some(certificate) => (record, Some(certificate)),
        None => {
            let record = wait_for_progress(state, record, wait).await;
            let certificate = certificate_of(state, &record).await?;
            (record, certificate)
        }
    };
    let mut view = RequestView::new(record, certificate);
    view.warnings = intake.warnings;
    let status = if view.state == RequestState::Approved.as_str()
        || view.state == RequestState::Issuing.as_str()
    {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    tracing::debug!(request = %id, state = %view.state, "request answered");
    Ok((status, Json(view)))
}

/// Follow the local state machine until the request is final or pending approval, or `wait` passes.
pub async fn wait_for_progress(
    state: &AppState,
    record: RequestRecord,
    wait: Duration,
) -> RequestRecord {
    if wait.is_zero() {
        return record;
    }
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    let mut applied = state.node.sm.subscribe_applied();
    loop {
        if record.state.is_final() || record.state == RequestState::PendingApproval {
            return record;
        }
        // Two point lookups in the state index per wake-up; the record is decoded only once it
        // has reached a final state.
        let view = state.node.view();
        let finished = [RequestState::Issued, RequestState::Failed]
            .iter()
            .any(|s| {
                let key = certplane_core::apply::request_index_key("state", s.as_str(), &record.id);
                matches!(view.get(Keyspace::RequestIndex, &key), Ok(Some(_)))
            });
        if finished {
            if let Ok(Some(now)) = get_request(&view, &record.id) {
                return now;
            }
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => {}
            // Out of time: answer with the request as it stands now.
            _ => {
                return get_request(&view, &record.id)
                    .ok()
                    .flatten()
                    .unwrap_or(record)
            }
        }
    }
}

pub async fn certificate_of(
    state: &AppState,
    record: &RequestRecord,
) -> ApiResult<Option<CertificateView>> {
    let Some(id) = record.certificate_id.clone() else {
        return Ok(None);
    };
    let view = state.node.view();
    let found = blocking(move || {
        certplane_core::apply::get_certificate(&view, &id)
            .map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?;
    Ok(found.map(|c| CertificateView::new(c, now_ms())))
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubmitQuery {
    /// How long to wait for the certificate before answering 202 (`0s` answers at once; at most 30s).
    #[param(value_type = Option<String>)]
    pub wait: Option<Span>,
}

pub fn wait_of(q: &SubmitQuery) -> Duration {
    match q.wait {
        Some(Span(s)) if s <= 0 => Duration::ZERO,
        Some(Span(s)) => Duration::from_secs(s as u64).min(MAX_WAIT),
        None => DEFAULT_WAIT,
    }
}

#[utoipa::path(post, path = "/v1/certificate-requests", tag = "requests", security(("bearer" = [])), request_body = RequestBody, params(SubmitQuery, ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first answer and never issue twice")), responses((status = 201, description = "Issued, failed, or waiting for approval", body = RequestView), (status = 202, description = "Approved; issuance still running (poll GET /v1/certificate-requests/{id})", body = RequestView), (status = 422, description = "Policy violation: every violation in `details`, the request id in the message", body = ErrorResponse), (status = 400, description = "Invalid request or CSR", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 403, description = "Not allowed in this zone", body = ErrorResponse), (status = 404, description = "Unknown zone", body = ErrorResponse), (status = 409, description = "Idempotency key reused for another request", body = ErrorResponse), (status = 503, description = "No leader; retry with the same Idempotency-Key", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    ApiQuery(q): ApiQuery<SubmitQuery>,
    ApiJson(body, raw): ApiJson<RequestBody>,
) -> ApiResult<(StatusCode, Json<RequestView>)> {
    let zone = normalize_zone(body.zone.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_argument",
            "zone is required, e.g. \"/prod/payments\"",
        )
    })?)?;
    let hash = idem
        .as_ref()
        .map(|_| request_hash("POST /v1/certificate-requests", &raw));
    let intake = intake(&state, zone, body, None)?;
    submit(&state, principal, intake, idem, hash, wait_of(&q)).await
}

pub fn check_request_id(id: &str) -> ApiResult<()> {
    let ok =
        id.len() <= 64 && id.starts_with("req_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(ApiError::not_found(format!("no request with id {id:?}")));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/certificate-requests/{id}", tag = "requests", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, description = "The request, with its certificate once issued", body = RequestView), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn get_one(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    Path(id): Path<String>,
) -> ApiResult<Json<RequestView>> {
    check_request_id(&id)?;
    super::certificates::read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let lookup = id.clone();
    let record = blocking(move || {
        get_request(&view, &lookup).map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no request with id {id}")))?;
    require_in(&principal, Permission::InventoryRead, &record.spec.zone)?;
    let certificate = certificate_of(&state, &record).await?;
    Ok(Json(RequestView::new(record, certificate)))
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// submitted, rejected, pending_approval, approved, issuing, issued, failed
    pub state: Option<String>,
    pub zone: Option<String>,
    pub owner: Option<String>,
    /// The principal id that submitted the request.
    pub requester: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub consistency: Option<String>,
}

/// Scan one request index (`kind`/`value`), or every request, from `cursor`, keeping records that
/// pass `keep`, until `limit` are found or a bounded number of entries were read.
pub(super) fn list_requests(
    view: &impl StateRead,
    index: Option<(&str, &str)>,
    keep: impl Fn(&RequestRecord) -> bool,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<RequestRecord>, Option<String>), ApiError> {
    const MAX_SCANNED: usize = 10_000;
    let err = |e: certplane_core::store::StoreError| ApiError::unavailable(e.to_string());
    let (prefix, end): (Vec<u8>, Vec<u8>) = match index {
        Some((kind, value)) => {
            let prefix = certplane_core::apply::request_index_key(kind, value, "");
            let mut end = prefix.clone();
            if let Some(last) = end.last_mut() {
                *last += 1;
            }
            (prefix, end)
        }
        None => (Vec::new(), Vec::new()),
    };
    let mut from = prefix.clone();
    if let Some(c) = cursor {
        from.extend_from_slice(c.as_bytes());
        from.push(0);
    }
    let mut out = Vec::new();
    let mut scanned = 0;
    let mut last_id: Option<String>;
    loop {
        let ks = if index.is_some() {
            Keyspace::RequestIndex
        } else {
            Keyspace::Requests
        };
        let batch = view.scan(ks, &from, &end, 256).map_err(err)?;
        if batch.is_empty() {
            return Ok((out, None));
        }
        for (key, value) in &batch {
            scanned += 1;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).to_string();
            let record = if index.is_some() {
                get_request(view, &id).map_err(|e| ApiError::unavailable(e.to_string()))?
            } else {
                certplane_core::keys::decode_record::<RequestRecord>("request", value).ok()
            };
            last_id = Some(id);
            if let Some(r) = record.filter(|r| keep(r)) {
                out.push(r);
                if out.len() >= limit {
                    return Ok((out, last_id));
                }
            }
            if scanned >= MAX_SCANNED {
                return Ok((out, last_id));
            }
        }
        from = batch.last().map(|(k, _)| k.clone()).unwrap_or_default();
        from.push(0);
    }
}

#[utoipa::path(get, path = "/v1/certificate-requests", tag = "requests", security(("bearer" = [])), params(ListQuery), responses((status = 200, description = "A page of requests, newest id order, with `next_cursor`"), (status = 400, description = "Invalid query", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<PageView<RequestView>>> {
    let wanted_state = match &q.state {
        Some(s) => Some(RequestState::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "state must be one of submitted, rejected, pending_approval, approved, issuing, issued, failed",
            )
        })?),
        None => None,
    };
    let zone = q.zone.as_deref().map(normalize_zone).transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    if let Some(c) = &q.cursor {
        check_request_id(c).map_err(|_| ApiError::bad_request("invalid_query", "bad cursor"))?;
    }
    super::certificates::read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let owner = q.owner.clone();
    let requester = q.requester.clone();
    let cursor = q.cursor.clone();
    let (items, next) = blocking(move || {
        let index_state = wanted_state.map(|s| s.as_str().to_string());
        let index: Option<(&str, &str)> = if let Some(s) = &index_state {
            Some(("state", s.as_str()))
        } else if let Some(z) = &zone {
            Some(("zone", z.as_str()))
        } else if let Some(o) = &owner {
            Some(("owner", o.as_str()))
        } else {
            requester.as_deref().map(|r| ("requester", r))
        };
        let keep = |r: &RequestRecord| {
            principal.allows(Permission::InventoryRead, &r.spec.zone)
                && wanted_state.is_none_or(|s| r.state == s)
                && zone.as_ref().is_none_or(|z| &r.spec.zone == z)
                && owner
                    .as_ref()
                    .is_none_or(|o| r.spec.owner.as_ref() == Some(o))
                && requester.as_ref().is_none_or(|p| &r.requested_by == p)
        };
        list_requests(&view, index, keep, cursor.as_deref(), limit)
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

//! `/v1/certificates`: import, list, get, retire.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use certplane_core::certificate::CertificateDetails;
use certplane_core::query::{list_certificates, CertificateFilter, StatusFilter};
use certplane_core::{
    Applied, CertificateRecord, Command, EncryptedKey, ImportCertificate, Permission, Proposal,
    Timestamp,
};
use certplane_pki::inspect::{key_matches_certificate, parse_chain_pem, parse_private_key_pem};
use serde::Deserialize;

use super::access::require_in;
use super::error::{ApiError, ApiResult};
use super::extract::{request_hash, ApiJson, ApiQuery, Auth, Consistency, IdempotencyKey};
use super::openapi::ErrorResponse;
use super::view::{CertificateView, PageView};
use super::{blocking, now_ms, AppState};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Leaf first, then intermediates, PEM.
    pub chain_pem: String,
    /// Optional unencrypted private key (PKCS#8, PKCS#1 or SEC1 PEM); sealed before it is stored.
    #[serde(default)]
    pub private_key_pem: Option<String>,
    pub owner: String,
    pub zone: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

pub fn check_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.is_empty() || value.len() > max || value.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            format!("{field} must be 1 to {max} characters without control characters"),
        ));
    }
    Ok(())
}

/// The canonical form of a zone path (`payments/prod` and `/payments/prod/` are `/payments/prod`).
pub fn normalize_zone(zone: &str) -> ApiResult<String> {
    certplane_core::policy::normalize_zone_path(zone)
        .map_err(|e| ApiError::bad_request("invalid_argument", e.to_string()))
}

/// At most 64 tags; names 1-128 characters, values at most 512, no control characters.
pub fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    if tags.len() > 64 {
        return Err(ApiError::bad_request("invalid_argument", "at most 64 tags"));
    }
    for (k, v) in tags {
        check_text("tag name", k, 128)?;
        if v.len() > 512 || v.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("tag {k}: values are at most 512 characters"),
            ));
        }
    }
    Ok(())
}

pub fn record_id(fingerprint: &str) -> String {
    format!("crt_{}", &fingerprint[..fingerprint.len().min(32)])
}

pub fn pki_error(e: certplane_pki::PkiError) -> ApiError {
    match e.kind() {
        certplane_pki::PkiErrorKind::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "certificate_too_large",
            e.to_string(),
        ),
        _ => ApiError::bad_request("invalid_certificate", e.to_string()),
    }
}

#[utoipa::path(post, path = "/v1/certificates/import", tag = "certificates", security(("bearer" = [])), request_body = ImportRequest, params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first answer")), responses((status = 201, description = "Imported", body = CertificateView), (status = 200, description = "Already in the inventory (same fingerprint)", body = CertificateView), (status = 409, description = "Idempotency key reused for another request", body = ErrorResponse), (status = 413, description = "Body too large", body = ErrorResponse), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn import(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    ApiJson(req, raw): ApiJson<ImportRequest>,
) -> ApiResult<(StatusCode, Json<CertificateView>)> {
    check_text("owner", &req.owner, 128)?;
    let zone = normalize_zone(&req.zone)?;
    check_tags(&req.tags)?;
    let chain = parse_chain_pem(&req.chain_pem).map_err(pki_error)?;
    let leaf = chain.leaf;
    let private_key: Option<EncryptedKey> = match &req.private_key_pem {
        None => None,
        Some(pem) => {
            let kek = state.kek.as_ref().ok_or_else(|| {
                ApiError::bad_request(
                    "no_key_encryption_key",
                    "this cluster was started without --kek-file and cannot store private keys",
                )
            })?;
            let key = parse_private_key_pem(pem)
                .map_err(|e| ApiError::bad_request("invalid_private_key", e.to_string()))?;
            if !key_matches_certificate(&key, &chain.leaf_der)
                .map_err(|e| ApiError::bad_request("invalid_private_key", e.to_string()))?
            {
                return Err(ApiError::bad_request(
                    "key_mismatch",
                    "the private key does not belong to the leaf certificate",
                ));
            }
            let sealed = certplane_pki::seal(kek, key.der(), leaf.fingerprint_sha256.as_bytes())
                .map_err(|e| ApiError::unavailable(format!("cannot seal the private key: {e}")))?;
            Some(EncryptedKey {
                v: sealed.v,
                algorithm: sealed.algorithm,
                kek_id: sealed.kek_id,
                wrapped_data_key: sealed.wrapped_data_key,
                sealed_key: sealed.sealed_key,
            })
        }
    };
    let details = CertificateDetails {
        fingerprint_sha256: leaf.fingerprint_sha256.clone(),
        subject: leaf.subject,
        common_name: leaf.common_name,
        issuer: leaf.issuer,
        serial: leaf.serial,
        sans: leaf.sans,
        not_before: Timestamp(leaf.not_before_ms),
        not_after: Timestamp(leaf.not_after_ms),
        key_algorithm: leaf.key_algorithm,
        key_bits: leaf.key_bits,
        signature_algorithm: leaf.signature_algorithm,
        is_ca: leaf.is_ca,
        self_signed: leaf.self_signed,
    };
    for name in details.names() {
        if name.contains('\0') {
            return Err(ApiError::bad_request(
                "invalid_certificate",
                "certificate names may not contain NUL",
            ));
        }
    }
    let command = Command::ImportCertificate(Box::new(ImportCertificate {
        id: record_id(&leaf.fingerprint_sha256),
        details,
        chain_pem: chain.chain_pem,
        owner: req.owner,
        zone,
        tags: req.tags,
        private_key,
    }));
    let hash = idem
        .as_ref()
        .map(|_| request_hash("POST /v1/certificates/import", &raw));
    let proposal =
        Proposal::new(Timestamp(now_ms()), principal, command).with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::CertificateImported { record, created } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(CertificateView::new(*record, now_ms()))))
        }
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// e.g. `30d`, `12h`: active certificates expiring within this long (expired ones included).
    pub expiring_within: Option<String>,
    pub owner: Option<String>,
    pub zone: Option<String>,
    pub issuer: Option<String>,
    /// Substring of the CN or a SAN (3 characters or more).
    pub name: Option<String>,
    /// `active`, `retired` or `expired`.
    #[param(value_type = Option<String>)]
    pub status: Option<StatusFilter>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub consistency: Option<String>,
}

/// `30d`, `12h`, `45m`, `90s` or a plain number of seconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

pub async fn read_barrier(state: &AppState, consistency: Consistency) -> ApiResult<()> {
    if consistency == Consistency::Linearizable {
        state.node.read_barrier().await?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/certificates", tag = "certificates", security(("bearer" = [])), params(ListQuery), responses((status = 200, description = "A page of certificates with `next_cursor`"), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<PageView<CertificateView>>> {
    let now = now_ms();
    let expiring_before = match &q.expiring_within {
        Some(d) => {
            let ms = parse_duration_ms(d).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    "expiring_within must look like 30d, 12h, 45m or 90s",
                )
            })?;
            Some(Timestamp(now.saturating_add(ms)))
        }
        None => None,
    };
    let zone = q.zone.as_deref().map(normalize_zone).transpose()?;
    let filter = CertificateFilter {
        expiring_before,
        owner: q.owner,
        zone,
        issuer: q.issuer,
        name: q.name,
        status: q.status,
    };
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let limit = q.limit.unwrap_or(100);
    let cursor = q.cursor;
    let page = blocking(move || {
        list_certificates(&view, &filter, cursor.as_deref(), limit, Timestamp(now)).map_err(|e| {
            match e {
                certplane_core::query::QueryError::InvalidArgument(m) => {
                    ApiError::bad_request("invalid_query", m)
                }
                certplane_core::query::QueryError::Core(e) => ApiError::unavailable(e.to_string()),
            }
        })
    })
    .await?;
    Ok(Json(PageView {
        items: page
            .items
            .into_iter()
            .filter(|r| principal.allows(Permission::InventoryRead, &r.zone))
            .map(|r| CertificateView::new(r, now))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

pub fn check_id(id: &str) -> ApiResult<()> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::not_found(format!(
            "no certificate with id {id:?}"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/certificates/{id}", tag = "certificates", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, description = "The certificate", body = CertificateView), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn get_one(
    State(state): State<AppState>,
    Auth(principal): Auth,
    consistency: Consistency,
    Path(id): Path<String>,
) -> ApiResult<Json<CertificateView>> {
    check_id(&id)?;
    read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let lookup = id.clone();
    let record = blocking(move || {
        certplane_core::apply::get_certificate(&view, &lookup)
            .map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no certificate with id {id}")))?;
    require_in(&principal, Permission::InventoryRead, &record.zone)?;
    Ok(Json(CertificateView::new(record, now_ms())))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetireQuery {
    pub reason: Option<String>,
}

#[utoipa::path(delete, path = "/v1/certificates/{id}", tag = "certificates", security(("bearer" = [])), params(("id" = String, Path), ("reason" = Option<String>, Query)), responses((status = 200, description = "Retired (history kept)", body = CertificateView), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 400, description = "Invalid request", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn retire(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RetireQuery>,
) -> ApiResult<Json<CertificateView>> {
    check_id(&id)?;
    if let Some(reason) = &q.reason {
        check_text("reason", reason, 512)?;
    }
    let hash = idem.as_ref().map(|_| {
        request_hash(
            &format!("DELETE /v1/certificates/{id}"),
            q.reason.as_deref().unwrap_or("").as_bytes(),
        )
    });
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::RetireCertificate {
            id,
            reason: q.reason,
        },
    )
    .with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::CertificateRetired { record } => Ok(Json(CertificateView::new(*record, now_ms()))),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

async fn load_certificate(state: &AppState, id: &str) -> ApiResult<CertificateRecord> {
    check_id(id)?;
    let view = state.node.view();
    let lookup = id.to_string();
    blocking(move || {
        certplane_core::apply::get_certificate(&view, &lookup)
            .map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no certificate with id {id}")))
}

/// What a renewal may change; everything else is copied from the certificate being renewed.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub validity: Option<certplane_core::policy::Span>,
    /// A new key spec; default: a fresh key of the same type (or the same CSR, for CSR requests).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub key: Option<certplane_core::request::KeySpec>,
    /// A new CSR for the renewal (the requester rotates its own key); names still come from the
    /// certificate being renewed.
    #[serde(default)]
    pub csr_pem: Option<String>,
}

fn key_spec_like(details: &CertificateDetails) -> certplane_core::request::KeySpec {
    use certplane_core::request::KeySpec;
    match (details.key_algorithm.as_str(), details.key_bits) {
        ("EC", 384) => KeySpec::EcdsaP384,
        ("EC", _) => KeySpec::EcdsaP256,
        ("Ed25519", _) => KeySpec::Ed25519,
        ("RSA" | "RSA-PSS", bits) if bits > 3072 => KeySpec::Rsa { bits: 4096 },
        ("RSA" | "RSA-PSS", bits) if bits > 2048 => KeySpec::Rsa { bits: 3072 },
        ("RSA" | "RSA-PSS", _) => KeySpec::Rsa { bits: 2048 },
        _ => KeySpec::EcdsaP256,
    }
}

#[utoipa::path(post, path = "/v1/certificates/{id}/renew", tag = "certificates", security(("bearer" = [])), params(("id" = String, Path), super::requests::SubmitQuery, ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key renew once")), request_body = Option<RenewBody>, responses((status = 201, description = "The renewal request (issued, failed or pending approval); the old certificate stays, linked as superseded", body = super::requests::RequestView), (status = 202, description = "Approved; issuance still running", body = super::requests::RequestView), (status = 422, description = "The renewal breaks the current policy", body = ErrorResponse), (status = 409, description = "Already renewed", body = ErrorResponse), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn renew(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<super::requests::SubmitQuery>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<super::requests::RequestView>)> {
    let renew: RenewBody = if body.iter().all(u8::is_ascii_whitespace) {
        RenewBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not a renewal: {e}"))
        })?
    };
    read_barrier(&state, Consistency::Linearizable).await?;
    let record = load_certificate(&state, &id).await?;
    // Start from the original request when certplane issued the certificate, else from the
    // certificate itself (an imported certificate is renewed through a certplane issuer).
    let original = match &record.issuance {
        Some(link) => {
            let view = state.node.view();
            certplane_core::apply::get_request(&view, &link.request_id)
                .map_err(|e| ApiError::unavailable(e.to_string()))?
        }
        None => None,
    };
    let mut req = super::requests::RequestBody {
        zone: None,
        common_name: record.details.common_name.clone(),
        sans: record.details.sans.clone(),
        csr_pem: None,
        key: Some(key_spec_like(&record.details)),
        validity: renew.validity,
        issuer: None,
        owner: Some(record.owner.clone()).filter(|o| !o.is_empty()),
        tags: record.tags.clone(),
        destinations: None,
    };
    if let Some(original) = original {
        req.common_name = original.spec.common_name.clone();
        req.sans = original.spec.sans.iter().map(|s| s.to_string()).collect();
        req.issuer = Some(original.issuer.clone());
        if renew.validity.is_none() {
            req.validity = Some(original.spec.validity);
        }
        match original.spec.key {
            certplane_core::request::KeySource::Csr { csr_pem } => {
                req.key = None;
                req.csr_pem = Some(csr_pem);
            }
            certplane_core::request::KeySource::Generate { spec } => req.key = Some(spec),
        }
    }
    match (renew.key, renew.csr_pem) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                "send either csr_pem or key for the renewal, not both",
            ))
        }
        (Some(key), None) => {
            req.csr_pem = None;
            req.key = Some(key);
        }
        (None, Some(csr)) => {
            req.key = None;
            req.csr_pem = Some(csr);
        }
        (None, None) => {}
    }
    let zone = normalize_zone(&record.zone)?;
    let hash = idem
        .as_ref()
        .map(|_| request_hash(&format!("POST /v1/certificates/{id}/renew"), &body));
    let intake = super::requests::intake(&state, zone, req, Some(id.clone()))?;
    super::requests::submit(
        &state,
        principal,
        intake,
        idem,
        hash,
        super::requests::wait_of(&q),
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// RFC 5280 reason: unspecified, key_compromise, ca_compromise, affiliation_changed, superseded,
    /// cessation_of_operation, certificate_hold, privilege_withdrawn, aa_compromise (camelCase works too).
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/certificates/{id}/revoke", tag = "certificates", security(("bearer" = [])), params(("id" = String, Path)), request_body = RevokeBody, responses((status = 200, description = "Revoked; the issuer's CRL lists it", body = CertificateView), (status = 409, description = "Not issued by a certplane issuer", body = ErrorResponse), (status = 404, description = "Unknown id", body = ErrorResponse), (status = 400, description = "Unknown reason", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader; retry", body = ErrorResponse)))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(principal): Auth,
    IdempotencyKey(idem): IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body, raw): ApiJson<RevokeBody>,
) -> ApiResult<Json<CertificateView>> {
    check_id(&id)?;
    let reason =
        certplane_core::certificate::RevocationReason::parse(&body.reason).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_argument",
                format!(
                    "unknown revocation reason {:?}; one of: {}",
                    body.reason,
                    certplane_core::certificate::RevocationReason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let hash = idem
        .as_ref()
        .map(|_| request_hash(&format!("POST /v1/certificates/{id}/revoke"), &raw));
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::RevokeCertificate { id, reason },
    )
    .with_idempotency(idem, hash);
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::CertificateRevoked { record } => Ok(Json(CertificateView::new(*record, now_ms()))),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PrivateKeyView {
    pub id: String,
    /// Unencrypted PKCS#8 PEM. Handle it as a secret.
    pub private_key_pem: String,
}

#[utoipa::path(get, path = "/v1/certificates/{id}/private-key", tag = "certificates", security(("bearer" = [])), params(("id" = String, Path)), responses((status = 200, description = "The private key (audited as certificate.export_key before it is returned)", body = PrivateKeyView), (status = 403, description = "Not the zone's owner or an admin", body = ErrorResponse), (status = 404, description = "Unknown id, or certplane holds no key for it", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader, or this node has no key-encryption key", body = ErrorResponse)))]
pub async fn private_key(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<(axum::http::HeaderMap, Json<PrivateKeyView>)> {
    check_id(&id)?;
    let kek = state.kek.clone().ok_or_else(|| {
        ApiError::unavailable(
            "this node has no key-encryption key (--kek-file) to open private keys",
        )
    })?;
    // The export is a replicated, audited command: no key leaves without a record of who took it.
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::ExportPrivateKey { id: id.clone() },
    );
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::KeyExportAllowed { .. } => {}
        other => {
            return Err(ApiError::unavailable(format!(
                "unexpected outcome {other:?}"
            )))
        }
    }
    // The export committed on the leader; this node reads the record once it has caught up.
    state.node.read_barrier().await?;
    let record = load_certificate(&state, &id).await?;
    let sealed = record
        .private_key
        .as_ref()
        .ok_or_else(|| ApiError::not_found(format!("certplane holds no private key for {id}")))?;
    let key = certplane_pki::open(
        &kek,
        &crate::workers::issuance::to_sealed(sealed),
        record.details.fingerprint_sha256.as_bytes(),
    )
    .map_err(|e| ApiError::unavailable(format!("cannot open the private key: {e}")))?;
    let pem = certplane_pki::inspect::private_key_from_der(&key)
        .map_err(|e| ApiError::unavailable(format!("cannot read the stored key: {e}")))?
        .to_pem()
        .to_string();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok((
        headers,
        Json(PrivateKeyView {
            id,
            private_key_pem: pem,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("30d"), Some(30 * 86_400_000));
        assert_eq!(parse_duration_ms("90"), Some(90_000));
        assert_eq!(parse_duration_ms("3x"), None);
        assert_eq!(parse_duration_ms("d"), None);
        assert_eq!(parse_duration_ms("99999999999999999999d"), None);
    }

    #[test]
    fn zones_are_paths() {
        assert_eq!(normalize_zone("payments/prod").unwrap(), "/payments/prod");
        assert!(normalize_zone("Payments").is_err());
        assert!(normalize_zone("a//b").is_err());
    }
}

//! `/v1/certificates`: import, list, get, retire.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use certplane_core::certificate::CertificateDetails;
use certplane_core::query::{list_certificates, CertificateFilter, StatusFilter};
use certplane_core::{
    Applied, Command, EncryptedKey, ImportCertificate, Principal, Proposal, Role, Timestamp,
};
use certplane_pki::inspect::{key_matches_certificate, parse_chain_pem, parse_private_key_pem};
use serde::Deserialize;

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

fn check_text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.is_empty() || value.len() > max || value.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            format!("{field} must be 1 to {max} characters without control characters"),
        ));
    }
    Ok(())
}

/// Zone paths: `/`-separated segments of lowercase letters, digits, `-` and `_`.
pub fn check_zone(zone: &str) -> ApiResult<()> {
    let valid = !zone.is_empty()
        && zone.len() <= 256
        && zone.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "zone must be a path like `payments/prod`: segments of a-z, 0-9, '-', '_' separated by '/'",
        ));
    }
    Ok(())
}

fn require_any(principal: &Principal, roles: &[Role]) -> ApiResult<()> {
    if roles.iter().any(|r| principal.has_role(*r)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "principal {} lacks a role for this operation",
            principal.id
        )))
    }
}

pub fn record_id(fingerprint: &str) -> String {
    format!("crt_{}", &fingerprint[..fingerprint.len().min(32)])
}

fn pki_error(e: certplane_pki::PkiError) -> ApiError {
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
    require_any(&principal, &[Role::Requester, Role::ZoneOwner])?;
    check_text("owner", &req.owner, 128)?;
    check_zone(&req.zone)?;
    if req.tags.len() > 64 {
        return Err(ApiError::bad_request("invalid_argument", "at most 64 tags"));
    }
    for (k, v) in &req.tags {
        check_text("tag name", k, 128)?;
        if v.len() > 512 || v.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_request(
                "invalid_argument",
                format!("tag {k}: values are at most 512 characters"),
            ));
        }
    }
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
        zone: req.zone,
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
    Auth(_principal): Auth,
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
    if let Some(zone) = &q.zone {
        check_zone(zone)?;
    }
    let filter = CertificateFilter {
        expiring_before,
        owner: q.owner,
        zone: q.zone,
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
            .map(|r| CertificateView::new(r, now))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

fn check_id(id: &str) -> ApiResult<()> {
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
    Auth(_principal): Auth,
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
    require_any(&principal, &[Role::ZoneOwner])?;
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
        assert!(check_zone("payments/prod").is_ok());
        assert!(check_zone("Payments").is_err());
        assert!(check_zone("a//b").is_err());
        assert!(check_zone("").is_err());
    }
}

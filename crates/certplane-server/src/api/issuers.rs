//! `/v1/issuers`: certplane's CAs (the built-in CA made at initialisation, and imported internal CAs)
//! and their CRLs.
//!
//! CRLs are signed on demand by whichever node answers, from the replicated revocation list. Their
//! `thisUpdate` is the later of the newest revocation and the start of the current hour, and their
//! CRL number is that time in seconds: every node publishes the same number for the same content, a
//! revocation always yields a newer CRL, and a CRL is never older than an hour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use certplane_core::issuer::{IssuerKind, IssuerRecord, RevocationRecord};
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{Applied, Command, Principal, Proposal, Timestamp};
use serde::{Deserialize, Serialize};

use super::certificates::pki_error;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, Auth, Consistency};
use super::openapi::ErrorResponse;
use super::view::rfc3339;
use super::{blocking, now_ms, AppState};
use crate::workers::issuance::from_sealed;

const HOUR_MS: i64 = 3_600_000;
/// CRLs say when to fetch the next one: a day after their thisUpdate.
const CRL_NEXT_UPDATE_MS: i64 = 24 * HOUR_MS;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuerView {
    pub name: String,
    /// `builtin` (certplane signs with its own CA key).
    pub kind: String,
    pub subject: String,
    pub ca_cert_pem: String,
    /// The issuing CA first, up to its root.
    pub chain_pem: String,
    pub key_algorithm: String,
    pub not_after: String,
    pub imported: bool,
    pub created_at: String,
    pub created_by: String,
    pub issued_count: u64,
    pub revoked_count: u64,
    /// Set for an `acm-pca` issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acm_pca: Option<AcmPcaView>,
}

/// Where an ACM PCA issuer's CA is and how certplane asks it to sign.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcmPcaView {
    pub ca_arn: String,
    pub region: String,
    pub role_arn: Option<String>,
    pub template_arn: String,
    pub signing_algorithm: String,
    /// `csr` or `acm-native`.
    pub mode: String,
}

impl From<IssuerRecord> for IssuerView {
    fn from(r: IssuerRecord) -> Self {
        IssuerView {
            name: r.name,
            kind: r.kind.as_str().into(),
            acm_pca: r.acm_pca.map(|p| AcmPcaView {
                template_arn: p
                    .template_arn
                    .clone()
                    .unwrap_or_else(|| certplane_aws::pca::default_template_arn(&p.ca_arn)),
                ca_arn: p.ca_arn,
                region: p.region,
                role_arn: p.role_arn,
                signing_algorithm: p.signing_algorithm,
                mode: p.mode.as_str().into(),
            }),
            subject: r.subject,
            ca_cert_pem: r.ca_cert_pem,
            chain_pem: r.chain_pem,
            key_algorithm: r.key_algorithm,
            not_after: rfc3339(r.not_after),
            imported: r.imported,
            created_at: rfc3339(r.created_at),
            created_by: r.created_by,
            issued_count: r.issued_count,
            revoked_count: r.revoked_count,
        }
    }
}

pub fn check_issuer_name(name: &str) -> ApiResult<()> {
    if certplane_core::policy::is_issuer_name(name) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no issuer named {name:?}")))
    }
}

/// Build the replicated record for a CA whose key this node holds in the clear, sealing the key.
pub fn issuer_record(
    name: &str,
    ca: &certplane_pki::CaCertificate,
    chain_above: &[&certplane_pki::CaCertificate],
    extra_chain_pem: &str,
    kek: &certplane_pki::Kek,
    imported: bool,
    actor: &Principal,
) -> ApiResult<IssuerRecord> {
    let sealed = certplane_pki::seal(kek, &ca.key_pkcs8, IssuerRecord::key_aad(name).as_bytes())
        .map_err(|e| ApiError::unavailable(format!("cannot seal the CA key: {e}")))?;
    let mut chain = certplane_pki::chain_pem(&ca.cert_pem, chain_above);
    if !extra_chain_pem.trim().is_empty() {
        chain.push_str(extra_chain_pem.trim_end());
        chain.push('\n');
    }
    Ok(IssuerRecord {
        name: name.to_string(),
        kind: IssuerKind::Builtin,
        subject: ca.subject.clone(),
        ca_cert_pem: ca.cert_pem.clone(),
        chain_pem: chain,
        key: Some(from_sealed(sealed)),
        key_algorithm: ca.key.algorithm.to_string(),
        not_after: Timestamp(ca.not_after_ms),
        imported,
        created_at: Timestamp(now_ms()),
        created_by: actor.id.clone(),
        issued_count: 0,
        revoked_count: 0,
        crl_number: 0,
        revision: 0,
        acm_pca: None,
    })
}

#[utoipa::path(get, path = "/v1/issuers", tag = "issuers", security(("bearer" = [])), responses((status = 200, description = "Every issuer (never a key)", body = Vec<IssuerView>), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
) -> ApiResult<Json<Vec<IssuerView>>> {
    super::certificates::read_barrier(&state, consistency).await?;
    let view = state.node.view();
    let issuers = blocking(move || {
        let rows = view
            .scan(Keyspace::Issuers, b"", b"", 1000)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| {
                certplane_core::keys::decode_record::<IssuerRecord>("issuer", &v).ok()
            })
            .map(IssuerView::from)
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(issuers))
}

async fn load_issuer(state: &AppState, name: &str) -> ApiResult<IssuerRecord> {
    check_issuer_name(name)?;
    let view = state.node.view();
    let lookup = name.to_string();
    blocking(move || {
        certplane_core::apply::get_issuer(&view, &lookup)
            .map_err(|e| ApiError::unavailable(e.to_string()))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no issuer named {name}")))
}

#[utoipa::path(get, path = "/v1/issuers/{name}", tag = "issuers", security(("bearer" = [])), params(("name" = String, Path)), responses((status = 200, description = "The issuer", body = IssuerView), (status = 404, description = "Unknown issuer", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn get_one(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
    Path(name): Path<String>,
) -> ApiResult<Json<IssuerView>> {
    super::certificates::read_barrier(&state, consistency).await?;
    Ok(Json(IssuerView::from(load_issuer(&state, &name).await?)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportIssuerBody {
    /// 1-64 of a-z, 0-9, '-', '_'.
    pub name: String,
    /// The CA certificate, optionally followed by its issuers up to the root.
    pub cert_pem: String,
    /// The CA's unencrypted private key (PKCS#8, PKCS#1 or SEC1); sealed before it is stored.
    pub key_pem: String,
}

#[utoipa::path(post, path = "/v1/issuers", tag = "issuers", security(("bearer" = [])), request_body = ImportIssuerBody, responses((status = 201, description = "Imported", body = IssuerView), (status = 409, description = "An issuer with that name exists", body = ErrorResponse), (status = 400, description = "Not a usable CA certificate and key", body = ErrorResponse), (status = 403, description = "Admins only", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader, or no key-encryption key on this node", body = ErrorResponse)))]
pub async fn import(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body, _): ApiJson<ImportIssuerBody>,
) -> ApiResult<(StatusCode, Json<IssuerView>)> {
    check_issuer_name(&body.name).map_err(|_| {
        ApiError::bad_request(
            "invalid_argument",
            "issuer names are 1-64 of a-z, 0-9, '-', '_'",
        )
    })?;
    let kek = state.kek.clone().ok_or_else(|| {
        ApiError::bad_request(
            "no_key_encryption_key",
            "this node was started without --kek-file and cannot store a CA key",
        )
    })?;
    let ca =
        certplane_pki::import_ca(&body.cert_pem, &body.key_pem, now_ms()).map_err(pki_error)?;
    // The chain above the CA, as uploaded (the links were checked by import_ca).
    let rest: String = certplane_pki::parse_chain_pem(&body.cert_pem)
        .map(|c| {
            c.chain_pem
                .split_inclusive("-----END CERTIFICATE-----\n")
                .skip(1)
                .collect()
        })
        .unwrap_or_default();
    let record = issuer_record(&body.name, &ca, &[], &rest, &kek, true, &principal)?;
    let view = IssuerView::from(record.clone());
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::CreateIssuer(Box::new(record)),
    );
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        // The record as committed (this node may not have applied it yet).
        Applied::IssuerCreated { .. } => Ok((StatusCode::CREATED, Json(view))),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcmPcaIssuerBody {
    /// 1-64 of a-z, 0-9, '-', '_'.
    pub name: String,
    /// `arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>`.
    pub ca_arn: String,
    /// Default: the region in the CA's ARN.
    pub region: Option<String>,
    /// A role to assume for the CA's account.
    pub role_arn: Option<String>,
    /// `csr` (ACM PCA IssueCertificate with the requester's CSR) or `acm-native` (ACM
    /// RequestCertificate: the key stays in ACM, and ACM renews).
    pub mode: String,
    /// Default: the end-entity template that takes names from the request, never the CSR.
    pub template_arn: Option<String>,
    /// Default: the CA's own signing algorithm.
    pub signing_algorithm: Option<String>,
}

fn pca_arn_region(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "acm-pca"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("certificate-authority/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    ok.then_some(parts[3])
}

const SIGNING_ALGORITHMS: [&str; 7] = [
    "SHA256WITHECDSA",
    "SHA384WITHECDSA",
    "SHA512WITHECDSA",
    "SHA256WITHRSA",
    "SHA384WITHRSA",
    "SHA512WITHRSA",
    "SM3WITHSM2",
];

#[utoipa::path(post, path = "/v1/aws/pca-issuers", tag = "issuers", security(("bearer" = [])), request_body = AcmPcaIssuerBody, responses((status = 201, description = "Registered: the CA was found ACTIVE and its certificate read", body = IssuerView), (status = 409, description = "An issuer with that name exists", body = ErrorResponse), (status = 400, description = "A malformed ARN, mode or algorithm, or a CA that is not active", body = ErrorResponse), (status = 403, description = "Admins only", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader, or AWS could not be reached", body = ErrorResponse)))]
pub async fn create_acm_pca(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body, _): ApiJson<AcmPcaIssuerBody>,
) -> ApiResult<(StatusCode, Json<IssuerView>)> {
    use certplane_core::issuer::{AcmPcaSettings, PcaMode};
    let invalid = |m: String| ApiError::bad_request("invalid_argument", m);
    check_issuer_name(&body.name)
        .map_err(|_| invalid("issuer names are 1-64 of a-z, 0-9, '-', '_'".into()))?;
    let arn_region = pca_arn_region(&body.ca_arn).ok_or_else(|| {
        invalid(format!(
            "{:?} is not an ACM PCA certificate authority ARN",
            body.ca_arn
        ))
    })?;
    let region = body
        .region
        .clone()
        .unwrap_or_else(|| arn_region.to_string());
    if region != arn_region {
        return Err(invalid(format!(
            "the CA's ARN is in {arn_region}, not {region}"
        )));
    }
    let mode = match body.mode.as_str() {
        "csr" => PcaMode::Csr,
        "acm-native" => PcaMode::AcmNative,
        other => {
            return Err(invalid(format!(
                "mode must be csr or acm-native, not {other:?}"
            )))
        }
    };
    if let Some(role) = &body.role_arn {
        if !role.starts_with("arn:") || !role.contains(":iam::") || !role.contains(":role/") {
            return Err(invalid(format!("{role:?} is not an IAM role ARN")));
        }
    }
    if let Some(t) = &body.template_arn {
        if !t.starts_with("arn:") || !t.contains(":acm-pca:::template/") {
            return Err(invalid(format!("{t:?} is not an ACM PCA template ARN")));
        }
    }
    if let Some(a) = &body.signing_algorithm {
        if !SIGNING_ALGORITHMS.contains(&a.as_str()) {
            return Err(invalid(format!(
                "signing_algorithm must be one of {SIGNING_ALGORITHMS:?}"
            )));
        }
    }
    let mut settings = AcmPcaSettings {
        ca_arn: body.ca_arn.clone(),
        region,
        role_arn: body.role_arn.clone(),
        template_arn: body.template_arn.clone(),
        signing_algorithm: body.signing_algorithm.clone().unwrap_or_default(),
        mode,
    };
    // Read the CA once, here: it must exist and be active, and its certificate is what issued
    // certificates are checked against.
    let clients = crate::workers::pca::PcaClients::new(state.aws_endpoint_url.clone());
    let driver = clients.driver(&settings).await;
    let ca = driver.describe_ca(&settings.ca_arn).await.map_err(|e| {
        if e.is_retryable() {
            ApiError::unavailable(e.to_string())
        } else {
            invalid(e.to_string())
        }
    })?;
    if ca.status != "ACTIVE" {
        return Err(invalid(format!(
            "certificate authority {} is {}, not ACTIVE",
            settings.ca_arn, ca.status
        )));
    }
    if settings.signing_algorithm.is_empty() {
        settings.signing_algorithm = ca.signing_algorithm.clone();
    }
    let parsed = certplane_pki::parse_chain_pem(&format!(
        "{}\n{}",
        ca.certificate_pem.trim_end(),
        ca.chain_pem
    ))
    .map_err(|e| invalid(format!("the CA's certificate is not usable: {e}")))?;
    let record = IssuerRecord {
        name: body.name.clone(),
        kind: IssuerKind::AcmPca,
        subject: parsed.leaf.subject.clone(),
        ca_cert_pem: certplane_pki::parse_chain_pem(&ca.certificate_pem)
            .map(|c| c.chain_pem)
            .unwrap_or_else(|_| ca.certificate_pem.clone()),
        chain_pem: parsed.chain_pem,
        key: None,
        key_algorithm: ca.key_algorithm.clone(),
        not_after: Timestamp(parsed.leaf.not_after_ms),
        imported: true,
        created_at: Timestamp(now_ms()),
        created_by: principal.id.clone(),
        issued_count: 0,
        revoked_count: 0,
        crl_number: 0,
        revision: 0,
        acm_pca: Some(settings),
    };
    let view = IssuerView::from(record.clone());
    let proposal = Proposal::new(
        Timestamp(now_ms()),
        principal,
        Command::CreateIssuer(Box::new(record)),
    );
    let outcome = state.node.write(proposal).await?;
    match outcome.result.map_err(ApiError::from)? {
        Applied::IssuerCreated { .. } => Ok((StatusCode::CREATED, Json(view))),
        other => Err(ApiError::unavailable(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedSerialView {
    /// Lowercase hex, as in the certificate view.
    pub serial: String,
    pub certificate_id: String,
    pub request_id: String,
    pub issued_at: String,
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IssuedQuery {
    pub limit: Option<usize>,
    /// The last serial of the previous page.
    pub cursor: Option<String>,
    pub consistency: Option<String>,
}

#[utoipa::path(get, path = "/v1/issuers/{name}/issued", tag = "issuers", security(("bearer" = [])), params(("name" = String, Path), IssuedQuery), responses((status = 200, description = "The issuer's record of every serial it issued, in serial order, with `next_cursor`"), (status = 404, description = "Unknown issuer", body = ErrorResponse), (status = 401, description = "Missing or invalid token", body = ErrorResponse), (status = 503, description = "No leader or node unavailable; retry", body = ErrorResponse)))]
pub async fn issued(
    State(state): State<AppState>,
    Auth(_p): Auth,
    consistency: Consistency,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<IssuedQuery>,
) -> ApiResult<Json<super::view::PageView<IssuedSerialView>>> {
    super::certificates::read_barrier(&state, consistency).await?;
    let issuer = load_issuer(&state, &name).await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    if let Some(c) = &q.cursor {
        if c.len() > 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request("invalid_query", "bad cursor"));
        }
    }
    let view = state.node.view();
    let cursor = q.cursor.clone();
    blocking(move || {
        let prefix = certplane_core::keys::index_key(&issuer.name, "");
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut from = prefix.clone();
        if let Some(c) = &cursor {
            from.extend_from_slice(c.as_bytes());
            from.push(0);
        }
        let rows = view
            .scan(Keyspace::IssuedSerials, &from, &end, limit + 1)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        for (key, value) in rows.iter().take(limit) {
            let record =
                certplane_core::keys::decode_record::<certplane_core::issuer::IssuedSerial>(
                    "issued serial",
                    value,
                )
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            items.push(IssuedSerialView {
                serial: String::from_utf8_lossy(&key[prefix.len()..]).to_string(),
                certificate_id: record.certificate_id,
                request_id: record.request_id,
                issued_at: rfc3339(record.issued_at),
            });
        }
        let next_cursor = (rows.len() > limit)
            .then(|| items.last().map(|i| i.serial.clone()))
            .flatten();
        Ok(Json(super::view::PageView { items, next_cursor }))
    })
    .await
}

/// A signed CRL and its number.
type SignedCrl = (u64, Arc<Vec<u8>>);

/// Signed CRLs by issuer, so a busy endpoint signs once per change or hour.
#[derive(Default)]
pub struct CrlCache {
    crls: Mutex<HashMap<String, SignedCrl>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CrlQuery {
    /// `der` (default) or `pem`.
    pub format: Option<String>,
    pub consistency: Option<String>,
}

fn revocations(view: &impl StateRead, issuer: &str) -> ApiResult<Vec<RevocationRecord>> {
    let prefix = certplane_core::keys::index_key(issuer, "");
    let mut end = prefix.clone();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut out = Vec::new();
    let mut from = prefix.clone();
    loop {
        let batch = view
            .scan(Keyspace::Revocations, &from, &end, 1024)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        if batch.is_empty() {
            return Ok(out);
        }
        for (_, v) in &batch {
            let record = certplane_core::keys::decode_record::<RevocationRecord>("revocation", v)
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            out.push(record);
        }
        from = batch.last().map(|(k, _)| k.clone()).unwrap_or_default();
        from.push(0);
    }
}

#[utoipa::path(get, path = "/v1/issuers/{name}/crl", tag = "issuers", params(("name" = String, Path), ("format" = Option<String>, Query, description = "`der` (default, application/pkix-crl) or `pem`"), ("consistency" = Option<String>, Query, description = "`stale` serves this node's state without asking the leader")), responses((status = 200, description = "The issuer's current CRL"), (status = 404, description = "Unknown issuer", body = ErrorResponse), (status = 503, description = "This node cannot sign (no key-encryption key) or no leader", body = ErrorResponse)))]
pub async fn crl(
    State(state): State<AppState>,
    consistency: Consistency,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<CrlQuery>,
) -> ApiResult<Response> {
    let pem = match q.format.as_deref() {
        None | Some("der") => false,
        Some("pem") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format must be der or pem, not {other:?}"),
            ))
        }
    };
    // CRLs are public (relying parties fetch them without a token). Read after a read barrier like
    // every other read, so a revocation acknowledged anywhere is on the next CRL fetched anywhere;
    // `?consistency=stale` serves the local state.
    super::certificates::read_barrier(&state, consistency).await?;
    let issuer = load_issuer(&state, &name).await?;
    if issuer.acm_pca.is_some() {
        return Err(ApiError::conflict(
            "not_supported",
            format!(
                "issuer {name} is an ACM Private CA: AWS publishes its CRL (see the CA's revocation configuration)"
            ),
        ));
    }
    let view = state.node.view();
    let lookup = issuer.name.clone();
    let revoked = blocking(move || revocations(&view, &lookup)).await?;
    let newest = revoked
        .iter()
        .map(|r| r.revoked_at.millis())
        .max()
        .unwrap_or(0);
    let now = now_ms();
    let this_update = newest.max(now - now.rem_euclid(HOUR_MS));
    let number = (this_update / 1000) as u64;
    let cached = state.crls.crls.lock().ok().and_then(|m| {
        m.get(&issuer.name)
            .filter(|(n, _)| *n == number)
            .map(|(_, d)| d.clone())
    });
    let der = match cached {
        Some(der) => der,
        None => {
            let signers = state.signers.clone();
            let kek = state.kek.clone();
            let issuer_for_sign = issuer.clone();
            let der = blocking(move || {
                let signer = signers
                    .get(&issuer_for_sign, kek.as_deref())
                    .map_err(ApiError::unavailable)?;
                let entries: Vec<certplane_pki::RevokedEntry> = revoked
                    .iter()
                    .map(|r| certplane_pki::RevokedEntry {
                        serial_hex: r.serial.clone(),
                        revoked_at_ms: r.revoked_at.millis(),
                        reason: crate::workers::issuance::pki_reason(r.reason),
                    })
                    .collect();
                signer
                    .crl(
                        &entries,
                        number,
                        this_update,
                        this_update + CRL_NEXT_UPDATE_MS,
                    )
                    .map_err(|e| ApiError::unavailable(format!("cannot sign the CRL: {e}")))
            })
            .await?;
            let der = Arc::new(der);
            if let Ok(mut m) = state.crls.crls.lock() {
                m.insert(issuer.name.clone(), (number, der.clone()));
            }
            der
        }
    };
    let (content_type, body) = if pem {
        (
            "application/x-pem-file",
            certplane_pki::crl_pem(&der).into_bytes(),
        )
    } else {
        ("application/pkix-crl", der.to_vec())
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

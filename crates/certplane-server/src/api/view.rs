//! JSON shapes of API responses (wire types, converted from core types in one place).

use std::collections::BTreeMap;

use certplane_core::{CertificateRecord, CertificateStatus, Timestamp};
use serde::Serialize;

pub fn rfc3339(t: Timestamp) -> String {
    let ms = t.millis();
    if ms < 0 {
        return format!("{ms}ms");
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// A certificate as clients see it: never the private key, only whether one is held.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    pub id: String,
    pub fingerprint_sha256: String,
    pub subject: String,
    pub common_name: Option<String>,
    pub issuer: String,
    pub serial: String,
    pub sans: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    pub days_to_expiry: i64,
    pub expired: bool,
    pub key_algorithm: String,
    pub key_bits: u32,
    pub signature_algorithm: String,
    pub is_ca: bool,
    pub self_signed: bool,
    pub owner: String,
    pub zone: String,
    pub tags: BTreeMap<String, String>,
    #[schema(value_type = String)]
    pub status: CertificateStatus,
    pub has_private_key: bool,
    pub chain_pem: String,
    pub created_at: String,
    pub updated_at: String,
    pub retired_at: Option<String>,
    pub generation: u64,
    pub revision: u64,
    /// The request that asked for it, when a certplane issuer signed it.
    pub request_id: Option<String>,
    /// The certplane issuer that signed it.
    pub issued_by: Option<String>,
    pub supersedes: Option<String>,
    pub superseded_by: Option<String>,
    pub revoked_at: Option<String>,
    pub revocation_reason: Option<String>,
    /// Set when AWS Private CA issued it: where it lives in AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsIssuedView>,
    /// One entry per destination: where the certificate goes and whether ACM serves it.
    pub deployments: Vec<DeploymentView>,
    /// The automatic renewal: when it is due, the request running it, the last error.
    pub renewal: Option<RenewalView>,
}

/// Where an AWS-issued certificate lives, and whether its revocation reached the CA.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AwsIssuedView {
    pub ca_arn: String,
    /// The ACM certificate ARN (`acm-native`) or the ACM PCA certificate ARN (`csr`).
    pub certificate_arn: String,
    pub mode: String,
    /// `acm-native`: the private key exists only in ACM.
    pub key_in_acm: bool,
    pub revocation_pending: bool,
    pub revocation_request_id: Option<String>,
    /// `acm-native`: ACM's status and managed-renewal status at the last check, and when.
    pub acm_status: Option<String>,
    pub renewal_status: Option<String>,
    pub checked_at: Option<String>,
    pub next_check_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeploymentView {
    #[serde(rename = "type")]
    pub kind: String,
    pub region: String,
    pub role_arn: Option<String>,
    pub arn: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// pending, deployed, failed, cancelled
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: String,
    pub deployed_at: Option<String>,
    pub observed_serial: Option<String>,
    pub last_error: Option<String>,
}

impl DeploymentView {
    pub fn new(d: &certplane_core::deploy::Deployment) -> Self {
        DeploymentView {
            kind: "acm".into(),
            region: d.destination.region.clone(),
            role_arn: d.destination.role_arn.clone(),
            arn: d.arn.clone(),
            tags: d.destination.tags.clone(),
            state: d.state.as_str().into(),
            attempts: d.attempts,
            next_attempt_at: rfc3339(d.next_attempt_at),
            deployed_at: d.deployed_at.map(rfc3339),
            observed_serial: d.observed_serial.clone(),
            last_error: d.last_error.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenewalView {
    pub due_at: String,
    pub attempts: u32,
    pub request_id: Option<String>,
    pub last_error: Option<String>,
}

impl CertificateView {
    pub fn new(r: CertificateRecord, now_ms: i64) -> Self {
        let d = r.details;
        let remaining = d.not_after.millis() - now_ms;
        CertificateView {
            has_private_key: r.private_key.is_some(),
            id: r.id,
            fingerprint_sha256: d.fingerprint_sha256,
            subject: d.subject,
            common_name: d.common_name,
            issuer: d.issuer,
            serial: d.serial,
            sans: d.sans,
            not_before: rfc3339(d.not_before),
            not_after: rfc3339(d.not_after),
            days_to_expiry: remaining.div_euclid(86_400_000),
            expired: remaining < 0,
            key_algorithm: d.key_algorithm,
            key_bits: d.key_bits,
            signature_algorithm: d.signature_algorithm,
            is_ca: d.is_ca,
            self_signed: d.self_signed,
            owner: r.owner,
            zone: r.zone,
            tags: r.tags,
            status: r.status,
            chain_pem: r.chain_pem,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            retired_at: r.retired_at.map(rfc3339),
            generation: r.generation,
            revision: r.revision,
            request_id: r.issuance.as_ref().map(|l| l.request_id.clone()),
            aws: r
                .issuance
                .as_ref()
                .and_then(|l| l.aws.as_ref())
                .map(|a| AwsIssuedView {
                    ca_arn: a.ca_arn.clone(),
                    certificate_arn: a.certificate_arn.clone(),
                    mode: a.mode.as_str().to_string(),
                    key_in_acm: a.mode == certplane_core::issuer::PcaMode::AcmNative,
                    revocation_pending: a.revocation_pending,
                    revocation_request_id: a.revocation_request_id.clone(),
                    acm_status: a.acm_status.clone(),
                    renewal_status: a.renewal_status.clone(),
                    checked_at: a.checked_at.map(rfc3339),
                    next_check_at: a.next_check_at.map(rfc3339),
                }),
            issued_by: r.issuance.map(|l| l.issuer),
            supersedes: r.supersedes,
            superseded_by: r.superseded_by,
            revoked_at: r.revocation.as_ref().map(|v| rfc3339(v.at)),
            revocation_reason: r.revocation.map(|v| v.reason.as_str().to_string()),
            deployments: r.deployments.iter().map(DeploymentView::new).collect(),
            renewal: r.renewal.map(|s| RenewalView {
                due_at: rfc3339(s.due_at),
                attempts: s.attempts,
                request_id: s.request_id,
                last_error: s.last_error,
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

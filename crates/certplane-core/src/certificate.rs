//! The certificate inventory record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateStatus {
    /// In the inventory and managed.
    Active,
    /// Removed from management; the record and its history are kept.
    Retired,
    /// Revoked at its certplane issuer; listed on that issuer's CRL.
    Revoked,
}

impl CertificateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateStatus::Active => "active",
            CertificateStatus::Retired => "retired",
            CertificateStatus::Revoked => "revoked",
        }
    }
}

/// A private key sealed with AEAD under a per-record data key, itself wrapped by the cluster's
/// key-encryption key (KEK). The KEK never enters the log; only `kek_id` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedKey {
    /// Format version of the envelope.
    pub v: u16,
    pub algorithm: String,
    pub kek_id: String,
    /// Data key wrapped by the KEK: nonce || ciphertext, hex.
    pub wrapped_data_key: String,
    /// PKCS#8 key sealed by the data key: nonce || ciphertext, hex.
    pub sealed_key: String,
}

/// Facts read from the leaf certificate at intake; the state machine trusts them as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateDetails {
    /// Hex SHA-256 of the leaf's DER: the identity of the record.
    pub fingerprint_sha256: String,
    pub subject: String,
    pub common_name: Option<String>,
    pub issuer: String,
    /// Hex, colon-free, lowercase.
    pub serial: String,
    pub sans: Vec<String>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub key_algorithm: String,
    pub key_bits: u32,
    pub signature_algorithm: String,
    pub is_ca: bool,
    pub self_signed: bool,
}

impl CertificateDetails {
    /// Every DNS-like name on the certificate (CN and SANs), lowercased and de-duplicated.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .common_name
            .iter()
            .chain(self.sans.iter())
            .map(|n| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub id: String,
    #[serde(flatten)]
    pub details: CertificateDetails,
    /// Leaf first, then intermediates, PEM.
    pub chain_pem: String,
    pub owner: String,
    /// `/`-separated zone path, e.g. `payments/prod`.
    pub zone: String,
    pub tags: BTreeMap<String, String>,
    pub status: CertificateStatus,
    /// The sealed private key, if one was imported. Never serialised to API clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<EncryptedKey>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    /// Bumped on every change; later issues use it to reject stale writes.
    pub generation: u64,
    /// Log index of the last change.
    pub revision: u64,
    /// How the certificate came to be managed by certplane; absent on records written before issuance
    /// existed, which were all imports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuance: Option<IssuanceLink>,
    /// The certificate this one replaced (a renewal's predecessor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The renewal that replaced this certificate; the record stays for history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// Expiry notices due at the zone's thresholds (`notify_before`, `renew_before`), fixed when the
    /// certificate entered the inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<ExpiryNotice>,
    /// Where the certificate is deployed, one entry per destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<crate::deploy::Deployment>,
    /// The automatic renewal, for certificates a certplane issuer issued in a zone that renews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<crate::deploy::RenewalSchedule>,
}

/// One expiry notice: `certificate.expiring` is sent once, at `due_at`, for `threshold`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryNotice {
    /// `notify_before` or `renew_before`.
    pub threshold: String,
    /// How long before expiry, in seconds.
    pub before_s: i64,
    pub due_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
}

impl CertificateRecord {
    /// Still managed: notices and renewals concern it.
    pub fn is_live(&self) -> bool {
        self.status == CertificateStatus::Active
            && self.superseded_by.is_none()
            && self.revocation.is_none()
    }
}

/// Where an issued certificate came from: the request that asked for it and the certplane issuer
/// that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceLink {
    pub request_id: String,
    pub issuer: String,
    /// Set when AWS Private CA issued the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsIssued>,
}

/// Where an AWS-issued certificate lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsIssued {
    pub ca_arn: String,
    /// The ACM certificate ARN (`acm-native`) or the ACM PCA certificate ARN (`csr`).
    pub certificate_arn: String,
    pub mode: crate::issuer::PcaMode,
    /// The revocation still has to reach the CA (an intent of the leader's PCA worker).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revocation_pending: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_request_id: Option<String>,
    /// `acm-native`: ACM's status (DescribeCertificate) at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acm_status: Option<String>,
    /// `acm-native`: ACM's managed-renewal status at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Timestamp>,
    /// `acm-native`: when the leader asks ACM next (its place in the AwsQueue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<Timestamp>,
}

/// RFC 5280 CRL reason codes (`removeFromCRL` is not a reason a new revocation can carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 9] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key_compromise",
            RevocationReason::CaCompromise => "ca_compromise",
            RevocationReason::AffiliationChanged => "affiliation_changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation_of_operation",
            RevocationReason::CertificateHold => "certificate_hold",
            RevocationReason::PrivilegeWithdrawn => "privilege_withdrawn",
            RevocationReason::AaCompromise => "aa_compromise",
        }
    }

    /// Accepts the snake_case names and RFC 5280's camelCase names (`keyCompromise`).
    pub fn parse(text: &str) -> Option<RevocationReason> {
        let folded: String = text
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.as_str().replace('_', "") == folded)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: Timestamp,
    pub reason: RevocationReason,
    pub by: String,
}

impl CertificateRecord {
    pub fn has_private_key(&self) -> bool {
        self.private_key.is_some()
    }
}

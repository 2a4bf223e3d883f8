//! Certificate requests: what a requester asked for, the policy verdict, and where issuance stands.
//!
//! ```text
//!  submitted ─► rejected                      (policy said no; violations kept on the record)
//!      │
//!      ├──────► pending_approval ─► rejected  (an approver said no, with the reason)
//!      │              │          └──► expired   (nobody decided within the zone's approval_timeout)
//!      │              ▼ (every stage approved)
//!      ▼
//!   approved ─► issuing ─► issued             (the leader's issuance worker signs, proposes the outcome)
//!                    └───► failed             (the issuer refused or could not sign)
//! ```
//!
//! The built-in CA goes from `approved` to `issued` in one outcome. An ACM PCA issuer passes through
//! `issuing`: the worker records the AWS call (its idempotency token) before making it, then the
//! certificate ARN AWS answered, then the certificate; a new leader resumes from whichever step
//! was last recorded.
//!
//! `submitted` is the intake state and never rests in the store: the same command that records a
//! request evaluates it. `approved` requests sit in the issuance queue (an intent, DESIGN.md section 3)
//! until the outcome is applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::San;
use crate::policy::{ApprovalStage, KeyFacts, Span, Violation};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Submitted,
    Rejected,
    PendingApproval,
    Approved,
    Issuing,
    Issued,
    Failed,
    Expired,
}

impl RequestState {
    pub const ALL: [RequestState; 8] = [
        RequestState::Submitted,
        RequestState::Rejected,
        RequestState::PendingApproval,
        RequestState::Approved,
        RequestState::Issuing,
        RequestState::Issued,
        RequestState::Failed,
        RequestState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Submitted => "submitted",
            RequestState::Rejected => "rejected",
            RequestState::PendingApproval => "pending_approval",
            RequestState::Approved => "approved",
            RequestState::Issuing => "issuing",
            RequestState::Issued => "issued",
            RequestState::Failed => "failed",
            RequestState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<RequestState> {
        RequestState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A state no worker will move on from by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Rejected
                | RequestState::Issued
                | RequestState::Failed
                | RequestState::Expired
        )
    }
}

/// A key certplane generates for the requester (the key never leaves certplane unless exported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeySpec {
    Rsa { bits: u32 },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

/// Where the certificate's key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeySource {
    /// The requester holds the key and sent a CSR (verified at intake; only its public key is used).
    Csr { csr_pem: String },
    /// certplane generates the key when it issues, and stores it sealed with the certificate.
    Generate { spec: KeySpec },
}

/// The fields a requester sets, after intake normalised them (names lowercased, IDNA, no trailing dot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub zone: String,
    pub common_name: Option<String>,
    pub sans: Vec<San>,
    pub key: KeySource,
    /// Facts about the key: read from the CSR, or implied by the key spec.
    pub key_facts: KeyFacts,
    /// Requested validity; intake fills in the zone's maximum when the requester gives none.
    pub validity: Span,
    /// Issuer name; `None` means the zone's default issuer.
    pub issuer: Option<String>,
    pub owner: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Set on a renewal: the certificate the new one will supersede.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_of: Option<String>,
    /// Where to deploy the certificate; `None`: the zone's `destinations` (a renewal keeps the
    /// destinations, and their ARNs, of the certificate it renews).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<crate::deploy::Destination>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    #[serde(flatten)]
    pub spec: RequestSpec,
    /// The issuer the request resolved to (the requested one or the zone's default). Stored under its
    /// own key: the flattened spec already has an `issuer` (the requested one, possibly null).
    #[serde(rename = "resolved_issuer")]
    pub issuer: String,
    pub state: RequestState,
    /// Every policy violation found, when the request was rejected.
    #[serde(default)]
    pub violations: Vec<Violation>,
    /// The policy evaluated: each zone on the path with the version it had, root first.
    pub policy_versions: Vec<(String, u64)>,
    pub requested_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bumped on every state change; outcomes name the generation they answer.
    pub generation: u64,
    pub revision: u64,
    /// The log index at which the request was approved: its place in the issuance queue.
    #[serde(default)]
    pub queued_at: u64,
    /// The approval workflow, when the zone required one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalProgress>,
    /// The AWS side of an issuance through an ACM PCA issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsIssuance>,
}

/// An issuance performed by AWS: the call certplane made (or is making) and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsIssuance {
    pub ca_arn: String,
    /// `acm-native` or `csr`.
    pub mode: crate::issuer::PcaMode,
    /// The IdempotencyToken every try sends ([`aws_idempotency_token`]).
    pub token: String,
    /// When the first try was recorded. AWS remembers a token for about an hour; after that a try
    /// whose answer was lost cannot be repeated safely.
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    /// The AWS request id of the call that created the certificate (joins CloudTrail's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_request_id: Option<String>,
}

/// How long after the first try certplane still repeats an AWS issuance call with the same token.
/// AWS documents that idempotency tokens expire after one hour; ten minutes are kept in reserve for
/// clock skew and the call's own duration.
pub const AWS_TOKEN_WINDOW_MS: i64 = 50 * 60 * 1000;

/// The AWS IdempotencyToken of a request: 32 hex characters derived from its id (ACM allows at most
/// 32 word characters, ACM PCA 36), the same on every node and every try.
pub fn aws_idempotency_token(request_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("certplane-issuance\0{request_id}").as_bytes());
    hex::encode(&digest[..16])
}

/// Where a request stands in its approval workflow. The stages are copied from the zone policy at
/// submission, so a later policy change does not alter a request in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalProgress {
    pub stages: Vec<ApprovalStage>,
    /// Index of the stage now deciding; equal to `stages.len()` once every stage approved.
    pub current: usize,
    pub decisions: Vec<ApprovalDecision>,
    pub expires_at: Timestamp,
    /// Set when a renewal skipped approval because nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub stage: usize,
    pub stage_name: String,
    pub by: String,
    pub by_name: String,
    pub decision: Decision,
    pub comment: String,
    pub at: Timestamp,
}

impl ApprovalProgress {
    /// Ids of everyone who approved, in order.
    pub fn approvers(&self) -> Vec<String> {
        self.decisions
            .iter()
            .filter(|d| d.decision == Decision::Approve)
            .map(|d| d.by.clone())
            .collect()
    }
}

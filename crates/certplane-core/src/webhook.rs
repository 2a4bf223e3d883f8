//! Webhook subscriptions and their deliveries.
//!
//! `apply` turns each event (a request submitted, approved, issued; a certificate revoked; a policy
//! changed; ...) into one delivery per matching subscription: an intent in the replicated state, with
//! the exact body to send. The leader's delivery worker sends it, signed, and proposes the outcome;
//! a failed attempt is retried later with backoff, and a new leader picks up whatever is still queued,
//! so no event is lost by a failover (DESIGN.md section 3). Receivers deduplicate on the delivery id:
//! a leader that dies after the receiver answered but before the outcome was committed sends again.

use serde::{Deserialize, Serialize};

use crate::certificate::EncryptedKey;
use crate::time::Timestamp;

/// What a subscription can listen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "request.submitted")]
    RequestSubmitted,
    #[serde(rename = "request.pending_approval")]
    RequestPendingApproval,
    #[serde(rename = "request.approved")]
    RequestApproved,
    #[serde(rename = "request.rejected")]
    RequestRejected,
    #[serde(rename = "request.expired")]
    RequestExpired,
    #[serde(rename = "request.issued")]
    RequestIssued,
    #[serde(rename = "request.failed")]
    RequestFailed,
    #[serde(rename = "certificate.expiring")]
    CertificateExpiring,
    #[serde(rename = "certificate.renewed")]
    CertificateRenewed,
    #[serde(rename = "certificate.renewal_failed")]
    CertificateRenewalFailed,
    #[serde(rename = "certificate.revoked")]
    CertificateRevoked,
    #[serde(rename = "certificate.deployed")]
    CertificateDeployed,
    #[serde(rename = "certificate.deployment_failed")]
    CertificateDeploymentFailed,
    #[serde(rename = "policy.changed")]
    PolicyChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::RequestSubmitted,
        EventKind::RequestPendingApproval,
        EventKind::RequestApproved,
        EventKind::RequestRejected,
        EventKind::RequestExpired,
        EventKind::RequestIssued,
        EventKind::RequestFailed,
        EventKind::CertificateExpiring,
        EventKind::CertificateRenewed,
        EventKind::CertificateRenewalFailed,
        EventKind::CertificateRevoked,
        EventKind::CertificateDeployed,
        EventKind::CertificateDeploymentFailed,
        EventKind::PolicyChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RequestSubmitted => "request.submitted",
            EventKind::RequestPendingApproval => "request.pending_approval",
            EventKind::RequestApproved => "request.approved",
            EventKind::RequestRejected => "request.rejected",
            EventKind::RequestExpired => "request.expired",
            EventKind::RequestIssued => "request.issued",
            EventKind::RequestFailed => "request.failed",
            EventKind::CertificateExpiring => "certificate.expiring",
            EventKind::CertificateRenewed => "certificate.renewed",
            EventKind::CertificateRenewalFailed => "certificate.renewal_failed",
            EventKind::CertificateRevoked => "certificate.revoked",
            EventKind::CertificateDeployed => "certificate.deployed",
            EventKind::CertificateDeploymentFailed => "certificate.deployment_failed",
            EventKind::PolicyChanged => "policy.changed",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// A subscription: events in a zone (and every zone below it) are POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: String,
    pub zone: String,
    pub url: String,
    pub events: Vec<EventKind>,
    /// The signing secret, sealed with the key-encryption key (associated data: the webhook id).
    pub secret: EncryptedKey,
    #[serde(default)]
    pub description: String,
    pub created_at: Timestamp,
    pub created_by: String,
}

impl WebhookRecord {
    /// The associated data the secret is sealed with.
    pub fn secret_aad(id: &str) -> String {
        format!("certplane webhook secret {id}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Queued: the leader will send it at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed; no more retries.
    Failed,
}

/// One event for one subscription, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// `dlv_` + the log index of the event (16 hex digits) + `_` + the command's position in its entry
    /// (4 hex digits, 0 unless a worker batched several commands) + the position among its deliveries
    /// (4 hex digits).
    pub id: String,
    pub webhook_id: String,
    pub event: EventKind,
    pub zone: String,
    /// The JSON body sent, fixed when the event happened (the same on every attempt and every node).
    pub body: String,
    pub created_at: Timestamp,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
}

/// The result of one attempt, as the delivery worker proposes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered {
        status: u16,
    },
    Failed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        error: String,
        /// When to try again; `None` gives up.
        retry_at: Option<Timestamp>,
    },
}

/// Most subscriptions a cluster holds (each command checks them all for matching events).
pub const MAX_WEBHOOKS: u64 = 1000;

//! Commands: what a proposer asks the replicated state machine to do.
//!
//! A [`Proposal`] is one Raft log entry's application payload. It is encoded as JSON with an explicit
//! version field `v`; [`Proposal::decode`] refuses versions it does not know, which stops the node rather
//! than skipping an entry (DESIGN.md section 2). Everything non-deterministic (time, ids, the actor, the
//! sealed private key) is decided by the proposer and carried here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::certificate::{CertificateDetails, CertificateRecord, EncryptedKey, RevocationReason};
use crate::error::{CoreError, RejectCode};
use crate::issuer::IssuerRecord;
use crate::policy::{Violation, ZonePolicy};
use crate::principal::{Principal, TokenRecord};
use crate::request::{RequestRecord, RequestSpec};
use crate::time::Timestamp;
use crate::zone::ZoneRecord;

/// The newest proposal format this build writes and reads.
pub const PROPOSAL_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Format version; see [`PROPOSAL_VERSION`].
    pub v: u16,
    /// Wall-clock time at the proposer, the only clock the state machine sees.
    pub proposed_at: Timestamp,
    pub actor: Principal,
    /// Client-supplied `Idempotency-Key`, scoped to the actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Hex SHA-256 of the request as the client sent it, to tell a retry from a reuse of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    pub command: Command,
}

impl Proposal {
    pub fn new(proposed_at: Timestamp, actor: Principal, command: Command) -> Self {
        Proposal {
            v: PROPOSAL_VERSION,
            proposed_at,
            actor,
            idempotency_key: None,
            request_hash: None,
            command,
        }
    }

    pub fn with_idempotency(mut self, key: Option<String>, request_hash: Option<String>) -> Self {
        self.idempotency_key = key;
        self.request_hash = request_hash;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u16,
        }
        let probe: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| CoreError::corrupt("proposal", e))?;
        if probe.v == 0 || probe.v > PROPOSAL_VERSION {
            return Err(CoreError::corrupt(
                "proposal",
                format!("unsupported proposal version {}", probe.v),
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| CoreError::corrupt("proposal", e))
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by {} at {}",
            self.command.action(),
            self.actor.id,
            self.proposed_at
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// One-time cluster initialisation: stores the root token, creates the root zone `/` and, when
    /// the initialising node holds the key-encryption key, the built-in CA.
    Initialize {
        root_token: Box<TokenRecord>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        builtin_issuer: Option<Box<IssuerRecord>>,
    },
    ImportCertificate(Box<ImportCertificate>),
    RetireCertificate {
        id: String,
        reason: Option<String>,
    },
    /// Create or replace a zone's policy. `expected_version` guards against lost updates.
    PutZone(Box<PutZone>),
    /// Register an issuer (an imported internal CA).
    CreateIssuer(Box<IssuerRecord>),
    /// Record a certificate request and evaluate it against its zone's effective policy.
    SubmitRequest(Box<SubmitRequest>),
    /// Outcome of the issuance worker: the signed certificate for an approved request.
    CompleteIssuance(Box<CompleteIssuance>),
    /// Outcome of the issuance worker: the issuer could not issue.
    FailIssuance {
        request_id: String,
        generation: u64,
        error: String,
    },
    /// The issuance worker is about to call AWS for an approved request of an ACM PCA issuer: the
    /// request moves to `issuing` with its idempotency token, so every later try repeats the call.
    BeginAwsIssuance {
        request_id: String,
        generation: u64,
    },
    /// AWS answered the issuance call with the new certificate's ARN; the worker fetches it next.
    RecordAwsIssuance {
        request_id: String,
        generation: u64,
        certificate_arn: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aws_request_id: Option<String>,
    },
    /// The issuance worker's check of an acm-native certificate: ACM's status, and the certificate
    /// ACM serves at the ARN when it renewed it by itself.
    RecordAcmCheck(Box<RecordAcmCheck>),
    /// The PCA worker's outcome: the CA accepted the revocation of an AWS-issued certificate.
    RecordAwsRevocation {
        certificate_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aws_request_id: Option<String>,
    },
    RevokeCertificate {
        id: String,
        reason: RevocationReason,
    },
    /// Audit-only: an authorised principal is about to receive a certificate's private key.
    ExportPrivateKey {
        id: String,
    },
    /// Create an API token or a client-certificate principal (the proposer chose the id and hashed
    /// the secret).
    CreateToken(Box<TokenRecord>),
    /// Revoke a token or client-certificate principal. The last active admin on `/` cannot be
    /// revoked.
    RevokeToken {
        id: String,
    },
    /// An approver's decision on the current stage of a pending request.
    DecideApproval(Box<DecideApproval>),
    /// The leader's approval worker: a pending request's approval time ran out.
    ExpireApproval {
        request_id: String,
    },
    /// Subscribe a URL to events in a zone (the proposer sealed the signing secret).
    CreateWebhook(Box<crate::webhook::WebhookRecord>),
    DeleteWebhook {
        id: String,
    },
    /// The delivery worker's outcome for one attempt.
    RecordDelivery {
        delivery_id: String,
        /// 1 for the first attempt; must be one more than the attempts recorded so far.
        attempt: u32,
        outcome: crate::webhook::AttemptOutcome,
    },
    /// The leader's notice worker: a certificate reached an expiry threshold of its zone.
    NotifyExpiring {
        certificate_id: String,
        /// `notify_before` or `renew_before`.
        threshold: String,
    },
    /// The deploy worker's outcome for one attempt at one destination of a certificate.
    RecordDeployment(Box<RecordDeployment>),
    /// A failover drill's probe write: the latest sequence number of drill `drill` is `seq`.
    Probe {
        drill: String,
        seq: u64,
    },
    /// A no-op write used by health probes and benchmarks to measure the write path.
    Noop,
    /// Several commands of one system worker in one log entry, applied in order as if each were its
    /// own entry (each is checked, audited and answered separately; a rejected one does not stop the
    /// rest). Workers use it to share one commit among many outcomes; clients cannot send it.
    Batch {
        commands: Vec<Command>,
    },
}

impl Command {
    /// The audit action name.
    pub fn action(&self) -> &'static str {
        match self {
            Command::Initialize { .. } => "sys.init",
            Command::ImportCertificate(_) => "certificate.import",
            Command::RetireCertificate { .. } => "certificate.retire",
            Command::PutZone(_) => "zone.put",
            Command::CreateIssuer(_) => "issuer.create",
            Command::SubmitRequest(_) => "request.submit",
            Command::CompleteIssuance(_) => "request.issued",
            Command::FailIssuance { .. } => "request.failed",
            Command::BeginAwsIssuance { .. } => "request.aws_call",
            Command::RecordAwsIssuance { .. } => "request.aws_issued",
            Command::RecordAwsRevocation { .. } => "certificate.aws_revoked",
            Command::RecordAcmCheck(check) => match check.renewed {
                Some(_) => "certificate.acm_renewed",
                None => "certificate.acm_checked",
            },
            Command::RevokeCertificate { .. } => "certificate.revoke",
            Command::ExportPrivateKey { .. } => "certificate.export_key",
            Command::CreateToken(_) => "token.create",
            Command::RevokeToken { .. } => "token.revoke",
            Command::DecideApproval(d) => match d.decision {
                crate::request::Decision::Approve => "request.approve",
                crate::request::Decision::Reject => "request.reject",
            },
            Command::ExpireApproval { .. } => "request.expire",
            Command::CreateWebhook(_) => "webhook.create",
            Command::DeleteWebhook { .. } => "webhook.delete",
            Command::RecordDelivery { .. } => "webhook.delivery",
            Command::NotifyExpiring { .. } => "certificate.expiring",
            Command::RecordDeployment(r) => match r.outcome {
                crate::deploy::DeploymentOutcome::Importing => "certificate.deploy_start",
                crate::deploy::DeploymentOutcome::Deployed { .. } => "certificate.deployed",
                crate::deploy::DeploymentOutcome::Failed { .. } => "certificate.deploy_failed",
                crate::deploy::DeploymentOutcome::Deleted => "certificate.acm_deleted",
            },
            Command::Probe { .. } => "sys.probe",
            Command::Noop => "sys.noop",
            Command::Batch { .. } => "sys.batch",
        }
    }

    /// The object the audit record names.
    pub fn object(&self) -> String {
        match self {
            Command::Initialize { root_token, .. } => format!("token/{}", root_token.id),
            Command::ImportCertificate(import) => format!("certificate/{}", import.id),
            Command::RetireCertificate { id, .. } => format!("certificate/{id}"),
            Command::PutZone(put) => format!("zone{}", put.path),
            Command::CreateIssuer(issuer) => format!("issuer/{}", issuer.name),
            Command::SubmitRequest(submit) => format!("request/{}", submit.id),
            Command::CompleteIssuance(done) => format!("request/{}", done.request_id),
            Command::FailIssuance { request_id, .. }
            | Command::BeginAwsIssuance { request_id, .. }
            | Command::RecordAwsIssuance { request_id, .. } => format!("request/{request_id}"),
            Command::RecordAwsRevocation { certificate_id, .. } => {
                format!("certificate/{certificate_id}")
            }
            Command::RecordAcmCheck(check) => format!("certificate/{}", check.certificate_id),
            Command::RevokeCertificate { id, .. } | Command::ExportPrivateKey { id } => {
                format!("certificate/{id}")
            }
            Command::CreateToken(token) => format!("token/{}", token.id),
            Command::RevokeToken { id } => format!("token/{id}"),
            Command::DecideApproval(d) => format!("request/{}", d.request_id),
            Command::ExpireApproval { request_id } => format!("request/{request_id}"),
            Command::CreateWebhook(w) => format!("webhook/{}", w.id),
            Command::DeleteWebhook { id } => format!("webhook/{id}"),
            Command::RecordDelivery { delivery_id, .. } => format!("delivery/{delivery_id}"),
            Command::NotifyExpiring { certificate_id, .. } => {
                format!("certificate/{certificate_id}")
            }
            Command::RecordDeployment(r) => format!("certificate/{}", r.certificate_id),
            Command::Probe { drill, .. } => format!("drill/{drill}"),
            Command::Noop => "-".into(),
            Command::Batch { commands } => format!("batch/{}", commands.len()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportCertificate {
    /// Record id chosen by the proposer (derived from the fingerprint, so re-imports agree).
    pub id: String,
    pub details: CertificateDetails,
    pub chain_pem: String,
    pub owner: String,
    pub zone: String,
    pub tags: BTreeMap<String, String>,
    pub private_key: Option<EncryptedKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutZone {
    pub path: String,
    pub policy: ZonePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Request id chosen by the proposer.
    pub id: String,
    pub spec: RequestSpec,
    /// The certificate the proposer signed ahead with the built-in CA, after its own dry run found
    /// the request would be approved at once. `apply` records the request as before and, when it is
    /// approved, applies this as the issuance worker's outcome in the same entry, so such a request
    /// costs one commit instead of two. In any other case it is dropped unseen and the worker signs
    /// from the queue as usual (decision 0015).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presigned: Option<Box<CompleteIssuance>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteIssuance {
    pub request_id: String,
    /// The request generation the worker read; a stale outcome is refused.
    pub generation: u64,
    pub certificate_id: String,
    pub details: CertificateDetails,
    /// Leaf first, then the issuer's chain.
    pub chain_pem: String,
    /// The generated key, sealed; `None` when the requester sent a CSR or the key stays in ACM.
    pub private_key: Option<EncryptedKey>,
    /// The AWS request id of the call that returned the certificate (AWS-issued only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordAcmCheck {
    pub certificate_id: String,
    /// The certificate's generation the worker read; a stale check is refused.
    pub generation: u64,
    /// DescribeCertificate's `Status` (`ISSUED`, `EXPIRED`, `REVOKED`, ...).
    pub status: String,
    /// `RenewalSummary.RenewalStatus`, when ACM reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_status: Option<String>,
    pub next_check_at: Timestamp,
    /// ACM serves another certificate at the ARN: its renewal, to record as the successor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed: Option<AcmRenewed>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcmRenewed {
    pub certificate_id: String,
    pub details: CertificateDetails,
    pub chain_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordDeployment {
    pub certificate_id: String,
    /// Position of the destination in the certificate's deployments.
    pub destination: usize,
    /// 1 for the first outcome; must be one more than the outcomes recorded so far, so a deposed
    /// leader's late outcome is refused.
    pub attempt: u32,
    pub outcome: crate::deploy::DeploymentOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecideApproval {
    pub request_id: String,
    pub decision: crate::request::Decision,
    pub comment: String,
    /// When set, the decision applies only if the request is still at this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_generation: Option<u64>,
}

/// A deterministic refusal: every node reaches it, nothing changed but the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
    /// Structured detail, for example every policy violation of a refused zone change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// The object the refusal concerns when it was recorded anyway (a rejected request's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            violations: Vec::new(),
            object_id: None,
        }
    }
}

/// What a command did when it applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Applied {
    Initialized {
        root_token_id: String,
    },
    CertificateImported {
        record: Box<CertificateRecord>,
        created: bool,
    },
    CertificateRetired {
        record: Box<CertificateRecord>,
    },
    ZoneStored {
        zone: Box<ZoneRecord>,
    },
    IssuerCreated {
        name: String,
    },
    /// The request as recorded: rejected (with violations), pending approval, or approved.
    RequestRecorded {
        request: Box<RequestRecord>,
    },
    /// The issuance outcome was applied (or the request had already reached a final state).
    RequestUpdated {
        request: Box<RequestRecord>,
    },
    /// A submission issued by its own entry (decision 0015): the issued request and its
    /// certificate, so the node that proposed it can answer before it has applied the entry itself.
    RequestIssued {
        request: Box<RequestRecord>,
        certificate: Box<CertificateRecord>,
    },
    CertificateRevoked {
        record: Box<CertificateRecord>,
    },
    KeyExportAllowed {
        id: String,
    },
    TokenCreated {
        token: Box<TokenRecord>,
    },
    WebhookStored {
        webhook: Box<crate::webhook::WebhookRecord>,
    },
    WebhookDeleted {
        id: String,
    },
    ExpiryNoticed {
        record: Box<CertificateRecord>,
        threshold: String,
    },
    DeliveryUpdated {
        delivery: Box<crate::webhook::DeliveryRecord>,
    },
    TokenRevoked {
        token: Box<TokenRecord>,
    },
    Probed {
        drill: String,
        seq: u64,
    },
    DeploymentRecorded {
        record: Box<CertificateRecord>,
        destination: usize,
    },
    /// An acm-native certificate was checked; `successor` is ACM's renewal when it made one.
    AcmChecked {
        record: Box<CertificateRecord>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        successor: Option<Box<CertificateRecord>>,
    },
    Noop,
    /// The answer to each command of a [`Command::Batch`], in order.
    Batch {
        results: Vec<Result<Applied, Rejection>>,
    },
    /// Membership changes and blank entries: nothing for the application.
    Internal,
}

/// The state machine's answer for one log entry; the same on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub index: u64,
    pub result: Result<Applied, Rejection>,
    /// True when this is the stored answer to an earlier request with the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            index: 0,
            result: Ok(Applied::Internal),
            replayed: false,
        }
    }
}

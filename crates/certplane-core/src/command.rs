//! Commands: what a proposer asks the replicated state machine to do.
//!
//! A [`Proposal`] is one Raft log entry's application payload. It is encoded as JSON with an explicit
//! version field `v`; [`Proposal::decode`] refuses versions it does not know, which stops the node rather
//! than skipping an entry (DESIGN.md section 2). Everything non-deterministic (time, ids, the actor, the
//! sealed private key) is decided by the proposer and carried here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::certificate::{CertificateDetails, CertificateRecord, EncryptedKey};
use crate::error::{CoreError, RejectCode};
use crate::principal::{Principal, TokenRecord};
use crate::time::Timestamp;

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
    /// One-time cluster initialisation: stores the root token.
    Initialize {
        root_token: TokenRecord,
    },
    ImportCertificate(Box<ImportCertificate>),
    RetireCertificate {
        id: String,
        reason: Option<String>,
    },
    /// A no-op write used by health probes and benchmarks to measure the write path.
    Noop,
}

impl Command {
    /// The audit action name.
    pub fn action(&self) -> &'static str {
        match self {
            Command::Initialize { .. } => "sys.init",
            Command::ImportCertificate(_) => "certificate.import",
            Command::RetireCertificate { .. } => "certificate.retire",
            Command::Noop => "sys.noop",
        }
    }

    /// The object the audit record names.
    pub fn object(&self) -> String {
        match self {
            Command::Initialize { root_token } => format!("token/{}", root_token.id),
            Command::ImportCertificate(import) => format!("certificate/{}", import.id),
            Command::RetireCertificate { id, .. } => format!("certificate/{id}"),
            Command::Noop => "-".into(),
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

/// A deterministic refusal: every node reaches it, nothing changed but the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
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
    Noop,
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

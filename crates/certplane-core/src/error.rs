//! Errors of the domain layer.
//!
//! Two kinds, kept apart on purpose: a [`Rejection`](crate::Rejection) is an ordinary, deterministic
//! answer to an invalid command (every node reaches the same verdict and the client gets a 4xx), while a
//! [`CoreError`] means the node cannot go on safely (undecodable entry, broken invariant, storage failure)
//! and stops it.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// Machine-readable reason a command was rejected; the HTTP layer maps each to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    NotFound,
    AlreadyInitialized,
    NotInitialized,
    Conflict,
    IdempotencyKeyReused,
    Forbidden,
    InvalidArgument,
    StaleGeneration,
    /// The request breaks its zone's policy; the violations say how.
    PolicyViolation,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::NotFound => "not_found",
            RejectCode::AlreadyInitialized => "already_initialized",
            RejectCode::NotInitialized => "not_initialized",
            RejectCode::Conflict => "conflict",
            RejectCode::IdempotencyKeyReused => "idempotency_key_reused",
            RejectCode::Forbidden => "forbidden",
            RejectCode::InvalidArgument => "invalid_argument",
            RejectCode::StaleGeneration => "stale_generation",
            RejectCode::PolicyViolation => "policy_violation",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The log entry or a stored record cannot be decoded: the log or the store is corrupt.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The stored state breaks an invariant the state machine relies on.
    #[error("invariant broken: {0}")]
    Invariant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CoreError {
    pub fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Self {
        CoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }

    /// Storage errors may pass (a disk hiccup); corruption never does.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CoreError::Store(StoreError::Io(_)))
    }
}

//! certplane's deterministic domain.
//!
//! ```text
//!  intake (server) ──► Proposal { proposed_at, actor, ids, Command } ──► Raft log
//!                                                                          │
//!                       apply(store, entry, proposal) -> Outcome  ◄────────┘
//! ```
//!
//! Everything here is a pure function of the stored state and the log entry: no clock, no randomness,
//! no I/O beyond the [`StateStore`] trait. The Raft adapter runs [`apply`] over RocksDB; tests run it over
//! [`MemStore`].

pub mod apply;
pub mod audit;
pub mod certificate;
pub mod command;
pub mod deploy;
pub mod error;
pub mod issuer;
pub mod keys;
pub mod names;
pub mod policy;
pub mod principal;
pub mod query;
pub mod request;
pub mod store;
pub mod time;
pub mod webhook;
pub mod zone;

pub use apply::{apply, EntryContext};

pub use certificate::{CertificateDetails, CertificateRecord, CertificateStatus, EncryptedKey};
pub use command::{
    Applied, Command, ImportCertificate, Outcome, Proposal, Rejection, PROPOSAL_VERSION,
};
pub use error::{CoreError, RejectCode};
pub use principal::{Permission, Principal, Role, RoleBinding, TokenRecord};
pub use store::{Keyspace, MemStore, StateRead, StateStore, StoreError};
pub use time::Timestamp;

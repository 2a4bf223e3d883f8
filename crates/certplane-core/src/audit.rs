//! The audit trail: a hash chain written by `apply`.
//!
//! Each record commits to the previous record's hash, so changing, removing or reordering any record
//! breaks every link after it. [`verify_chain`] walks the chain and reports the first broken link.
//!
//! ```text
//!  genesis(0…0) ◄── r1.prev   r1.hash ◄── r2.prev   r2.hash ◄── r3.prev …
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CoreError;
use crate::keys::{self, decode_record, encode_record, meta, seq_key};
use crate::store::{Keyspace, StateRead, StateStore};
use crate::time::Timestamp;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1-based position in the chain.
    pub seq: u64,
    /// Raft log index of the command that wrote the record.
    pub log_index: u64,
    /// The proposer's time from the log entry.
    pub at: Timestamp,
    pub actor: String,
    pub actor_name: String,
    pub action: String,
    pub object: String,
    /// `ok` or `rejected:<code>`.
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// SHA-256 over the record's canonical JSON with `hash` empty.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

pub fn chain_head(store: &impl StateRead) -> Result<ChainHead, CoreError> {
    match store.get(Keyspace::Meta, meta::AUDIT_HEAD)? {
        Some(bytes) => decode_record("audit head", &bytes),
        None => Ok(ChainHead::default()),
    }
}

/// What is appended, before the chain fields are filled in.
pub struct AuditEntry<'a> {
    pub log_index: u64,
    pub at: Timestamp,
    pub actor: &'a str,
    pub actor_name: &'a str,
    pub action: &'a str,
    pub object: String,
    pub outcome: String,
}

pub fn append(
    store: &mut impl StateStore,
    entry: AuditEntry<'_>,
) -> Result<AuditRecord, CoreError> {
    let head = chain_head(store)?;
    let mut record = AuditRecord {
        seq: head.seq + 1,
        log_index: entry.log_index,
        at: entry.at,
        actor: entry.actor.to_string(),
        actor_name: entry.actor_name.to_string(),
        action: entry.action.to_string(),
        object: entry.object,
        outcome: entry.outcome,
        prev_hash: head.hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash();
    store.put(
        Keyspace::Audit,
        &seq_key(record.seq),
        &encode_record(&record),
    );
    let new_head = ChainHead {
        seq: record.seq,
        hash: record.hash.clone(),
    };
    store.put(Keyspace::Meta, meta::AUDIT_HEAD, &encode_record(&new_head));
    Ok(record)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerification {
    pub ok: bool,
    pub records_checked: u64,
    pub head: ChainHead,
    pub first_broken: Option<BrokenLink>,
}

/// Walk the whole chain in pages and report the first broken link.
pub fn verify_chain(store: &impl StateRead) -> Result<ChainVerification, CoreError> {
    const PAGE: usize = 1024;
    let head = chain_head(store)?;
    let mut expected_prev = GENESIS_HASH.to_string();
    let mut expected_seq = 1u64;
    let mut checked = 0u64;
    let mut from = seq_key(1).to_vec();
    let broken = |seq: u64, reason: String, checked: u64, head: ChainHead| ChainVerification {
        ok: false,
        records_checked: checked,
        head,
        first_broken: Some(BrokenLink { seq, reason }),
    };
    loop {
        let page = store.scan(Keyspace::Audit, &from, &[], PAGE)?;
        let done = page.len() < PAGE;
        for (key, value) in &page {
            let record: AuditRecord = match decode_record("audit record", value) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(broken(
                        expected_seq,
                        format!("undecodable record: {e}"),
                        checked,
                        head,
                    ))
                }
            };
            let key_seq = key
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if record.seq != expected_seq || key_seq != expected_seq {
                return Ok(broken(
                    expected_seq,
                    format!("expected record {expected_seq}, found {}", record.seq),
                    checked,
                    head,
                ));
            }
            if record.prev_hash != expected_prev {
                return Ok(broken(
                    record.seq,
                    "prev_hash does not match the previous record's hash".into(),
                    checked,
                    head,
                ));
            }
            if record.compute_hash() != record.hash {
                return Ok(broken(
                    record.seq,
                    "record content does not match its hash".into(),
                    checked,
                    head,
                ));
            }
            expected_prev = record.hash;
            expected_seq += 1;
            checked += 1;
        }
        if done {
            break;
        }
        from = seq_key(expected_seq).to_vec();
    }
    if checked != head.seq || expected_prev != head.hash {
        return Ok(broken(
            expected_seq,
            format!("chain ends at {checked} but the head says {}", head.seq),
            checked,
            head,
        ));
    }
    Ok(ChainVerification {
        ok: true,
        records_checked: checked,
        head,
        first_broken: None,
    })
}

pub fn get(store: &impl StateRead, seq: u64) -> Result<Option<AuditRecord>, CoreError> {
    store
        .get(Keyspace::Audit, &keys::seq_key(seq))?
        .map(|b| decode_record("audit record", &b))
        .transpose()
}

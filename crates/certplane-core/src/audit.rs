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
#[serde(from = "StoredAuditRecord")]
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
    /// What the command concerned, when it concerned a request, a certificate or a decision.
    #[serde(flatten)]
    pub details: AuditDetails,
    pub prev_hash: String,
    pub hash: String,
}

/// An [`AuditRecord`] as stored: the same JSON object, with the details' fields read in place.
/// Serde's `flatten` would buffer every field of every record to decode it; the audit verifier reads
/// each record on every node. Building [`AuditDetails`] field by field below makes a new detail
/// field a compile error here until it is added.
#[derive(Deserialize)]
struct StoredAuditRecord {
    seq: u64,
    log_index: u64,
    at: Timestamp,
    actor: String,
    actor_name: String,
    action: String,
    object: String,
    outcome: String,
    #[serde(default)]
    actor_roles: Vec<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    policy_versions: Vec<(String, u64)>,
    #[serde(default)]
    approvers: Vec<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    certificate_id: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    arn: Option<String>,
    #[serde(default)]
    ca_arn: Option<String>,
    #[serde(default)]
    aws_request_id: Option<String>,
    prev_hash: String,
    hash: String,
}

impl From<StoredAuditRecord> for AuditRecord {
    fn from(r: StoredAuditRecord) -> Self {
        AuditRecord {
            seq: r.seq,
            log_index: r.log_index,
            at: r.at,
            actor: r.actor,
            actor_name: r.actor_name,
            action: r.action,
            object: r.object,
            outcome: r.outcome,
            details: AuditDetails {
                actor_roles: r.actor_roles,
                request_id: r.request_id,
                policy_versions: r.policy_versions,
                approvers: r.approvers,
                issuer: r.issuer,
                serial: r.serial,
                certificate_id: r.certificate_id,
                comment: r.comment,
                arn: r.arn,
                ca_arn: r.ca_arn,
                aws_request_id: r.aws_request_id,
            },
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The accountable facts of a record: the actor's roles, the request, the policy versions it was
/// evaluated against, its approvers, the issuer and serial issued, a decision's comment. Fields
/// that do not apply are left out of the record (and so out of its hash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Each zone on the request's path with the policy version evaluated, root first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_versions: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The AWS resource the action concerned (an ACM or ACM PCA certificate ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// The ACM Private CA that issued or revoked the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_arn: Option<String>,
    /// The AWS request id of the call, to join CloudTrail's record of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_request_id: Option<String>,
}

impl AuditRecord {
    /// SHA-256 over the record's canonical JSON with `hash` empty.
    pub fn compute_hash(&self) -> String {
        if self.hash.is_empty() {
            return self.hash_as_is();
        }
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        unhashed.hash_as_is()
    }

    fn hash_as_is(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
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
    pub details: AuditDetails,
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
        details: entry.details,
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

/// Checks records one at a time, in chain order: the node's verify call walks its store with it,
/// and `certplane audit verify --file` walks an export with it, offline.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: u64,
    expected_prev: String,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expected_seq: 1,
            expected_prev: GENESIS_HASH.to_string(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Check the next record. `key_seq` is where the record was stored, when known.
    pub fn push(
        &mut self,
        key_seq: Option<u64>,
        record: Result<AuditRecord, String>,
    ) -> Result<(), BrokenLink> {
        let mut record = record.map_err(|e| BrokenLink {
            seq: self.expected_seq,
            reason: format!("undecodable record: {e}"),
        })?;
        if record.seq != self.expected_seq || key_seq.is_some_and(|k| k != self.expected_seq) {
            return Err(BrokenLink {
                seq: self.expected_seq,
                reason: format!(
                    "expected record {}, found {}",
                    self.expected_seq, record.seq
                ),
            });
        }
        if record.prev_hash != self.expected_prev {
            return Err(BrokenLink {
                seq: record.seq,
                reason: "prev_hash does not match the previous record's hash".into(),
            });
        }
        // The hash covers the record with its hash field empty: take it out rather than copy the
        // record to blank it.
        let claimed = std::mem::take(&mut record.hash);
        if claimed.is_empty() || record.compute_hash() != claimed {
            return Err(BrokenLink {
                seq: record.seq,
                reason: "record content does not match its hash".into(),
            });
        }
        self.expected_prev = claimed;
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// A verifier for a chain excerpt that starts at `seq`, after a record whose hash is `prev`.
    pub fn starting_at(seq: u64, prev: &str) -> Self {
        ChainVerifier {
            expected_seq: seq,
            expected_prev: prev.to_string(),
            checked: 0,
        }
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The head the records so far lead to.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.expected_seq - 1,
            hash: self.expected_prev.clone(),
        }
    }
}

/// Walk the whole chain in pages and report the first broken link.
///
/// The store may take new records while the walk runs (the API's view is not a snapshot). A record
/// and the head that names it are written in one atomic batch, so the walk reads the head again when
/// it reaches the end: if the head moved on, it verifies the new records too; the chain holds when
/// the walk ends exactly at the head.
pub fn verify_chain(store: &impl StateRead) -> Result<ChainVerification, CoreError> {
    const PAGE: usize = 1024;
    const ROUNDS: usize = 64;
    let mut verifier = ChainVerifier::default();
    let broken = |link: BrokenLink, checked: u64, head: ChainHead| ChainVerification {
        ok: false,
        records_checked: checked,
        head,
        first_broken: Some(link),
    };
    let mut head = chain_head(store)?;
    for _ in 0..ROUNDS {
        let mut from = seq_key(verifier.head().seq + 1).to_vec();
        loop {
            let page = store.scan(Keyspace::Audit, &from, &[], PAGE)?;
            let done = page.len() < PAGE;
            for (key, value) in &page {
                let key_seq = key
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                let record =
                    decode_record::<AuditRecord>("audit record", value).map_err(|e| e.to_string());
                if let Err(link) = verifier.push(Some(key_seq), record) {
                    return Ok(broken(link, verifier.checked(), head));
                }
            }
            if done {
                break;
            }
            from = seq_key(verifier.head().seq + 1).to_vec();
        }
        head = chain_head(store)?;
        let reached = verifier.head();
        if reached == head {
            return Ok(ChainVerification {
                ok: true,
                records_checked: verifier.checked(),
                head,
                first_broken: None,
            });
        }
        if reached.seq >= head.seq {
            // Records past the head, or a head that names another record: not what apply writes.
            let link = BrokenLink {
                seq: head.seq.min(reached.seq) + 1,
                reason: format!(
                    "chain ends at {} ({}) but the head says {} ({})",
                    reached.seq, reached.hash, head.seq, head.hash
                ),
            };
            return Ok(broken(link, verifier.checked(), head));
        }
        // The head moved on while the walk ran: verify the new records as well.
    }
    let reached = verifier.head();
    let link = BrokenLink {
        seq: reached.seq + 1,
        reason: "the chain kept growing faster than it could be verified; retry".into(),
    };
    Ok(broken(link, verifier.checked(), head))
}

pub fn get(store: &impl StateRead, seq: u64) -> Result<Option<AuditRecord>, CoreError> {
    store
        .get(Keyspace::Audit, &keys::seq_key(seq))?
        .map(|b| decode_record("audit record", &b))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(details: AuditDetails) -> AuditRecord {
        let mut r = AuditRecord {
            seq: 7,
            log_index: 42,
            at: Timestamp(1_700_000_000_000),
            actor: "tok_1".into(),
            actor_name: "ci".into(),
            action: "certificate.renew".into(),
            object: "crt_1".into(),
            outcome: "ok".into(),
            details,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }

    #[test]
    fn a_stored_record_decodes_to_what_was_written_with_every_detail() {
        let full = record(AuditDetails {
            actor_roles: vec!["admin".into()],
            request_id: Some("req_1".into()),
            policy_versions: vec![("/".into(), 3), ("/payments".into(), 9)],
            approvers: vec!["alice".into(), "bob".into()],
            issuer: Some("builtin".into()),
            serial: Some("0a:1b".into()),
            certificate_id: Some("crt_2".into()),
            comment: Some("ok by me".into()),
            arn: Some("arn:aws:acm:eu-west-1:111122223333:certificate/x".into()),
            ca_arn: Some("arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/y".into()),
            aws_request_id: Some("r-1".into()),
        });
        let bare = record(AuditDetails::default());
        for r in [full, bare] {
            let bytes = encode_record(&r);
            let back: AuditRecord = decode_record("audit record", &bytes).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.compute_hash(), r.hash);
            // The details sit in the record's own object, as they always have.
            let json: serde_json::Value = serde_json::from_slice(&bytes[1..]).unwrap();
            assert_eq!(json.get("details"), None);
        }
    }

    #[test]
    fn the_verifier_refuses_a_record_whose_content_or_hash_was_changed() {
        let r = record(AuditDetails::default());
        let mut v = ChainVerifier::default();
        let mut first = r.clone();
        first.seq = 1;
        first.hash = first.compute_hash();
        v.push(Some(1), Ok(first.clone())).unwrap();

        let mut second = r.clone();
        second.seq = 2;
        second.prev_hash = first.hash.clone();
        second.hash = second.compute_hash();
        let mut edited = second.clone();
        edited.object = "crt_other".into();
        assert!(v.clone().push(Some(2), Ok(edited)).is_err());
        let mut unhashed = second.clone();
        unhashed.hash = String::new();
        assert!(v.clone().push(Some(2), Ok(unhashed)).is_err());
        v.push(Some(2), Ok(second)).unwrap();
        assert_eq!(v.checked(), 2);
    }
}

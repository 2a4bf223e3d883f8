//! The deterministic state machine.
//!
//! [`apply`] is a pure function of the stored state and one log entry: every node that applies the same
//! log reaches the same state, the same [`Outcome`], the same audit chain and the same state digest.
//! An invalid command is answered with a [`Rejection`] (and audited); only corruption is a [`CoreError`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{self, AuditEntry};
use crate::certificate::{CertificateRecord, CertificateStatus};
use crate::command::{Applied, Command, ImportCertificate, Outcome, Proposal, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::keys::{self, decode_record, encode_record, meta};
use crate::principal::{Principal, Role, TokenRecord};
use crate::store::{Keyspace, StateRead, StateStore};

/// Where the entry sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryContext {
    pub index: u64,
    pub term: u64,
}

/// Inventory counts kept in `Meta` so metrics never scan the inventory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub active: u64,
    pub retired: u64,
}

/// The answer kept for an idempotency key, so a retry returns the first answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredAnswer {
    request_hash: Option<String>,
    index: u64,
    result: Result<Applied, Rejection>,
}

pub fn apply(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
) -> Result<Outcome, CoreError> {
    let idem_key = proposal
        .idempotency_key
        .as_deref()
        .map(|k| keys::index_key(&proposal.actor.id, k));
    if let Some(key) = &idem_key {
        if let Some(bytes) = store.get(Keyspace::Idempotency, key)? {
            let stored: StoredAnswer = decode_record("idempotency answer", &bytes)?;
            if stored.request_hash == proposal.request_hash {
                return Ok(Outcome {
                    index: stored.index,
                    result: stored.result,
                    replayed: true,
                });
            }
            let rejection = Rejection::new(
                RejectCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a different request",
            );
            return finish(store, entry, proposal, Err(rejection), None);
        }
    }

    let result = match &proposal.command {
        Command::Initialize { root_token } => initialize(store, root_token)?,
        _ if !is_initialized(store)? => Err(Rejection::new(
            RejectCode::NotInitialized,
            "the cluster is not initialised: POST /v1/sys/init",
        )),
        Command::ImportCertificate(import) => import_certificate(store, entry, proposal, import)?,
        Command::RetireCertificate { id, .. } => retire_certificate(store, entry, proposal, id)?,
        Command::Noop => Ok(Applied::Noop),
    };
    finish(store, entry, proposal, result, idem_key)
}

/// Audit, remember the idempotent answer and advance the state digest: the same for every command.
fn finish(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    result: Result<Applied, Rejection>,
    idem_key: Option<Vec<u8>>,
) -> Result<Outcome, CoreError> {
    let outcome_label = match &result {
        Ok(_) => "ok".to_string(),
        Err(r) => format!("rejected:{}", r.code.as_str()),
    };
    let record = audit::append(
        store,
        AuditEntry {
            log_index: entry.index,
            at: proposal.proposed_at,
            actor: &proposal.actor.id,
            actor_name: &proposal.actor.name,
            action: proposal.command.action(),
            object: proposal.command.object(),
            outcome: outcome_label,
        },
    )?;
    if let Some(key) = idem_key {
        let stored = StoredAnswer {
            request_hash: proposal.request_hash.clone(),
            index: entry.index,
            result: result.clone(),
        };
        store.put(Keyspace::Idempotency, &key, &encode_record(&stored));
    }
    advance_digest(store, entry, proposal, &record.hash)?;
    Ok(Outcome {
        index: entry.index,
        result,
        replayed: false,
    })
}

/// `digest_n = SHA-256(digest_{n-1} || index || SHA-256(proposal) || audit hash)`: equal digests on two
/// nodes mean they applied the same commands with the same results, without scanning any state.
fn advance_digest(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    audit_hash: &str,
) -> Result<(), CoreError> {
    let prev = state_digest(store)?;
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(entry.index.to_be_bytes());
    hasher.update(Sha256::digest(proposal.encode()));
    hasher.update(audit_hash.as_bytes());
    let next = hex::encode(hasher.finalize());
    store.put(Keyspace::Meta, meta::STATE_DIGEST, &encode_record(&next));
    Ok(())
}

pub fn state_digest(store: &impl StateRead) -> Result<String, CoreError> {
    match store.get(Keyspace::Meta, meta::STATE_DIGEST)? {
        Some(bytes) => decode_record("state digest", &bytes),
        None => Ok(audit::GENESIS_HASH.to_string()),
    }
}

pub fn is_initialized(store: &impl StateRead) -> Result<bool, CoreError> {
    Ok(store.get(Keyspace::Meta, meta::INITIALIZED)?.is_some())
}

pub fn counts(store: &impl StateRead) -> Result<Counts, CoreError> {
    match store.get(Keyspace::Meta, meta::COUNTS)? {
        Some(bytes) => decode_record("counts", &bytes),
        None => Ok(Counts::default()),
    }
}

fn put_counts(store: &mut impl StateStore, counts: Counts) {
    store.put(Keyspace::Meta, meta::COUNTS, &encode_record(&counts));
}

fn initialize(
    store: &mut impl StateStore,
    root: &TokenRecord,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if is_initialized(store)? {
        return Ok(Err(Rejection::new(
            RejectCode::AlreadyInitialized,
            "the cluster is already initialised",
        )));
    }
    store.put(
        Keyspace::Meta,
        meta::INITIALIZED,
        &encode_record(&root.created_at),
    );
    put_token(store, root);
    Ok(Ok(Applied::Initialized {
        root_token_id: root.id.clone(),
    }))
}

fn put_token(store: &mut impl StateStore, token: &TokenRecord) {
    store.put(Keyspace::Tokens, token.id.as_bytes(), &encode_record(token));
    store.put(
        Keyspace::TokenBySecret,
        token.secret_sha256.as_bytes(),
        token.id.as_bytes(),
    );
}

/// Look a bearer secret's hash up: the authentication read path.
pub fn token_by_secret_hash(
    store: &impl StateRead,
    secret_sha256: &str,
) -> Result<Option<TokenRecord>, CoreError> {
    let Some(id) = store.get(Keyspace::TokenBySecret, secret_sha256.as_bytes())? else {
        return Ok(None);
    };
    let Some(bytes) = store.get(Keyspace::Tokens, &id)? else {
        return Err(CoreError::Invariant(
            "token index points at a missing token".into(),
        ));
    };
    decode_record("token", &bytes).map(Some)
}

pub fn get_certificate(
    store: &impl StateRead,
    id: &str,
) -> Result<Option<CertificateRecord>, CoreError> {
    store
        .get(Keyspace::Certificates, id.as_bytes())?
        .map(|b| decode_record("certificate", &b))
        .transpose()
}

fn forbidden_unless(actor: &Principal, roles: &[Role], zone: &str) -> Option<Rejection> {
    if roles.iter().any(|r| actor.has_role(*r)) && actor.covers_zone(zone) {
        None
    } else {
        Some(Rejection::new(
            RejectCode::Forbidden,
            format!("principal {} may not change zone {zone}", actor.id),
        ))
    }
}

fn import_certificate(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    import: &ImportCertificate,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = forbidden_unless(
        &proposal.actor,
        &[Role::Requester, Role::ZoneOwner],
        &import.zone,
    ) {
        return Ok(Err(rejection));
    }
    let fingerprint = &import.details.fingerprint_sha256;
    if let Some(existing_id) = store.get(Keyspace::ByFingerprint, fingerprint.as_bytes())? {
        let existing_id = String::from_utf8(existing_id)
            .map_err(|e| CoreError::corrupt("fingerprint index", e))?;
        let Some(mut record) = get_certificate(store, &existing_id)? else {
            return Err(CoreError::Invariant(format!(
                "fingerprint index points at missing certificate {existing_id}"
            )));
        };
        let mut changed = false;
        if record.status == CertificateStatus::Retired {
            // Importing a retired certificate again brings it back under management.
            unindex(store, &record);
            record.status = CertificateStatus::Active;
            record.retired_at = None;
            record.owner = import.owner.clone();
            record.zone = import.zone.clone();
            record.tags = import.tags.clone();
            let mut c = counts(store)?;
            c.retired = c.retired.saturating_sub(1);
            c.active += 1;
            put_counts(store, c);
            changed = true;
        }
        if record.private_key.is_none() && import.private_key.is_some() {
            record.private_key = import.private_key.clone();
            changed = true;
        }
        if changed {
            record.generation += 1;
            record.revision = entry.index;
            record.updated_at = proposal.proposed_at;
            write_certificate(store, &record);
        }
        return Ok(Ok(Applied::CertificateImported {
            record: Box::new(record),
            created: false,
        }));
    }
    if get_certificate(store, &import.id)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("certificate id {} is taken", import.id),
        )));
    }
    let record = CertificateRecord {
        id: import.id.clone(),
        details: import.details.clone(),
        chain_pem: import.chain_pem.clone(),
        owner: import.owner.clone(),
        zone: import.zone.clone(),
        tags: import.tags.clone(),
        status: CertificateStatus::Active,
        private_key: import.private_key.clone(),
        created_at: proposal.proposed_at,
        updated_at: proposal.proposed_at,
        retired_at: None,
        generation: 1,
        revision: entry.index,
    };
    store.put(
        Keyspace::ByFingerprint,
        fingerprint.as_bytes(),
        record.id.as_bytes(),
    );
    write_certificate(store, &record);
    let mut c = counts(store)?;
    c.active += 1;
    put_counts(store, c);
    Ok(Ok(Applied::CertificateImported {
        record: Box::new(record),
        created: true,
    }))
}

fn retire_certificate(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    id: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let Some(mut record) = get_certificate(store, id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no certificate with id {id}"),
        )));
    };
    if let Some(rejection) = forbidden_unless(&proposal.actor, &[Role::ZoneOwner], &record.zone) {
        return Ok(Err(rejection));
    }
    if record.status == CertificateStatus::Retired {
        return Ok(Ok(Applied::CertificateRetired {
            record: Box::new(record),
        }));
    }
    unindex(store, &record);
    record.status = CertificateStatus::Retired;
    record.retired_at = Some(proposal.proposed_at);
    record.updated_at = proposal.proposed_at;
    record.generation += 1;
    record.revision = entry.index;
    write_certificate(store, &record);
    let mut c = counts(store)?;
    c.active = c.active.saturating_sub(1);
    c.retired += 1;
    put_counts(store, c);
    Ok(Ok(Applied::CertificateRetired {
        record: Box::new(record),
    }))
}

/// Write the record and every secondary index entry that its current fields call for.
fn write_certificate(store: &mut impl StateStore, record: &CertificateRecord) {
    store.put(
        Keyspace::Certificates,
        record.id.as_bytes(),
        &encode_record(record),
    );
    for (ks, key) in index_entries(record) {
        store.put(ks, &key, b"");
    }
}

/// Remove the index entries of the record as stored, before its fields change.
fn unindex(store: &mut impl StateStore, record: &CertificateRecord) {
    for (ks, key) in index_entries(record) {
        store.delete(ks, &key);
    }
}

fn index_entries(record: &CertificateRecord) -> Vec<(Keyspace, Vec<u8>)> {
    let id = record.id.as_str();
    let mut entries = vec![
        (Keyspace::ByOwner, keys::index_key(&record.owner, id)),
        (Keyspace::ByZone, keys::index_key(&record.zone, id)),
        (
            Keyspace::ByIssuer,
            keys::index_key(&record.details.issuer.to_lowercase(), id),
        ),
        (
            Keyspace::ByStatus,
            keys::index_key(record.status.as_str(), id),
        ),
    ];
    // Only managed certificates are "expiring": retired ones leave the expiry index.
    if record.status == CertificateStatus::Active {
        entries.push((
            Keyspace::ByExpiry,
            keys::expiry_key(record.details.not_after, id),
        ));
    }
    let mut grams: Vec<String> = record
        .details
        .names()
        .iter()
        .flat_map(|n| keys::trigrams(n))
        .collect();
    grams.sort();
    grams.dedup();
    entries.extend(
        grams
            .into_iter()
            .map(|g| (Keyspace::ByNameTrigram, keys::index_key(&g, id))),
    );
    entries
}

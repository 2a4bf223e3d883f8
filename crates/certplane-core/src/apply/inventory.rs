//! Inventory commands: import, retire, revoke, and the secondary indexes of certificate records.

use super::{counts, forbidden_unless, get_certificate, put_counts, EntryContext};
use crate::certificate::{
    CertificateRecord, CertificateStatus, ExpiryNotice, Revocation, RevocationReason,
};
use crate::command::{Applied, ImportCertificate, Proposal, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::issuer::RevocationRecord;
use crate::keys::{self, encode_record};
use crate::policy::normalize_zone_path;
use crate::principal::Permission;
use crate::store::{Keyspace, StateRead, StateStore};
use crate::time::Timestamp;
use std::collections::BTreeSet;

/// The principal the leader's notice worker proposes expiry notices as.
pub const NOTICE_WORKER: &str = "system:notices";

pub(super) fn import_certificate(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    import: &ImportCertificate,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) =
        forbidden_unless(&proposal.actor, Permission::CertificateImport, &import.zone)
    {
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
        let indexed = Indexed::of(&record);
        if record.status == CertificateStatus::Revoked || record.revocation.is_some() {
            // A revoked certificate stays revoked (also once retired): importing it again changes
            // nothing.
            return Ok(Ok(Applied::CertificateImported {
                record: Box::new(record),
                created: false,
            }));
        }
        if record.status == CertificateStatus::Retired {
            // Importing a retired certificate again brings it back under management.
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
            indexed.rewrite(store, &record);
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
        issuance: None,
        supersedes: None,
        superseded_by: None,
        revocation: None,
        notices: expiry_notices(store, &import.zone, import.details.not_after)?,
        deployments: Vec::new(),
        renewal: None,
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

/// The certificate `id`, if it exists and the actor owns its zone; else the refusal to answer with.
fn owned_certificate(
    store: &impl StateStore,
    proposal: &Proposal,
    id: &str,
    permission: Permission,
) -> Result<Result<CertificateRecord, Rejection>, CoreError> {
    let Some(record) = get_certificate(store, id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no certificate with id {id}"),
        )));
    };
    if let Some(rejection) = forbidden_unless(&proposal.actor, permission, &record.zone) {
        return Ok(Err(rejection));
    }
    Ok(Ok(record))
}

pub(super) fn retire_certificate(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    id: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let mut record = match owned_certificate(store, proposal, id, Permission::CertificateManage)? {
        Ok(record) => record,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if record.status == CertificateStatus::Retired {
        return Ok(Ok(Applied::CertificateRetired {
            record: Box::new(record),
        }));
    }
    let was = record.status;
    let indexed = Indexed::of(&record);
    super::deployments::leave_acm(store, &mut record, proposal.proposed_at)?;
    record.status = CertificateStatus::Retired;
    record.retired_at = Some(proposal.proposed_at);
    record.updated_at = proposal.proposed_at;
    record.generation += 1;
    record.revision = entry.index;
    indexed.rewrite(store, &record);
    let mut c = counts(store)?;
    match was {
        CertificateStatus::Revoked => c.revoked = c.revoked.saturating_sub(1),
        _ => c.active = c.active.saturating_sub(1),
    }
    c.retired += 1;
    put_counts(store, c);
    Ok(Ok(Applied::CertificateRetired {
        record: Box::new(record),
    }))
}

pub(super) fn revoke_certificate(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    id: &str,
    reason: RevocationReason,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let mut record = match owned_certificate(store, proposal, id, Permission::CertificateManage)? {
        Ok(record) => record,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let Some(link) = record.issuance.clone() else {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!(
                "certificate {id} was imported, not issued by a certplane issuer; revoke it at the CA that issued it"
            ),
        )));
    };
    // Revoked once is revoked for good (retiring it afterwards keeps the revocation): revoking again
    // changes nothing, so the CRL entry keeps its date and the issuer counts it once.
    if record.status == CertificateStatus::Revoked || record.revocation.is_some() {
        return Ok(Ok(Applied::CertificateRevoked {
            record: Box::new(record),
        }));
    }
    let Some(mut issuer) = super::get_issuer(store, &link.issuer)? else {
        return Err(CoreError::Invariant(format!(
            "certificate {id} names missing issuer {}",
            link.issuer
        )));
    };
    let was = record.status;
    let indexed = Indexed::of(&record);
    super::deployments::leave_acm(store, &mut record, proposal.proposed_at)?;
    record.status = CertificateStatus::Revoked;
    record.revocation = Some(Revocation {
        at: proposal.proposed_at,
        reason,
        by: proposal.actor.id.clone(),
    });
    // AWS Private CA keeps its own revocation list: the leader's PCA worker carries the revocation
    // there (an intent), and records when the CA accepted it.
    if let Some(aws) = record.issuance.as_mut().and_then(|l| l.aws.as_mut()) {
        aws.revocation_pending = true;
        store.put(
            Keyspace::AwsQueue,
            &super::aws::revocation_key(&record.id),
            b"",
        );
    }
    record.updated_at = proposal.proposed_at;
    record.generation += 1;
    record.revision = entry.index;
    indexed.rewrite(store, &record);
    let serial = record.details.serial.clone();
    store.put(
        Keyspace::Revocations,
        &keys::index_key(&issuer.name, &serial),
        &encode_record(&RevocationRecord {
            certificate_id: record.id.clone(),
            serial,
            revoked_at: proposal.proposed_at,
            reason,
        }),
    );
    issuer.revoked_count += 1;
    issuer.crl_number += 1;
    issuer.revision = entry.index;
    super::issuers::put_issuer(store, &issuer);
    let mut c = counts(store)?;
    match was {
        CertificateStatus::Active => c.active = c.active.saturating_sub(1),
        CertificateStatus::Retired => c.retired = c.retired.saturating_sub(1),
        CertificateStatus::Revoked => {}
    }
    c.revoked += 1;
    put_counts(store, c);
    Ok(Ok(Applied::CertificateRevoked {
        record: Box::new(record),
    }))
}

pub(super) fn export_private_key(
    store: &mut impl StateStore,
    proposal: &Proposal,
    id: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let record = match owned_certificate(store, proposal, id, Permission::KeyExport)? {
        Ok(record) => record,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if record.private_key.is_none() {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("certplane holds no private key for certificate {id}"),
        )));
    }
    Ok(Ok(Applied::KeyExportAllowed { id: id.to_string() }))
}

/// The notices a certificate of `zone` expiring at `not_after` is due, from the zone's effective
/// thresholds. Zone names outside the zone tree (older imports) get the built-in thresholds.
pub(super) fn expiry_notices(
    store: &impl StateRead,
    zone: &str,
    not_after: Timestamp,
) -> Result<Vec<ExpiryNotice>, CoreError> {
    Ok(expiry_notices_under(
        &certificate_policy(store, zone)?,
        not_after,
    ))
}

/// The policy a certificate in `zone` lives under: its zone's effective policy, or the defaults for
/// a zone name that is not a zone path (an imported certificate's, say).
pub(super) fn certificate_policy(
    store: &impl StateRead,
    zone: &str,
) -> Result<crate::policy::EffectivePolicy, CoreError> {
    Ok(if normalize_zone_path(zone).ok().as_deref() == Some(zone) {
        crate::zone::effective_for(store, zone)?.0
    } else {
        crate::policy::effective(&[])
    })
}

/// The expiry notices of a certificate expiring at `not_after` under `policy`.
pub(super) fn expiry_notices_under(
    policy: &crate::policy::EffectivePolicy,
    not_after: Timestamp,
) -> Vec<ExpiryNotice> {
    let mut out = Vec::new();
    for (threshold, span) in [
        ("notify_before", policy.notify_before.value),
        ("renew_before", policy.renew_before.value),
    ] {
        out.push(ExpiryNotice {
            threshold: threshold.to_string(),
            before_s: span.0,
            due_at: Timestamp(not_after.0.saturating_sub(span.0.saturating_mul(1000))),
            sent_at: None,
        });
    }
    out
}

/// The leader's notice worker: an expiry threshold was reached.
pub(super) fn notify_expiring(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    id: &str,
    threshold: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if proposal.actor.id != NOTICE_WORKER {
        return Ok(Err(Rejection::new(
            RejectCode::Forbidden,
            "only the notice worker sends expiry notices",
        )));
    }
    let Some(mut record) = get_certificate(store, id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no certificate with id {id}"),
        )));
    };
    let Some(pos) = record
        .notices
        .iter()
        .position(|n| n.threshold == threshold && n.sent_at.is_none())
    else {
        return Ok(Err(Rejection::new(
            RejectCode::StaleGeneration,
            format!("certificate {id} has no pending {threshold} notice"),
        )));
    };
    if !record.is_live() {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("certificate {id} is no longer managed"),
        )));
    }
    if proposal.proposed_at < record.notices[pos].due_at {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("the {threshold} notice of certificate {id} is not due yet"),
        )));
    }
    let indexed = Indexed::of(&record);
    record.notices[pos].sent_at = Some(proposal.proposed_at);
    record.revision = entry.index;
    indexed.rewrite(store, &record);
    Ok(Ok(Applied::ExpiryNoticed {
        record: Box::new(record),
        threshold: threshold.to_string(),
    }))
}

/// Write the record and every secondary index entry that its current fields call for.
pub(super) fn write_certificate(store: &mut impl StateStore, record: &CertificateRecord) {
    store.put(
        Keyspace::Certificates,
        record.id.as_bytes(),
        &encode_record(record),
    );
    for (ks, key) in index_entries(record) {
        store.put(ks, &key, b"");
    }
}

/// The secondary index entries of a certificate as stored, taken before its fields change. Writing
/// the changed record through [`Indexed::rewrite`] then deletes only the entries it no longer has and
/// adds only the new ones: a renewal marks the superseded certificate without deleting and writing
/// back its dozens of unchanged name trigrams and other index keys.
pub(super) struct Indexed(BTreeSet<(Keyspace, Vec<u8>)>);

impl Indexed {
    pub(super) fn of(record: &CertificateRecord) -> Self {
        Indexed(index_entries(record).into_iter().collect())
    }

    /// Write the record, then bring its index entries from what they were to what its fields call
    /// for now.
    pub(super) fn rewrite(self, store: &mut impl StateStore, record: &CertificateRecord) {
        store.put(
            Keyspace::Certificates,
            record.id.as_bytes(),
            &encode_record(record),
        );
        let now: BTreeSet<(Keyspace, Vec<u8>)> = index_entries(record).into_iter().collect();
        for (ks, key) in self.0.difference(&now) {
            store.delete(*ks, key);
        }
        for (ks, key) in now.difference(&self.0) {
            store.put(*ks, key, b"");
        }
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
    if record.is_live() {
        for notice in record.notices.iter().filter(|n| n.sent_at.is_none()) {
            entries.push((
                Keyspace::NoticeQueue,
                keys::notice_key(notice.due_at, id, &notice.threshold),
            ));
        }
        if let Some(schedule) = record.renewal.as_ref().filter(|s| s.request_id.is_none()) {
            entries.push((
                Keyspace::RenewalQueue,
                keys::expiry_key(schedule.due_at, id),
            ));
        }
    }
    let live = record.is_live();
    for (i, d) in record.deployments.iter().enumerate() {
        if d.state.is_queued(live) {
            entries.push((
                Keyspace::DeploymentQueue,
                keys::notice_key(d.next_attempt_at, id, &i.to_string()),
            ));
        }
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

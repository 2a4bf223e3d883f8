//! AWS Private CA issuance and revocation (Pattern 2), as steps of the request and certificate
//! lifecycles. The leader's PCA worker performs the calls; these commands record them.
//!
//! ```text
//!  approved ──BeginAwsIssuance──► issuing {token}            (intent: the call may now happen)
//!           ──RecordAwsIssuance─► issuing {token, arn}       (AWS answered with the ARN)
//!           ──CompleteIssuance──► issued                     (the certificate fetched and checked)
//!  revoked {revocation_pending} ──RecordAwsRevocation──► revoked   (the CA accepted it)
//!  acm-native, next_check_at ──RecordAcmCheck──► status noted, or ACM's renewal recorded as the
//!                                                successor (same ARN, new serial)
//! ```
//!
//! Every try of the issuance call sends the same token, so AWS answers a repeated call with the
//! certificate it already issued; the replicated state remembers the token and the ARN beyond the
//! hour AWS does (DESIGN.md section 3).

use super::inventory::{write_certificate, Indexed};
use super::requests::{get_request, write_request_record, ISSUANCE_WORKER};
use super::{get_certificate, EntryContext};
use crate::certificate::CertificateRecord;
use crate::command::{Applied, Proposal, RecordAcmCheck, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::issuer::PcaMode;
use crate::request::{aws_idempotency_token, AwsIssuance, RequestRecord, RequestState};
use crate::store::{Keyspace, StateStore};
use crate::time::Timestamp;

/// AwsQueue key of a pending revocation.
pub fn revocation_key(certificate_id: &str) -> Vec<u8> {
    crate::keys::index_key("revoke", certificate_id)
}

fn worker_only(proposal: &Proposal) -> Option<Rejection> {
    (proposal.actor.id != ISSUANCE_WORKER).then(|| {
        Rejection::new(
            RejectCode::Forbidden,
            "only the issuance worker records AWS issuance steps",
        )
    })
}

fn target(
    store: &impl crate::store::StateRead,
    request_id: &str,
    generation: u64,
    want: RequestState,
) -> Result<Result<RequestRecord, Rejection>, CoreError> {
    let Some(request) = get_request(store, request_id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no request with id {request_id}"),
        )));
    };
    if request.state != want || request.generation != generation {
        return Ok(Err(Rejection::new(
            RejectCode::StaleGeneration,
            format!(
                "request {request_id} is {} at generation {}; the step for generation {generation} is ignored",
                request.state.as_str(),
                request.generation
            ),
        )));
    }
    Ok(Ok(request))
}

pub(super) fn begin_issuance(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    request_id: &str,
    generation: u64,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = worker_only(proposal) {
        return Ok(Err(rejection));
    }
    let old = match target(store, request_id, generation, RequestState::Approved)? {
        Ok(r) => r,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let Some(settings) = super::get_issuer(store, &old.issuer)?.and_then(|i| i.acm_pca) else {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            format!(
                "issuer {} of request {request_id} is not an ACM PCA issuer",
                old.issuer
            ),
        )));
    };
    let mut request = old.clone();
    request.state = RequestState::Issuing;
    request.aws = Some(AwsIssuance {
        ca_arn: settings.ca_arn,
        mode: settings.mode,
        token: aws_idempotency_token(&request.id),
        started_at: proposal.proposed_at,
        certificate_arn: None,
        aws_request_id: None,
    });
    request.updated_at = proposal.proposed_at;
    request.generation += 1;
    request.revision = entry.index;
    write_request_record(store, &old, &request);
    Ok(Ok(Applied::RequestUpdated {
        request: Box::new(request),
    }))
}

pub(super) fn record_issuance(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    request_id: &str,
    generation: u64,
    certificate_arn: &str,
    aws_request_id: Option<&str>,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = worker_only(proposal) {
        return Ok(Err(rejection));
    }
    let old = match target(store, request_id, generation, RequestState::Issuing)? {
        Ok(r) => r,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let mut request = old.clone();
    let Some(aws) = request.aws.as_mut() else {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            format!("request {request_id} has no AWS call recorded"),
        )));
    };
    match &aws.certificate_arn {
        // One token, one certificate: AWS never answers a repeated call with another ARN.
        Some(known) if known != certificate_arn => {
            return Ok(Err(Rejection::new(
                RejectCode::Conflict,
                format!(
                    "request {request_id} already has certificate {known}; AWS answered {certificate_arn}"
                ),
            )))
        }
        _ => {}
    }
    if certificate_arn.is_empty() || certificate_arn.len() > 2048 {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            "the certificate ARN must be 1-2048 characters",
        )));
    }
    aws.certificate_arn = Some(certificate_arn.to_string());
    aws.aws_request_id = aws_request_id.map(str::to_string);
    request.updated_at = proposal.proposed_at;
    request.generation += 1;
    request.revision = entry.index;
    write_request_record(store, &old, &request);
    Ok(Ok(Applied::RequestUpdated {
        request: Box::new(request),
    }))
}

pub(super) fn record_revocation(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    certificate_id: &str,
    aws_request_id: Option<&str>,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = worker_only(proposal) {
        return Ok(Err(rejection));
    }
    let Some(mut record) = get_certificate(store, certificate_id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no certificate with id {certificate_id}"),
        )));
    };
    let Some(aws) = record.issuance.as_mut().and_then(|l| l.aws.as_mut()) else {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            format!("certificate {certificate_id} was not issued by AWS"),
        )));
    };
    if !aws.revocation_pending {
        return Ok(Err(Rejection::new(
            RejectCode::StaleGeneration,
            format!("certificate {certificate_id} has no revocation waiting for the CA"),
        )));
    }
    aws.revocation_pending = false;
    aws.revocation_request_id = aws_request_id.map(str::to_string);
    record.updated_at = proposal.proposed_at;
    record.generation += 1;
    record.revision = entry.index;
    store.delete(Keyspace::AwsQueue, &revocation_key(certificate_id));
    // The record's indexes depend on status, owner, zone and names, none of which changed.
    super::inventory::write_certificate(store, &record);
    Ok(Ok(Applied::CertificateRevoked {
        record: Box::new(record),
    }))
}

/// AwsQueue keys of acm-native certificates to check, by time: `track` ++ 0 ++ due ms (8 bytes BE)
/// ++ certificate id.
pub const TRACK_PREFIX: &[u8] = b"track\0";

pub fn track_key(due: crate::time::Timestamp, certificate_id: &str) -> Vec<u8> {
    let mut key = TRACK_PREFIX.to_vec();
    key.extend_from_slice(&(due.millis().max(0) as u64).to_be_bytes());
    key.extend_from_slice(certificate_id.as_bytes());
    key
}

/// Start following an acm-native certificate: due for its first check at once.
pub(super) fn track(store: &mut impl StateStore, record: &mut CertificateRecord, at: Timestamp) {
    if let Some(aws) = record.issuance.as_mut().and_then(|l| l.aws.as_mut()) {
        if aws.mode == PcaMode::AcmNative {
            aws.next_check_at = Some(at);
            store.put(Keyspace::AwsQueue, &track_key(at, &record.id), b"");
        }
    }
}

fn untrack(store: &mut impl StateStore, record: &mut CertificateRecord) {
    if let Some(aws) = record.issuance.as_mut().and_then(|l| l.aws.as_mut()) {
        if let Some(due) = aws.next_check_at.take() {
            store.delete(Keyspace::AwsQueue, &track_key(due, &record.id));
        }
    }
}

pub(super) fn record_acm_check(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    check: &RecordAcmCheck,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = worker_only(proposal) {
        return Ok(Err(rejection));
    }
    let id = &check.certificate_id;
    let Some(mut record) = get_certificate(store, id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no certificate with id {id}"),
        )));
    };
    let native = record
        .issuance
        .as_ref()
        .and_then(|l| l.aws.as_ref())
        .is_some_and(|a| a.mode == PcaMode::AcmNative);
    if !native {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            format!("certificate {id} is not an acm-native certificate"),
        )));
    }
    if record.generation != check.generation || record.superseded_by.is_some() {
        return Ok(Err(Rejection::new(
            RejectCode::StaleGeneration,
            format!(
                "certificate {id} is at generation {}; the check of generation {} is ignored",
                record.generation, check.generation
            ),
        )));
    }
    let mut successor = None;
    if let Some(renewed) = &check.renewed {
        let mut old_names = record.details.sans.clone();
        let mut new_names = renewed.details.sans.clone();
        old_names.sort();
        new_names.sort();
        if old_names != new_names || renewed.details.common_name != record.details.common_name {
            return Ok(Err(Rejection::new(
                RejectCode::InvalidArgument,
                format!("ACM's renewal of {id} names other names than the certificate it renews"),
            )));
        }
        if store
            .get(
                Keyspace::ByFingerprint,
                renewed.details.fingerprint_sha256.as_bytes(),
            )?
            .is_some()
            || get_certificate(store, &renewed.certificate_id)?.is_some()
        {
            return Ok(Err(Rejection::new(
                RejectCode::Conflict,
                format!(
                    "certificate {} is already in the inventory",
                    renewed.certificate_id
                ),
            )));
        }
        successor = Some(renewed);
    }
    let indexed = Indexed::of(&record);
    untrack(store, &mut record);
    if let Some(aws) = record.issuance.as_mut().and_then(|l| l.aws.as_mut()) {
        aws.acm_status = Some(check.status.clone());
        aws.renewal_status = check.renewal_status.clone();
        aws.checked_at = Some(proposal.proposed_at);
    }
    record.updated_at = proposal.proposed_at;
    record.generation += 1;
    record.revision = entry.index;
    let successor = match successor {
        None => {
            if record.status == crate::certificate::CertificateStatus::Active {
                track(store, &mut record, check.next_check_at);
            }
            indexed.rewrite(store, &record);
            None
        }
        Some(renewed) => {
            let mut next = record.clone();
            next.id = renewed.certificate_id.clone();
            next.details = renewed.details.clone();
            next.chain_pem = renewed.chain_pem.clone();
            next.created_at = proposal.proposed_at;
            next.generation = 1;
            next.supersedes = Some(record.id.clone());
            next.superseded_by = None;
            next.revocation = None;
            next.deployments = Vec::new();
            next.renewal = None;
            next.notices =
                super::inventory::expiry_notices(store, &next.zone, next.details.not_after)?;
            if let Some(aws) = next.issuance.as_mut().and_then(|l| l.aws.as_mut()) {
                aws.revocation_pending = false;
                aws.revocation_request_id = None;
            }
            track(store, &mut next, check.next_check_at);
            record.superseded_by = Some(next.id.clone());
            indexed.rewrite(store, &record);
            store.put(
                Keyspace::ByFingerprint,
                next.details.fingerprint_sha256.as_bytes(),
                next.id.as_bytes(),
            );
            write_certificate(store, &next);
            if let Some(link) = &next.issuance {
                if let Some(mut issuer) = super::get_issuer(store, &link.issuer)? {
                    store.put(
                        Keyspace::IssuedSerials,
                        &crate::keys::index_key(&issuer.name, &next.details.serial),
                        &crate::keys::encode_record(&crate::issuer::IssuedSerial {
                            certificate_id: next.id.clone(),
                            request_id: link.request_id.clone(),
                            issued_at: proposal.proposed_at,
                        }),
                    );
                    issuer.issued_count += 1;
                    issuer.revision = entry.index;
                    super::issuers::put_issuer(store, &issuer);
                }
            }
            let mut c = super::counts(store)?;
            c.active += 1;
            super::put_counts(store, c);
            Some(Box::new(next))
        }
    };
    Ok(Ok(Applied::AcmChecked {
        record: Box::new(record),
        successor,
    }))
}

//! Request commands: record and evaluate a request (intake), then apply the issuance worker's outcome.
//!
//! The policy verdict is reached here, inside `apply`, against the zone policies as committed: a policy
//! change that lands between a client's dry run and its submission is honoured, and every node reaches
//! the same verdict (DESIGN.md section 2).

use super::inventory::{write_certificate, Indexed};
use super::issuers::{get_issuer, put_issuer};
use super::{counts, forbidden_unless, get_certificate, put_counts, EntryContext};
use crate::certificate::{AwsIssued, CertificateRecord, CertificateStatus, IssuanceLink};
use crate::command::{Applied, CompleteIssuance, Proposal, Rejection, SubmitRequest};
use crate::error::{CoreError, RejectCode};
use crate::issuer::IssuedSerial;
use crate::issuer::PcaMode;
use crate::keys::{self, decode_record, encode_record};
use crate::names::San;
use crate::policy::{self, RequestFacts, Violation};
use crate::policy::{ApprovalStage, Span};
use crate::principal::Permission;
use crate::request::{ApprovalProgress, KeySource, KeySpec, RequestRecord, RequestState};
use crate::store::{Keyspace, StateRead, StateStore};
use crate::time::Timestamp;
use crate::zone;

/// The principal the leader's issuance worker proposes outcomes as.
pub const ISSUANCE_WORKER: &str = "system:issuance";

pub fn get_request(store: &impl StateRead, id: &str) -> Result<Option<RequestRecord>, CoreError> {
    store
        .get(Keyspace::Requests, id.as_bytes())?
        .map(|b| decode_record("request", &b))
        .transpose()
}

/// Index entries of a request: `kind ++ 0 ++ value ++ 0 ++ id`.
pub fn request_index_key(kind: &str, value: &str, id: &str) -> Vec<u8> {
    keys::index_key(&format!("{kind}\0{value}"), id)
}

fn request_index_entries(record: &RequestRecord) -> Vec<Vec<u8>> {
    let mut entries = vec![
        request_index_key("state", record.state.as_str(), &record.id),
        request_index_key("zone", &record.spec.zone, &record.id),
        request_index_key("requester", &record.requested_by, &record.id),
    ];
    if let Some(owner) = &record.spec.owner {
        entries.push(request_index_key("owner", owner, &record.id));
    }
    if let (RequestState::PendingApproval, Some(progress)) = (record.state, &record.approval) {
        entries.push(request_index_key(
            APPROVAL_DEADLINE_INDEX,
            &deadline_value(progress.expires_at),
            &record.id,
        ));
    }
    entries
}

/// Request index kind of pending requests by approval deadline, for the leader's approval worker.
pub const APPROVAL_DEADLINE_INDEX: &str = "approval_deadline";

/// A deadline as an index value that sorts in time order (milliseconds, zero-padded).
pub fn deadline_value(at: Timestamp) -> String {
    format!("{:020}", at.0.max(0))
}

/// Issuance-queue key: the log index at which the request was approved (8 bytes, big-endian), then
/// its id. New intents sort after older ones, so the leader's worker reads only what is new since its
/// last pass instead of walking past every completed (deleted) entry again.
pub fn issuance_queue_key(queued_at: u64, id: &str) -> Vec<u8> {
    let mut key = queued_at.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

fn write_request(store: &mut impl StateStore, record: &RequestRecord) {
    rewrite_request(store, &[], record);
}

/// Write `record` over a stored request whose index entries were `before`: only the entries that
/// changed are deleted or added.
fn rewrite_request(store: &mut impl StateStore, before: &[Vec<u8>], record: &RequestRecord) {
    let now = request_index_entries(record);
    for key in before.iter().filter(|k| !now.contains(k)) {
        store.delete(Keyspace::RequestIndex, key);
    }
    // An AWS issuance stays queued while `issuing`: a new leader resumes it from the last step.
    store.put(
        Keyspace::Requests,
        record.id.as_bytes(),
        &encode_record(record),
    );
    for key in now.iter().filter(|k| !before.contains(k)) {
        store.put(Keyspace::RequestIndex, key, b"");
    }
    let queue_key = issuance_queue_key(record.queued_at, &record.id);
    if matches!(record.state, RequestState::Approved | RequestState::Issuing) {
        store.put(Keyspace::IssuanceQueue, &queue_key, record.id.as_bytes());
    } else {
        store.delete(Keyspace::IssuanceQueue, &queue_key);
    }
}

/// Replace `old` by `new` (same id): the new record, with the index entries that changed.
pub(crate) fn write_request_record(
    store: &mut impl StateStore,
    old: &RequestRecord,
    new: &RequestRecord,
) {
    rewrite_request(store, &request_index_entries(old), new);
}

/// The approval the zone asks for, from its effective policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPolicy {
    pub required: bool,
    pub stages: Vec<ApprovalStage>,
    pub timeout: Span,
    pub renewal_skips: bool,
}

/// What [`evaluate_request`] found: the resolved issuer, every violation, the zone versions evaluated
/// (root first) and the approval the zone requires.
pub type Evaluation = (String, Vec<Violation>, Vec<(String, u64)>, ApprovalPolicy);

/// Every reason the request breaks policy, as the dry run (`POST /v1/zones/{path}/evaluate`) and the
/// real submission both see it.
pub fn evaluate_request(
    store: &impl StateRead,
    spec: &crate::request::RequestSpec,
) -> Result<Evaluation, CoreError> {
    evaluate_request_under(store, spec, zone::effective_for(store, &spec.zone)?)
}

/// [`evaluate_request`] with the zone's effective policy and versions already read.
fn evaluate_request_under(
    store: &impl StateRead,
    spec: &crate::request::RequestSpec,
    (effective, versions): (policy::EffectivePolicy, Vec<(String, u64)>),
) -> Result<Evaluation, CoreError> {
    let issuer = spec
        .issuer
        .clone()
        .unwrap_or_else(|| effective.default_issuer.value.clone());
    let facts = RequestFacts {
        zone: spec.zone.clone(),
        common_name: spec.common_name.clone(),
        sans: spec.sans.clone(),
        key: spec.key_facts,
        validity: spec.validity,
        issuer: issuer.clone(),
        owner: spec.owner.clone(),
        tags: spec.tags.clone(),
    };
    let mut violations = policy::evaluate(&effective, &facts);
    match get_issuer(store, &issuer)? {
        None => violations.push(Violation {
            rule: "issuer".into(),
            zone: "(system)".into(),
            value: issuer.clone(),
            message: format!("no issuer named {issuer} is configured"),
        }),
        Some(record) => {
            if let Some(pca) = &record.acm_pca {
                for message in pca_mismatches(pca.mode, spec) {
                    violations.push(Violation {
                        rule: "issuer".into(),
                        zone: "(system)".into(),
                        value: issuer.clone(),
                        message,
                    });
                }
            }
        }
    }
    let approval = ApprovalPolicy {
        required: effective.approval_required.value || !effective.approval_stages.value.is_empty(),
        stages: if effective.approval_stages.value.is_empty() {
            vec![ApprovalStage::single()]
        } else {
            effective.approval_stages.value.clone()
        },
        timeout: effective.approval_timeout.value,
        renewal_skips: effective.renewal_skips_approval.value,
    };
    Ok((issuer, violations, versions, approval))
}

/// Why a request's key cannot go to an ACM PCA issuer in `mode`, if it cannot: `csr` mode signs the
/// requester's CSR; `acm-native` has ACM generate the key, of a type ACM offers.
fn pca_key_mismatch(mode: PcaMode, key: &KeySource) -> Option<String> {
    match (mode, key) {
        (PcaMode::Csr, KeySource::Csr { .. }) => None,
        (PcaMode::Csr, KeySource::Generate { .. }) => Some(
            "this ACM PCA issuer signs CSRs (csr mode): send a CSR; the key stays with the requester"
                .into(),
        ),
        (PcaMode::AcmNative, KeySource::Csr { .. }) => Some(
            "this ACM PCA issuer is acm-native: ACM generates and keeps the key, so send a key spec, not a CSR"
                .into(),
        ),
        (PcaMode::AcmNative, KeySource::Generate { spec }) => match acm_key_algorithm(*spec) {
            Some(_) => None,
            None => Some(
                "ACM generates RSA 2048, ECDSA P-256 or ECDSA P-384 keys only".into(),
            ),
        },
    }
}

/// The validity ACM gives every private certificate it requests from a CA (13 months).
pub const ACM_NATIVE_VALIDITY_SECS: i64 = 395 * 86_400;

/// Everything about `spec` an ACM PCA issuer in `mode` cannot do as asked.
fn pca_mismatches(mode: PcaMode, spec: &crate::request::RequestSpec) -> Vec<String> {
    let mut out: Vec<String> = pca_key_mismatch(mode, &spec.key).into_iter().collect();
    if mode == PcaMode::AcmNative {
        if spec.sans.iter().any(|s| matches!(s, San::Ip(_))) {
            out.push("ACM certificates carry DNS names only, not IP addresses".into());
        }
        match &spec.common_name {
            Some(cn) if !spec.sans.iter().any(|s| s.to_string() == *cn) => out.push(format!(
                "ACM puts the domain name among the SANs: add {cn} to the SANs"
            )),
            None => out.push(
                "ACM names a certificate by its domain name: set the common name (and list it among the SANs)"
                    .into(),
            ),
            _ => {}
        }
        if spec.validity.0 < ACM_NATIVE_VALIDITY_SECS {
            out.push(format!(
                "ACM issues private certificates for {ACM_NATIVE_VALIDITY_SECS} s (395 days) and no shorter: ask for at least that"
            ));
        }
    }
    out
}

/// ACM's name for a key type it can generate (RequestCertificate `KeyAlgorithm`).
pub fn acm_key_algorithm(spec: KeySpec) -> Option<&'static str> {
    match spec {
        KeySpec::Rsa { bits: 2048 } => Some("RSA_2048"),
        KeySpec::EcdsaP256 => Some("EC_prime256v1"),
        KeySpec::EcdsaP384 => Some("EC_secp384r1"),
        _ => None,
    }
}

pub(super) fn submit_request(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    submit: &SubmitRequest,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let spec = &submit.spec;
    if let Some(rejection) =
        forbidden_unless(&proposal.actor, Permission::CertificateRequest, &spec.zone)
    {
        return Ok(Err(rejection));
    }
    if zone::get_zone(store, &spec.zone)?.is_none() {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("zone {} does not exist", spec.zone),
        )));
    }
    if get_request(store, &submit.id)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("request id {} is taken", submit.id),
        )));
    }
    // The certificate a renewal renews, read once for every check below and for the renewal
    // schedule it leaves; nothing in between writes it.
    let renewed = match &spec.renewal_of {
        Some(old) => get_certificate(store, old)?,
        None => None,
    };
    if let Some(old) = &spec.renewal_of {
        match &renewed {
            None => {
                return Ok(Err(Rejection::new(
                    RejectCode::NotFound,
                    format!("no certificate with id {old} to renew"),
                )))
            }
            Some(cert) => {
                // Issuing the renewal changes the old certificate (it becomes superseded), so the
                // requester must also be allowed in the zone the old certificate lives in.
                if let Some(rejection) =
                    forbidden_unless(&proposal.actor, Permission::CertificateRequest, &cert.zone)
                {
                    return Ok(Err(rejection));
                }
                if let Some(newer) = &cert.superseded_by {
                    return Ok(Err(Rejection::new(
                        RejectCode::Conflict,
                        format!("certificate {old} was already renewed by {newer}"),
                    )));
                }
            }
        }
    }
    if let Some(rejection) =
        super::deployments::check_worker_renewal(proposal, &submit.id, spec, renewed.as_ref())
    {
        return Ok(Err(rejection));
    }
    let zone_policy = zone::effective_for(store, &spec.zone)?;
    if let Some(rejection) =
        super::deployments::check_destinations(spec, renewed.as_ref(), &zone_policy.0)?
    {
        return Ok(Err(rejection));
    }
    let (issuer, violations, policy_versions, approval_policy) =
        evaluate_request_under(store, spec, zone_policy)?;
    let skip_reason = if approval_policy.required
        && approval_policy.renewal_skips
        && renewal_unchanged(store, spec, &issuer, renewed.as_ref())?
    {
        Some("a renewal that changes nothing; the zone skips approval for those".to_string())
    } else {
        None
    };
    let state = if !violations.is_empty() {
        RequestState::Rejected
    } else if approval_policy.required && skip_reason.is_none() {
        RequestState::PendingApproval
    } else {
        RequestState::Approved
    };
    let approval = approval_policy.required.then(|| ApprovalProgress {
        current: if state == RequestState::PendingApproval {
            0
        } else {
            approval_policy.stages.len()
        },
        stages: approval_policy.stages.clone(),
        decisions: Vec::new(),
        expires_at: Timestamp(
            proposal
                .proposed_at
                .0
                .saturating_add(approval_policy.timeout.0.saturating_mul(1000)),
        ),
        skipped: skip_reason,
    });
    let record = RequestRecord {
        id: submit.id.clone(),
        spec: spec.clone(),
        issuer,
        state,
        violations: violations.clone(),
        policy_versions,
        requested_by: proposal.actor.id.clone(),
        created_at: proposal.proposed_at,
        updated_at: proposal.proposed_at,
        certificate_id: None,
        error: None,
        generation: 1,
        revision: entry.index,
        queued_at: if state == RequestState::Approved {
            entry.index
        } else {
            0
        },
        approval,
        aws: None,
    };
    write_request(store, &record);
    super::deployments::renewal_submitted(store, entry, proposal, &record, renewed);
    if state == RequestState::Rejected {
        let mut rejection = Rejection::new(
            RejectCode::PolicyViolation,
            format!(
                "request {} breaks the policy of zone {}: {} violation(s)",
                record.id,
                spec.zone,
                violations.len()
            ),
        );
        rejection.violations = violations;
        rejection.object_id = Some(record.id.clone());
        return Ok(Err(rejection));
    }
    Ok(Ok(Applied::RequestRecorded {
        request: Box::new(record),
    }))
}

/// A renewal asks for nothing new when its zone, names, issuer, owner, tags and key type equal the
/// request that issued the certificate it renews. An imported certificate has no such request.
fn renewal_unchanged(
    store: &impl StateRead,
    spec: &crate::request::RequestSpec,
    issuer: &str,
    renewed: Option<&CertificateRecord>,
) -> Result<bool, CoreError> {
    let Some(link) = renewed.and_then(|c| c.issuance.as_ref()) else {
        return Ok(false);
    };
    let Some(before) = get_request(store, &link.request_id)? else {
        return Ok(false);
    };
    let names = |sans: &[San]| {
        let mut v: Vec<String> = sans.iter().map(San::to_string).collect();
        v.sort();
        v
    };
    Ok(before.spec.zone == spec.zone
        && before.spec.common_name == spec.common_name
        && names(&before.spec.sans) == names(&spec.sans)
        && before.issuer == issuer
        && before.spec.owner == spec.owner
        && before.spec.tags == spec.tags
        && before.spec.key_facts.algorithm == spec.key_facts.algorithm)
}

/// The worker's outcome must answer the request as it stands now, else it is stale.
fn outcome_target(
    store: &impl StateRead,
    proposal: &Proposal,
    request_id: &str,
    generation: u64,
) -> Result<Result<RequestRecord, Rejection>, CoreError> {
    if proposal.actor.id != ISSUANCE_WORKER {
        return Ok(Err(Rejection::new(
            RejectCode::Forbidden,
            "only the issuance worker records issuance outcomes",
        )));
    }
    let Some(request) = get_request(store, request_id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no request with id {request_id}"),
        )));
    };
    let open = request.state == RequestState::Approved
        || (request.state == RequestState::Issuing && request.aws.is_some());
    if !open || request.generation != generation {
        return Ok(Err(Rejection::new(
            RejectCode::StaleGeneration,
            format!(
                "request {request_id} is {} at generation {}; the outcome for generation {generation} is ignored",
                request.state.as_str(),
                request.generation
            ),
        )));
    }
    Ok(Ok(request))
}

fn same_names(request: &RequestRecord, done: &CompleteIssuance) -> bool {
    let mut wanted: Vec<String> = request.spec.sans.iter().map(San::to_string).collect();
    let mut got = done.details.sans.clone();
    wanted.sort();
    got.sort();
    wanted == got && request.spec.common_name == done.details.common_name
}

pub(super) fn complete_issuance(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    done: &CompleteIssuance,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let mut request = match outcome_target(store, proposal, &done.request_id, done.generation)? {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    // The state machine checks the worker's certificate against the approved request: names exactly
    // as approved, validity within what was evaluated.
    let validity_ms = done.details.not_after.millis() - done.details.not_before.millis();
    if !same_names(&request, done) || validity_ms > request.spec.validity.0.saturating_mul(1000) {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            format!(
                "the issued certificate for request {} does not match what was approved",
                request.id
            ),
        )));
    }
    // Two renewals of one certificate may both be approved; only the first issued supersedes it. The
    // later one is answered (failed) rather than left queued, so the worker does not sign it again.
    // Read once: the certificate this one renews is checked here, lends its deployments below and is
    // marked superseded last; nothing in between writes it.
    let renewed = match &request.spec.renewal_of {
        Some(old_id) => get_certificate(store, old_id)?,
        None => None,
    };
    if let Some(old_id) = &request.spec.renewal_of {
        if let Some(newer) = renewed.as_ref().and_then(|c| c.superseded_by.as_ref()) {
            let message = format!("certificate {old_id} was already renewed by {newer}");
            let id = request.id.clone();
            record_failure(store, entry, proposal, request, &message)?;
            let mut rejection = Rejection::new(RejectCode::Conflict, message);
            rejection.object_id = Some(id);
            return Ok(Err(rejection));
        }
    }
    let Some(mut issuer) = get_issuer(store, &request.issuer)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("issuer {} no longer exists", request.issuer),
        )));
    };
    let serial_key = keys::index_key(&issuer.name, &done.details.serial);
    if store.get(Keyspace::IssuedSerials, &serial_key)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!(
                "serial {} was already issued by {}",
                done.details.serial, issuer.name
            ),
        )));
    }
    let fingerprint = done.details.fingerprint_sha256.as_bytes();
    if store.get(Keyspace::ByFingerprint, fingerprint)?.is_some()
        || get_certificate(store, &done.certificate_id)?.is_some()
    {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!(
                "certificate {} is already in the inventory",
                done.certificate_id
            ),
        )));
    }
    let policy = super::inventory::certificate_policy(store, &request.spec.zone)?;
    let record = CertificateRecord {
        id: done.certificate_id.clone(),
        details: done.details.clone(),
        chain_pem: done.chain_pem.clone(),
        owner: request.spec.owner.clone().unwrap_or_default(),
        zone: request.spec.zone.clone(),
        tags: request.spec.tags.clone(),
        status: CertificateStatus::Active,
        private_key: done.private_key.clone(),
        created_at: proposal.proposed_at,
        updated_at: proposal.proposed_at,
        retired_at: None,
        generation: 1,
        revision: entry.index,
        issuance: Some(IssuanceLink {
            request_id: request.id.clone(),
            issuer: issuer.name.clone(),
            aws: match &request.aws {
                Some(aws) => match &aws.certificate_arn {
                    Some(arn) => Some(AwsIssued {
                        ca_arn: aws.ca_arn.clone(),
                        certificate_arn: arn.clone(),
                        mode: aws.mode,
                        revocation_pending: false,
                        revocation_request_id: None,
                        acm_status: None,
                        renewal_status: None,
                        checked_at: None,
                        next_check_at: None,
                    }),
                    None => {
                        return Ok(Err(Rejection::new(
                            RejectCode::InvalidArgument,
                            format!(
                                "request {} has no certificate ARN recorded from AWS yet",
                                request.id
                            ),
                        )))
                    }
                },
                None => None,
            },
        }),
        supersedes: request.spec.renewal_of.clone(),
        superseded_by: None,
        revocation: None,
        notices: super::inventory::expiry_notices_under(&policy, done.details.not_after),
        deployments: super::deployments::new_deployments(
            &request,
            renewed.as_ref(),
            &policy,
            &done.certificate_id,
            done.private_key.is_some(),
            proposal.proposed_at,
        )?,
        // ACM renews an acm-native certificate itself; certplane does not schedule a renewal.
        renewal: if request
            .aws
            .as_ref()
            .is_some_and(|a| a.mode == crate::issuer::PcaMode::AcmNative)
        {
            None
        } else {
            super::deployments::new_renewal(
                &policy,
                &done.certificate_id,
                done.details.not_before,
                done.details.not_after,
            )
        },
    };
    let mut record = record;
    super::aws::track(store, &mut record, proposal.proposed_at);
    store.put(Keyspace::ByFingerprint, fingerprint, record.id.as_bytes());
    write_certificate(store, &record);
    super::deployments::note_places(store, &record.deployments)?;
    if let Some(mut old) = renewed {
        let indexed = Indexed::of(&old);
        old.superseded_by = Some(record.id.clone());
        super::deployments::cancel_open(&mut old);
        old.updated_at = proposal.proposed_at;
        old.generation += 1;
        old.revision = entry.index;
        indexed.rewrite(store, &old);
    }
    store.put(
        Keyspace::IssuedSerials,
        &serial_key,
        &encode_record(&IssuedSerial {
            certificate_id: record.id.clone(),
            request_id: request.id.clone(),
            issued_at: proposal.proposed_at,
        }),
    );
    issuer.issued_count += 1;
    issuer.revision = entry.index;
    put_issuer(store, &issuer);
    let mut c = counts(store)?;
    c.active += 1;
    put_counts(store, c);

    let indexed = request_index_entries(&request);
    request.state = RequestState::Issued;
    request.certificate_id = Some(record.id.clone());
    request.updated_at = proposal.proposed_at;
    request.generation += 1;
    request.revision = entry.index;
    rewrite_request(store, &indexed, &request);
    Ok(Ok(Applied::RequestUpdated {
        request: Box::new(request),
    }))
}

pub(super) fn fail_issuance(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    request_id: &str,
    generation: u64,
    error: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let request = match outcome_target(store, proposal, request_id, generation)? {
        Ok(request) => request,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let request = record_failure(store, entry, proposal, request, error)?;
    Ok(Ok(Applied::RequestUpdated {
        request: Box::new(request),
    }))
}

/// Move an approved request to `failed` (final), out of the issuance queue; a renewal's certificate
/// goes back into the renewal queue.
fn record_failure(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    mut request: RequestRecord,
    error: &str,
) -> Result<RequestRecord, CoreError> {
    let indexed = request_index_entries(&request);
    request.state = RequestState::Failed;
    request.error = Some(error.to_string());
    request.updated_at = proposal.proposed_at;
    request.generation += 1;
    request.revision = entry.index;
    rewrite_request(store, &indexed, &request);
    super::deployments::renewal_ended(store, entry, proposal, &request)?;
    Ok(request)
}

//! Deployments and automatic renewal in the state machine: the intents the leader's deploy and
//! renewal workers act on, and the outcomes they propose back (DESIGN.md section 3).

use super::inventory::Indexed;
use super::{get_certificate, EntryContext};
use crate::certificate::CertificateRecord;
use crate::command::{Applied, Proposal, RecordDeployment, Rejection};
use crate::deploy::{
    backoff_ms, renewal_due, renewal_request_id, Deployment, DeploymentOutcome, DeploymentState,
    Destination, RenewalSchedule,
};
use crate::error::{CoreError, RejectCode};
use crate::policy::EffectivePolicy;
use crate::request::{KeySource, RequestRecord, RequestSpec};
use crate::store::{StateRead, StateStore};
use crate::time::Timestamp;

/// The principal the leader's deploy worker proposes outcomes as.
pub const DEPLOY_WORKER: &str = "system:deploy";
/// The principal the leader's renewal worker submits renewals as.
pub const RENEWAL_WORKER: &str = "system:renewal";

/// The destinations a request will deploy to: its own, else its zone's (a renewal keeps those of the
/// certificate it renews).
pub fn destinations_for(
    store: &impl StateRead,
    spec: &RequestSpec,
) -> Result<Vec<Destination>, CoreError> {
    let renewed = match spec.renewal_of.as_deref() {
        Some(old) => get_certificate(store, old)?,
        None => None,
    };
    destinations_given(spec, renewed.as_ref(), || {
        Ok(crate::zone::effective_for(store, &spec.zone)?
            .0
            .destinations
            .value)
    })
}

/// [`destinations_for`] with the certificate the request renews already read (`None` for a new
/// certificate, or when it is gone); `zone_destinations` gives the zone's, asked only if needed.
fn destinations_given(
    spec: &RequestSpec,
    renewed: Option<&CertificateRecord>,
    zone_destinations: impl FnOnce() -> Result<Vec<Destination>, CoreError>,
) -> Result<Vec<Destination>, CoreError> {
    if let Some(cert) = renewed.filter(|c| !c.deployments.is_empty()) {
        return Ok(cert
            .deployments
            .iter()
            .map(|d| d.destination.clone())
            .collect());
    }
    match &spec.destinations {
        Some(list) => Ok(list.clone()),
        None => zone_destinations(),
    }
}

/// Why a request's destinations cannot work, checked when it is submitted: ACM import needs the
/// private key, so a request that sends a CSR cannot have destinations. `renewed` is the certificate
/// the request renews, as the caller read it; `zone_policy` the effective policy of its zone.
pub(super) fn check_destinations(
    spec: &RequestSpec,
    renewed: Option<&CertificateRecord>,
    zone_policy: &EffectivePolicy,
) -> Result<Option<Rejection>, CoreError> {
    if let Some(list) = &spec.destinations {
        if let Err(e) = crate::deploy::validate_destinations(list) {
            return Ok(Some(Rejection::new(RejectCode::InvalidArgument, e)));
        }
    }
    let destinations =
        destinations_given(spec, renewed, || Ok(zone_policy.destinations.value.clone()))?;
    if !destinations.is_empty() && matches!(spec.key, KeySource::Csr { .. }) {
        return Ok(Some(Rejection::new(
            RejectCode::InvalidArgument,
            format!(
                "the certificate would be deployed to {} destination(s), and ACM import needs its private key: ask certplane to generate the key, or send \"destinations\": []",
                destinations.len()
            ),
        )));
    }
    Ok(None)
}

/// The deployments of a newly issued certificate: a renewal inherits every destination of its
/// predecessor with the ARN (so the re-import goes to the same ACM certificate); a new certificate
/// starts its own lineage. `renewed` is the certificate the request renews, as the caller read it;
/// `zone_policy` the effective policy of the request's zone.
pub(super) fn new_deployments(
    request: &RequestRecord,
    renewed: Option<&CertificateRecord>,
    zone_policy: &EffectivePolicy,
    certificate_id: &str,
    has_key: bool,
    now: Timestamp,
) -> Result<Vec<Deployment>, CoreError> {
    if !has_key {
        return Ok(Vec::new());
    }
    let fresh = |destination: Destination, lineage: String, arn, import_started| Deployment {
        destination,
        lineage,
        arn,
        state: DeploymentState::Pending,
        attempts: 0,
        next_attempt_at: now,
        import_started,
        last_error: None,
        deployed_at: None,
        observed_serial: None,
    };
    if let Some(cert) = renewed.filter(|c| !c.deployments.is_empty()) {
        return Ok(cert
            .deployments
            .iter()
            .map(|d| {
                fresh(
                    d.destination.clone(),
                    d.lineage.clone(),
                    d.arn.clone(),
                    d.import_started && d.arn.is_none(),
                )
            })
            .collect());
    }
    Ok(destinations_given(&request.spec, None, || {
        Ok(zone_policy.destinations.value.clone())
    })?
    .into_iter()
    .map(|d| {
        let adopted = d.arn.clone();
        fresh(d, certificate_id.to_string(), adopted, false)
    })
    .collect())
}

/// The renewal schedule of a newly issued certificate, when its zone renews automatically.
pub(super) fn new_renewal(
    policy: &EffectivePolicy,
    certificate_id: &str,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Option<RenewalSchedule> {
    if !policy.auto_renew.value {
        return None;
    }
    Some(RenewalSchedule {
        due_at: renewal_due(
            certificate_id,
            not_before,
            not_after,
            policy.renew_before.value.0,
        ),
        attempts: 0,
        request_id: None,
        last_error: None,
    })
}

/// A certificate leaves management: open deployments are cancelled, and in a zone with
/// `acm_cleanup` each ACM certificate no renewal took over is queued for deletion.
pub(super) fn leave_acm(
    store: &impl StateRead,
    record: &mut CertificateRecord,
    now: Timestamp,
) -> Result<(), CoreError> {
    if record.deployments.is_empty() {
        return Ok(());
    }
    let cleanup = record.superseded_by.is_none()
        && crate::policy::normalize_zone_path(&record.zone)
            .ok()
            .as_deref()
            == Some(record.zone.as_str())
        && crate::zone::effective_for(store, &record.zone)?
            .0
            .acm_cleanup
            .value;
    for d in record.deployments.iter_mut() {
        match (cleanup, &d.arn, d.state) {
            (
                true,
                Some(_),
                DeploymentState::Pending | DeploymentState::Failed | DeploymentState::Deployed,
            ) => {
                d.state = DeploymentState::Deleting;
                d.next_attempt_at = now;
            }
            (_, _, DeploymentState::Pending | DeploymentState::Failed) => {
                d.state = DeploymentState::Cancelled;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A superseded certificate's open deployments are cancelled: its successor deploys instead.
pub(super) fn cancel_open(record: &mut CertificateRecord) {
    for d in record.deployments.iter_mut() {
        if d.state.is_open() {
            d.state = DeploymentState::Cancelled;
        }
    }
}

/// The renewal worker may submit only the renewal that is due, under the id derived from the
/// certificate and attempt (a second leader's copy of the same renewal is refused).
/// `renewed` is the certificate the request renews, as the caller read it.
pub(super) fn check_worker_renewal(
    proposal: &Proposal,
    request_id: &str,
    spec: &RequestSpec,
    renewed: Option<&CertificateRecord>,
) -> Option<Rejection> {
    if proposal.actor.id != RENEWAL_WORKER {
        return None;
    }
    let stale = |m: String| Some(Rejection::new(RejectCode::StaleGeneration, m));
    let Some(old) = spec.renewal_of.as_deref() else {
        return stale("the renewal worker only submits renewals".into());
    };
    let Some(cert) = renewed else {
        return stale(format!("no certificate with id {old}"));
    };
    let Some(schedule) = cert.renewal.as_ref().filter(|_| cert.is_live()) else {
        return stale(format!("certificate {old} is not scheduled for renewal"));
    };
    if let Some(running) = &schedule.request_id {
        return stale(format!(
            "certificate {old} is already being renewed by {running}"
        ));
    }
    if request_id != renewal_request_id(old, schedule.attempts + 1) {
        return stale(format!(
            "the next renewal of {old} is {}",
            renewal_request_id(old, schedule.attempts + 1)
        ));
    }
    if proposal.proposed_at < schedule.due_at {
        return Some(Rejection::new(
            RejectCode::Conflict,
            format!("certificate {old} is not due for renewal yet"),
        ));
    }
    None
}

/// A renewal request was recorded: the certificate leaves the renewal queue while it runs, or, when
/// policy refused it, waits out a back-off. `renewed` is the certificate it renews, as the caller
/// read it before recording the request.
pub(super) fn renewal_submitted(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    request: &RequestRecord,
    renewed: Option<CertificateRecord>,
) {
    let Some(mut cert) = renewed else {
        return;
    };
    if cert.renewal.is_none() || !cert.is_live() {
        return;
    }
    let indexed = Indexed::of(&cert);
    if let Some(schedule) = cert.renewal.as_mut() {
        schedule.attempts += 1;
        if request.state.is_final() {
            schedule.request_id = None;
            schedule.last_error = Some(format!(
                "renewal {} was {}",
                request.id,
                request.state.as_str()
            ));
            schedule.due_at = Timestamp(
                proposal
                    .proposed_at
                    .0
                    .saturating_add(backoff_ms(schedule.attempts)),
            );
        } else {
            schedule.request_id = Some(request.id.clone());
            schedule.last_error = None;
        }
    }
    cert.revision = entry.index;
    indexed.rewrite(store, &cert);
}

/// A renewal request ended without a certificate (failed, rejected by an approver, expired): the
/// certificate it was renewing goes back into the renewal queue after a back-off.
pub(super) fn renewal_ended(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    request: &RequestRecord,
) -> Result<(), CoreError> {
    let Some(old) = request.spec.renewal_of.as_deref() else {
        return Ok(());
    };
    let Some(mut cert) = get_certificate(store, old)? else {
        return Ok(());
    };
    let running =
        cert.renewal.as_ref().and_then(|s| s.request_id.as_deref()) == Some(request.id.as_str());
    if !running || !cert.is_live() {
        return Ok(());
    }
    let indexed = Indexed::of(&cert);
    if let Some(schedule) = cert.renewal.as_mut() {
        schedule.request_id = None;
        schedule.last_error = Some(format!(
            "renewal {} {}: {}",
            request.id,
            request.state.as_str(),
            request.error.as_deref().unwrap_or("")
        ));
        schedule.due_at = Timestamp(
            proposal
                .proposed_at
                .0
                .saturating_add(backoff_ms(schedule.attempts)),
        );
    }
    cert.revision = entry.index;
    indexed.rewrite(store, &cert);
    Ok(())
}

pub(super) fn record_deployment(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    rec: &RecordDeployment,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if proposal.actor.id != DEPLOY_WORKER {
        return Ok(Err(Rejection::new(
            RejectCode::Forbidden,
            "only the deploy worker records deployment outcomes",
        )));
    }
    let Some(mut cert) = get_certificate(store, &rec.certificate_id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no certificate with id {}", rec.certificate_id),
        )));
    };
    let Some(d) = cert.deployments.get(rec.destination) else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!(
                "certificate {} has no destination {}",
                cert.id, rec.destination
            ),
        )));
    };
    let deleting = d.state == DeploymentState::Deleting;
    let fits = match &rec.outcome {
        DeploymentOutcome::Deleted => deleting,
        DeploymentOutcome::Failed { .. } => d.state.is_queued(cert.is_live()),
        _ => !deleting && d.state.is_queued(cert.is_live()),
    };
    if !fits || rec.attempt != d.attempts + 1 {
        return Ok(Err(Rejection::new(
            RejectCode::StaleGeneration,
            format!(
                "deployment {} of certificate {} is {} after {} attempt(s); the outcome of attempt {} is ignored",
                rec.destination,
                cert.id,
                if cert.is_live() { d.state.as_str() } else { "no longer managed" },
                d.attempts,
                rec.attempt
            ),
        )));
    }
    let arn_named = match &rec.outcome {
        DeploymentOutcome::Deployed { arn, .. } => Some(arn),
        DeploymentOutcome::Failed { arn, .. } => arn.as_ref(),
        DeploymentOutcome::Importing | DeploymentOutcome::Deleted => None,
    };
    if let (Some(known), Some(named)) = (&d.arn, arn_named) {
        if known != named {
            return Ok(Err(Rejection::new(
                RejectCode::InvalidArgument,
                format!(
                    "deployment {} of certificate {} is bound to {known}; an outcome naming {named} is refused",
                    rec.destination, cert.id
                ),
            )));
        }
    }
    if let Some(named) = arn_named {
        if crate::deploy::certificate_arn_parts(named)
            .is_none_or(|(r, _)| r != d.destination.region)
        {
            return Ok(Err(Rejection::new(
                RejectCode::InvalidArgument,
                format!(
                    "{named} is not an ACM certificate ARN in {}",
                    d.destination.region
                ),
            )));
        }
    }
    let indexed = Indexed::of(&cert);
    let d = &mut cert.deployments[rec.destination];
    d.attempts += 1;
    match &rec.outcome {
        DeploymentOutcome::Importing => {
            d.import_started = true;
        }
        DeploymentOutcome::Deployed {
            arn,
            observed_serial,
            ..
        } => {
            d.arn = Some(arn.clone());
            d.state = DeploymentState::Deployed;
            d.deployed_at = Some(proposal.proposed_at);
            d.observed_serial = Some(observed_serial.clone());
            d.last_error = None;
        }
        DeploymentOutcome::Deleted => {
            d.state = DeploymentState::Deleted;
            d.last_error = None;
        }
        DeploymentOutcome::Failed {
            error,
            arn,
            retry_at,
        } => {
            if d.arn.is_none() {
                d.arn = arn.clone();
            }
            if d.state != DeploymentState::Deleting {
                d.state = DeploymentState::Failed;
            }
            d.last_error = Some(error.chars().take(1000).collect());
            d.next_attempt_at = Timestamp(retry_at.0.max(proposal.proposed_at.0));
        }
    }
    cert.revision = entry.index;
    cert.updated_at = proposal.proposed_at;
    indexed.rewrite(store, &cert);
    Ok(Ok(Applied::DeploymentRecorded {
        record: Box::new(cert),
        destination: rec.destination,
    }))
}

const DEPLOY_PLACES: &[u8] = b"deploy_places";

/// One place certificates were deployed to: region, role (if any), account (if known).
pub type Place = (String, Option<String>, Option<String>);

/// Every place any certificate was ever given a deployment to, so the IAM policy can be printed
/// without reading the inventory.
pub fn deploy_places(
    store: &impl StateRead,
) -> Result<std::collections::BTreeSet<Place>, CoreError> {
    match store.get(crate::store::Keyspace::Meta, DEPLOY_PLACES)? {
        Some(bytes) => crate::keys::decode_record("deploy places", &bytes),
        None => Ok(Default::default()),
    }
}

pub(super) fn note_places(
    store: &mut impl StateStore,
    deployments: &[Deployment],
) -> Result<(), CoreError> {
    let mut places = deploy_places(store)?;
    let before = places.len();
    for d in deployments {
        places.insert((
            d.destination.region.clone(),
            d.destination.role_arn.clone(),
            d.destination.account(),
        ));
    }
    if places.len() != before {
        store.put(
            crate::store::Keyspace::Meta,
            DEPLOY_PLACES,
            &crate::keys::encode_record(&places),
        );
    }
    Ok(())
}

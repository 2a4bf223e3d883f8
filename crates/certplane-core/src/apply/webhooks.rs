//! Webhook commands and event emission: each event becomes one delivery intent per matching
//! subscription, written by the same command that caused the event.

use serde_json::json;

use super::{forbidden_unless, EntryContext};
use crate::command::{Applied, Command, Proposal, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::keys::{self, decode_record, encode_record, meta};
use crate::policy::normalize_zone_path;
use crate::principal::{zone_within, Permission};
use crate::request::{RequestRecord, RequestState};
use crate::store::{Keyspace, StateRead, StateStore};
use crate::webhook::{
    AttemptOutcome, DeliveryRecord, DeliveryState, EventKind, WebhookRecord, MAX_WEBHOOKS,
};

/// The principal the leader's delivery worker proposes outcomes as.
pub const DELIVERY_WORKER: &str = "system:webhooks";

pub fn get_webhook(store: &impl StateRead, id: &str) -> Result<Option<WebhookRecord>, CoreError> {
    store
        .get(Keyspace::Webhooks, id.as_bytes())?
        .map(|b| decode_record("webhook", &b))
        .transpose()
}

pub fn get_delivery(store: &impl StateRead, id: &str) -> Result<Option<DeliveryRecord>, CoreError> {
    store
        .get(Keyspace::Deliveries, id.as_bytes())?
        .map(|b| decode_record("delivery", &b))
        .transpose()
}

pub fn list_webhooks(store: &impl StateRead) -> Result<Vec<WebhookRecord>, CoreError> {
    store
        .scan(Keyspace::Webhooks, b"", b"", MAX_WEBHOOKS as usize + 1)?
        .iter()
        .map(|(_, v)| decode_record("webhook", v))
        .collect()
}

fn webhook_count(store: &impl StateRead) -> Result<u64, CoreError> {
    match store.get(Keyspace::Meta, meta::WEBHOOK_COUNT)? {
        Some(b) => decode_record("webhook count", &b),
        None => Ok(0),
    }
}

pub(super) fn create_webhook(
    store: &mut impl StateStore,
    proposal: &Proposal,
    webhook: &WebhookRecord,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let invalid = |m: String| Ok(Err(Rejection::new(RejectCode::InvalidArgument, m)));
    if normalize_zone_path(&webhook.zone).ok().as_deref() != Some(webhook.zone.as_str()) {
        return invalid(format!("{:?} is not a canonical zone path", webhook.zone));
    }
    if let Some(rejection) =
        forbidden_unless(&proposal.actor, Permission::WebhookManage, &webhook.zone)
    {
        return Ok(Err(rejection));
    }
    let url_ok = (webhook.url.starts_with("https://") || webhook.url.starts_with("http://"))
        && webhook.url.len() <= 2048
        && !webhook
            .url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace());
    if !url_ok {
        return invalid("url must be an http:// or https:// URL of at most 2048 characters".into());
    }
    if webhook.events.is_empty() {
        return invalid("events must name at least one event type".into());
    }
    let count = webhook_count(store)?;
    if count >= MAX_WEBHOOKS {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("the cluster already has {MAX_WEBHOOKS} webhooks"),
        )));
    }
    if get_webhook(store, &webhook.id)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("webhook id {} is taken", webhook.id),
        )));
    }
    let mut stored = webhook.clone();
    stored.events.sort();
    stored.events.dedup();
    stored.created_at = proposal.proposed_at;
    stored.created_by = proposal.actor.id.clone();
    store.put(
        Keyspace::Webhooks,
        stored.id.as_bytes(),
        &encode_record(&stored),
    );
    store.put(
        Keyspace::Meta,
        meta::WEBHOOK_COUNT,
        &encode_record(&(count + 1)),
    );
    Ok(Ok(Applied::WebhookStored {
        webhook: Box::new(stored),
    }))
}

pub(super) fn delete_webhook(
    store: &mut impl StateStore,
    proposal: &Proposal,
    id: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let Some(webhook) = get_webhook(store, id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no webhook with id {id}"),
        )));
    };
    if let Some(rejection) =
        forbidden_unless(&proposal.actor, Permission::WebhookManage, &webhook.zone)
    {
        return Ok(Err(rejection));
    }
    store.delete(Keyspace::Webhooks, id.as_bytes());
    let count = webhook_count(store)?;
    store.put(
        Keyspace::Meta,
        meta::WEBHOOK_COUNT,
        &encode_record(&count.saturating_sub(1)),
    );
    // Queued deliveries of a deleted webhook are answered `failed` by the worker when it reaches them.
    Ok(Ok(Applied::WebhookDeleted { id: id.to_string() }))
}

pub(super) fn record_delivery(
    store: &mut impl StateStore,
    proposal: &Proposal,
    id: &str,
    attempt: u32,
    outcome: &AttemptOutcome,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if proposal.actor.id != DELIVERY_WORKER {
        return Ok(Err(Rejection::new(
            RejectCode::Forbidden,
            "only the delivery worker records delivery outcomes",
        )));
    }
    let Some(mut delivery) = get_delivery(store, id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no delivery with id {id}"),
        )));
    };
    if delivery.state != DeliveryState::Pending || attempt != delivery.attempts + 1 {
        return Ok(Err(Rejection::new(
            RejectCode::StaleGeneration,
            format!(
                "delivery {id} is {:?} after {} attempt(s); the outcome of attempt {attempt} is ignored",
                delivery.state, delivery.attempts
            ),
        )));
    }
    delivery.attempts = attempt;
    match outcome {
        AttemptOutcome::Delivered { status } => {
            delivery.state = DeliveryState::Delivered;
            delivery.last_status = Some(*status);
            delivery.last_error = None;
            delivery.delivered_at = Some(proposal.proposed_at);
        }
        AttemptOutcome::Failed {
            status,
            error,
            retry_at,
        } => {
            delivery.last_status = *status;
            delivery.last_error = Some(error.chars().take(500).collect());
            match retry_at {
                Some(at) => delivery.next_attempt_at = *at,
                None => delivery.state = DeliveryState::Failed,
            }
        }
    }
    store.put(
        Keyspace::Deliveries,
        id.as_bytes(),
        &encode_record(&delivery),
    );
    if delivery.state != DeliveryState::Pending {
        store.delete(Keyspace::DeliveryQueue, id.as_bytes());
    }
    Ok(Ok(Applied::DeliveryUpdated {
        delivery: Box::new(delivery),
    }))
}

fn request_data(r: &RequestRecord) -> serde_json::Value {
    json!({
        "request_id": r.id,
        "state": r.state.as_str(),
        "zone": r.spec.zone,
        "common_name": r.spec.common_name,
        "sans": r.spec.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "owner": r.spec.owner,
        "requested_by": r.requested_by,
        "issuer": r.issuer,
        "certificate_id": r.certificate_id,
        "renewal_of": r.spec.renewal_of,
        "error": r.error,
        "approval": r.approval.as_ref().map(|a| json!({
            "current_stage": a.stages.get(a.current).map(|s| s.name.clone()),
            "approvers": a.approvers(),
            "expires_at": a.expires_at.0,
        })),
    })
}

/// The events a command caused: (kind, zone, data).
fn events_of(
    proposal: &Proposal,
    result: &Result<Applied, Rejection>,
) -> Vec<(EventKind, String, serde_json::Value)> {
    let mut out = Vec::new();
    match (&proposal.command, result) {
        (Command::SubmitRequest(_), Ok(Applied::RequestRecorded { request })) => {
            let zone = request.spec.zone.clone();
            let data = request_data(request);
            out.push((EventKind::RequestSubmitted, zone.clone(), data.clone()));
            match request.state {
                RequestState::PendingApproval => {
                    out.push((EventKind::RequestPendingApproval, zone, data))
                }
                RequestState::Approved => out.push((EventKind::RequestApproved, zone, data)),
                _ => {}
            }
        }
        (Command::SubmitRequest(submit), Err(rejection))
            if rejection.code == RejectCode::PolicyViolation =>
        {
            let data = json!({
                "request_id": submit.id,
                "zone": submit.spec.zone,
                "state": "rejected",
                "violations": rejection.violations,
            });
            out.push((
                EventKind::RequestSubmitted,
                submit.spec.zone.clone(),
                data.clone(),
            ));
            out.push((EventKind::RequestRejected, submit.spec.zone.clone(), data));
        }
        (Command::DecideApproval(_), Ok(Applied::RequestUpdated { request })) => {
            let kind = match request.state {
                RequestState::Approved => Some(EventKind::RequestApproved),
                RequestState::Rejected => Some(EventKind::RequestRejected),
                // A stage passed: the next stage's approvers have something to decide.
                RequestState::PendingApproval => Some(EventKind::RequestPendingApproval),
                _ => None,
            };
            if let Some(kind) = kind {
                out.push((kind, request.spec.zone.clone(), request_data(request)));
            }
        }
        (Command::ExpireApproval { .. }, Ok(Applied::RequestUpdated { request })) => {
            out.push((
                EventKind::RequestExpired,
                request.spec.zone.clone(),
                request_data(request),
            ));
        }
        (Command::CompleteIssuance(done), Ok(Applied::RequestUpdated { request })) => {
            let mut data = request_data(request);
            data["serial"] = json!(done.details.serial);
            data["not_after"] = json!(done.details.not_after.0);
            out.push((
                EventKind::RequestIssued,
                request.spec.zone.clone(),
                data.clone(),
            ));
            if request.spec.renewal_of.is_some() {
                out.push((
                    EventKind::CertificateRenewed,
                    request.spec.zone.clone(),
                    data,
                ));
            }
        }
        (Command::FailIssuance { .. }, Ok(Applied::RequestUpdated { request })) => {
            out.push((
                EventKind::RequestFailed,
                request.spec.zone.clone(),
                request_data(request),
            ));
        }
        (Command::RecordDeployment(rec), Ok(Applied::DeploymentRecorded { record, .. })) => {
            let d = record.deployments.get(rec.destination);
            let data = |extra: serde_json::Value| {
                let mut v = json!({
                    "certificate_id": record.id,
                    "zone": record.zone,
                    "common_name": record.details.common_name,
                    "serial": record.details.serial,
                    "destination": rec.destination,
                    "region": d.map(|d| d.destination.region.clone()),
                    "arn": d.and_then(|d| d.arn.clone()),
                    "attempt": rec.attempt,
                });
                if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
                    obj.extend(more.clone());
                }
                v
            };
            match &rec.outcome {
                crate::deploy::DeploymentOutcome::Deployed { .. } => out.push((
                    EventKind::CertificateDeployed,
                    record.zone.clone(),
                    data(json!({})),
                )),
                crate::deploy::DeploymentOutcome::Failed {
                    error, retry_at, ..
                } => out.push((
                    EventKind::CertificateDeploymentFailed,
                    record.zone.clone(),
                    data(json!({ "error": error, "retry_at": retry_at.0 })),
                )),
                crate::deploy::DeploymentOutcome::Importing
                | crate::deploy::DeploymentOutcome::Deleted => {}
            }
        }
        (_, Ok(Applied::CertificateRevoked { record })) => {
            out.push((
                EventKind::CertificateRevoked,
                record.zone.clone(),
                json!({
                    "certificate_id": record.id,
                    "zone": record.zone,
                    "serial": record.details.serial,
                    "common_name": record.details.common_name,
                    "reason": record.revocation.as_ref().map(|r| r.reason),
                }),
            ));
        }
        (_, Ok(Applied::ExpiryNoticed { record, threshold })) => {
            let before = record
                .notices
                .iter()
                .find(|n| &n.threshold == threshold)
                .map(|n| n.before_s);
            out.push((
                EventKind::CertificateExpiring,
                record.zone.clone(),
                json!({
                    "certificate_id": record.id,
                    "zone": record.zone,
                    "common_name": record.details.common_name,
                    "serial": record.details.serial,
                    "not_after": record.details.not_after.0,
                    "threshold": threshold,
                    "threshold_seconds": before,
                    "owner": record.owner,
                }),
            ));
        }
        (_, Ok(Applied::ZoneStored { zone })) => {
            out.push((
                EventKind::PolicyChanged,
                zone.path.clone(),
                json!({ "zone": zone.path, "version": zone.version }),
            ));
        }
        _ => {}
    }
    // A renewal that ended without a certificate: its owner must act before the old one expires.
    let ended = match result {
        Ok(Applied::RequestUpdated { request }) => Some((
            request.spec.renewal_of.as_deref(),
            request.state,
            request_data(request),
            request.spec.zone.clone(),
        )),
        _ => None,
    };
    if let Some((Some(old), state, mut data, zone)) = ended {
        if matches!(
            state,
            RequestState::Failed | RequestState::Rejected | RequestState::Expired
        ) {
            data["renewal_of"] = json!(old);
            out.push((EventKind::CertificateRenewalFailed, zone, data));
        }
    }
    if let (Command::SubmitRequest(submit), Err(rejection)) = (&proposal.command, result) {
        if let (Some(old), RejectCode::PolicyViolation) =
            (submit.spec.renewal_of.as_deref(), rejection.code)
        {
            out.push((
                EventKind::CertificateRenewalFailed,
                submit.spec.zone.clone(),
                json!({
                    "request_id": submit.id,
                    "renewal_of": old,
                    "state": "rejected",
                    "violations": rejection.violations,
                }),
            ));
        }
    }
    out
}

/// Write one delivery per (event, matching subscription). Ids sort by log index, then position in a
/// batch, so the queue is in event order.
pub(super) fn emit_events(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    result: &Result<Applied, Rejection>,
) -> Result<(), CoreError> {
    if webhook_count(store)? == 0 {
        return Ok(());
    }
    let events = events_of(proposal, result);
    if events.is_empty() {
        return Ok(());
    }
    let hooks = list_webhooks(store)?;
    let mut n = 0u32;
    for (kind, zone, data) in events {
        for hook in hooks
            .iter()
            .filter(|h| h.events.contains(&kind) && zone_within(&zone, &h.zone))
        {
            let id = format!("dlv_{:016x}_{:04x}{n:04x}", entry.index, entry.part);
            n += 1;
            let body = json!({
                "id": id,
                "event": kind.as_str(),
                "zone": zone,
                "occurred_at": proposal.proposed_at.0,
                "log_index": entry.index,
                "actor": proposal.actor.id,
                "webhook_id": hook.id,
                "data": data,
            });
            let delivery = DeliveryRecord {
                id: id.clone(),
                webhook_id: hook.id.clone(),
                event: kind,
                zone: zone.clone(),
                body: body.to_string(),
                created_at: proposal.proposed_at,
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt_at: proposal.proposed_at,
                last_status: None,
                last_error: None,
                delivered_at: None,
            };
            store.put(
                Keyspace::Deliveries,
                id.as_bytes(),
                &encode_record(&delivery),
            );
            store.put(Keyspace::DeliveryQueue, id.as_bytes(), b"");
            store.put(
                Keyspace::DeliveriesByWebhook,
                &keys::index_key(&hook.id, &id),
                b"",
            );
        }
    }
    Ok(())
}

//! Approval workflows: ordered stages, each needing a number of different eligible approvers.
//!
//! Rules, enforced here so every node reaches the same verdict:
//! - a requester never decides their own request;
//! - one principal decides at most one stage of a request;
//! - an approver needs the approve permission on the request's zone, and the stage's group and
//!   role when the stage names them;
//! - a rejection ends the request with its reason; a request nobody finished deciding before its
//!   `expires_at` is expired by the leader's approval worker;
//! - once the last stage is approved the request joins the issuance queue.

use super::requests::write_request_record;
use super::EntryContext;
use crate::command::{Applied, DecideApproval, Proposal, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::principal::{Permission, Principal};
use crate::request::{ApprovalDecision, Decision, RequestRecord, RequestState};
use crate::store::StateStore;

use super::requests::get_request;

/// The principal the leader's approval worker proposes expiries as.
pub const APPROVAL_WORKER: &str = "system:approvals";

/// Why `who` may not decide the current stage of `request` now, or `None` when they may.
pub fn eligible_for_current_stage(request: &RequestRecord, who: &Principal) -> Option<String> {
    let Some(progress) = &request.approval else {
        return Some(format!("request {} has no approval workflow", request.id));
    };
    let Some(stage) = progress.stages.get(progress.current) else {
        return Some(format!("request {} has passed every stage", request.id));
    };
    let zone = &request.spec.zone;
    if who.id == request.requested_by {
        return Some("a requester never approves or rejects their own request".into());
    }
    if !who.allows(Permission::Approve, zone) {
        return Some(format!(
            "principal {} may not approve requests in zone {zone}",
            who.id
        ));
    }
    if let Some(earlier) = progress.decisions.iter().find(|d| d.by == who.id) {
        return Some(format!(
            "principal {} already decided stage {} of this request; one person decides at most one stage",
            who.id, earlier.stage_name
        ));
    }
    if let Some(group) = &stage.group {
        if !who.in_group(group) {
            return Some(format!(
                "stage {} needs a member of group {group}",
                stage.name
            ));
        }
    }
    if let Some(role) = stage.role {
        if !who.roles_in(zone).contains(&role) {
            return Some(format!(
                "stage {} needs the {} role on zone {zone}",
                stage.name,
                role.as_str()
            ));
        }
    }
    None
}

fn pending(
    store: &impl StateStore,
    request_id: &str,
) -> Result<Result<RequestRecord, Rejection>, CoreError> {
    let Some(request) = get_request(store, request_id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no request with id {request_id}"),
        )));
    };
    if request.state != RequestState::PendingApproval {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!(
                "request {request_id} is {}, not pending_approval",
                request.state.as_str()
            ),
        )));
    }
    Ok(Ok(request))
}

pub(super) fn decide(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    d: &DecideApproval,
) -> Result<Result<Applied, Rejection>, CoreError> {
    let mut request = match pending(store, &d.request_id)? {
        Ok(r) => r,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if let Some(expected) = d.expected_generation {
        if expected != request.generation {
            return Ok(Err(Rejection::new(
                RejectCode::StaleGeneration,
                format!(
                    "request {} is at generation {}, not {expected}",
                    request.id, request.generation
                ),
            )));
        }
    }
    if let Some(reason) = eligible_for_current_stage(&request, &proposal.actor) {
        return Ok(Err(Rejection::new(RejectCode::Forbidden, reason)));
    }
    let old = request.clone();
    let Some(progress) = request.approval.as_mut() else {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            "the request has no approval workflow",
        )));
    };
    if proposal.proposed_at >= progress.expires_at {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("request {} has expired waiting for approval", d.request_id),
        )));
    }
    let stage_index = progress.current;
    let stage = progress.stages[stage_index].clone();
    progress.decisions.push(ApprovalDecision {
        stage: stage_index,
        stage_name: stage.name.clone(),
        by: proposal.actor.id.clone(),
        by_name: proposal.actor.name.clone(),
        decision: d.decision,
        comment: d.comment.clone(),
        at: proposal.proposed_at,
    });
    match d.decision {
        Decision::Reject => {
            request.state = RequestState::Rejected;
            request.error = Some(format!(
                "rejected at stage {} by {}: {}",
                stage.name, proposal.actor.id, d.comment
            ));
        }
        Decision::Approve => {
            let approvals = progress
                .decisions
                .iter()
                .filter(|x| x.stage == stage_index && x.decision == Decision::Approve)
                .count() as u32;
            if approvals >= stage.count {
                progress.current += 1;
            }
            if progress.current >= progress.stages.len() {
                request.state = RequestState::Approved;
                request.queued_at = entry.index;
            }
        }
    }
    request.updated_at = proposal.proposed_at;
    request.generation += 1;
    request.revision = entry.index;
    write_request_record(store, &old, &request);
    if request.state.is_final() {
        super::deployments::renewal_ended(store, entry, proposal, &request)?;
    }
    Ok(Ok(Applied::RequestUpdated {
        request: Box::new(request),
    }))
}

pub(super) fn expire(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    request_id: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if proposal.actor.id != APPROVAL_WORKER {
        return Ok(Err(Rejection::new(
            RejectCode::Forbidden,
            "only the approval worker expires requests",
        )));
    }
    let mut request = match pending(store, request_id)? {
        Ok(r) => r,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let expires_at = request.approval.as_ref().map(|p| p.expires_at);
    if expires_at.is_none_or(|at| proposal.proposed_at < at) {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("request {request_id} has not reached its approval deadline"),
        )));
    }
    let old = request.clone();
    request.state = RequestState::Expired;
    request.error = Some("nobody completed the approval before it expired".into());
    request.updated_at = proposal.proposed_at;
    request.generation += 1;
    request.revision = entry.index;
    write_request_record(store, &old, &request);
    if request.state.is_final() {
        super::deployments::renewal_ended(store, entry, proposal, &request)?;
    }
    Ok(Ok(Applied::RequestUpdated {
        request: Box::new(request),
    }))
}

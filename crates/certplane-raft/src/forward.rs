//! Leader-directed operations, wherever they are submitted.
//!
//! Clients may talk to any node; followers never bounce them. A follower forwards the operation to
//! the leader over the `Forward` RPC and returns the leader's answer:
//!
//! ```text
//!  API on node B ──► Forwarder::submit ──(B is leader)──► execute_on_leader (local)
//!                                      └─(else)─gRPC Forward──► leader's RaftGrpcService ──► execute_on_leader
//! ```
//!
//! When no leader is known, or the node we asked is no longer leader, `submit` waits for the Raft
//! metrics to show a change (bounded by a deadline, 5 s by default) and tries again.
//!
//! Writes and retries: a write is retried automatically only when it certainly was not appended
//! (the target said "not leader", or the connection was refused), or when the proposal carries an
//! idempotency key, which the state machine uses to answer a repeat with the first outcome. Otherwise
//! a transport failure is returned as-is: the outcome is unknown.

use std::collections::BTreeSet;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{
    ChangeMembershipError, ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError,
};
use openraft::storage::RaftStateMachine;
use openraft::{ChangeMembers, ReadPolicy};
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};

mod router;

pub use router::Forwarder;

/// An operation only the leader can perform.
// A request lives for one call and is serialised or executed right away; boxing the large `Write`
// variant would add an allocation and buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Append a proposal and wait until it is applied.
    Write(certplane_core::Proposal),
    /// Confirm leadership with a quorum and return the index a reader must have applied.
    ReadIndex,
    /// Add a node as learner (waiting until it caught up), then, if `voter`, promote it.
    AddMember {
        id: NodeId,
        node: NodeInfo,
        voter: bool,
    },
    /// Remove a voter or learner from the membership.
    RemoveMember { id: NodeId },
    /// Ask the leader to hand leadership to `to`.
    TransferLeader { to: NodeId },
    /// Record how an existing member is reached (its API URL after a static bootstrap).
    SetNode { id: NodeId, node: NodeInfo },
}

impl ForwardRequest {
    /// Whether repeating the request after an unknown outcome is harmless.
    fn is_safe_to_repeat(&self) -> bool {
        match self {
            // The state machine answers a repeated idempotency key with the first outcome.
            ForwardRequest::Write(proposal) => proposal.idempotency_key.is_some(),
            // Membership changes and leader transfer converge to the same state when repeated.
            _ => true,
        }
    }
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardResponse {
    Written(certplane_core::Outcome),
    /// Linearizable reads may proceed on a node once it has applied `index`.
    ReadIndex {
        index: u64,
    },
    /// Index of the log entry holding the resulting membership.
    MembershipChanged {
        log_index: u64,
    },
    TransferStarted,
}

/// Why a leader-directed operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    #[error("this node is not the leader (known leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader could not be reached. For a write without idempotency key, the outcome is unknown.
    #[error("leader unreachable: {0}")]
    Unreachable(String),
    /// No leader answered before the deadline. For a write, the outcome is unknown.
    #[error("timed out waiting for the leader")]
    Timeout,
    /// Raft refused the operation (e.g. a membership change already in progress).
    #[error("raft refused the operation: {0}")]
    Raft(String),
    /// Raft has stopped on the node that handled the request.
    #[error("raft stopped: {0}")]
    Fatal(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ForwardError {
    /// Whether trying again later (possibly on another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ForwardError::NotLeader { .. } | ForwardError::Unreachable(_) | ForwardError::Timeout
        )
    }
}

impl From<ForwardToLeader<TypeConfig>> for ForwardError {
    fn from(f: ForwardToLeader<TypeConfig>) -> Self {
        ForwardError::NotLeader {
            leader: f.leader_id,
        }
    }
}

/// Performs `req` on this node, which must be the leader; answers `NotLeader` otherwise.
pub async fn execute_on_leader<SM>(
    raft: &Raft<SM>,
    req: ForwardRequest,
) -> Result<ForwardResponse, ForwardError>
where
    SM: RaftStateMachine<TypeConfig>,
{
    match req {
        ForwardRequest::Write(proposal) => {
            let resp = raft.client_write(proposal).await.map_err(write_error)?;
            Ok(ForwardResponse::Written(resp.data))
        }
        ForwardRequest::ReadIndex => {
            let (read_log_id, _applied) = raft
                .get_read_log_id(ReadPolicy::ReadIndex)
                .await
                .map_err(read_error)?;
            Ok(ForwardResponse::ReadIndex {
                index: read_log_id.index(),
            })
        }
        ForwardRequest::AddMember { id, node, voter } => {
            // Blocking: returns once the learner has caught up, so promoting it does not stall commits.
            let mut resp = raft
                .add_learner(id, node, true)
                .await
                .map_err(write_error)?;
            if voter && !raft.voter_ids().any(|v| v == id) {
                let ids = BTreeSet::from([id]);
                resp = raft
                    .change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await
                    .map_err(write_error)?;
            }
            Ok(ForwardResponse::MembershipChanged {
                log_index: resp.log_id.index,
            })
        }
        ForwardRequest::RemoveMember { id } => {
            raft.as_leader()?;
            let change = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow_watched();
                let membership = metrics.membership_config.membership();
                if membership.voter_ids().any(|v| v == id) {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else if membership.get_node(&id).is_some() {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    // Already gone: removing twice is a success, so retries are harmless.
                    let log_index = metrics
                        .membership_config
                        .log_id()
                        .as_ref()
                        .map(|l| l.index)
                        .unwrap_or(0);
                    return Ok(ForwardResponse::MembershipChanged { log_index });
                }
            };
            // retain = false: a removed voter leaves the cluster instead of staying on as learner.
            let resp = raft
                .change_membership(change, false)
                .await
                .map_err(write_error)?;
            Ok(ForwardResponse::MembershipChanged {
                log_index: resp.log_id.index,
            })
        }
        ForwardRequest::TransferLeader { to } => {
            raft.as_leader()?;
            if !raft.voter_ids().any(|v| v == to) {
                return Err(ForwardError::BadRequest(format!(
                    "node {to} is not a voter"
                )));
            }
            raft.trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| ForwardError::Fatal(e.to_string()))?;
            Ok(ForwardResponse::TransferStarted)
        }
        ForwardRequest::SetNode { id, node } => {
            raft.as_leader()?;
            let change = ChangeMembers::SetNodes(std::collections::BTreeMap::from([(id, node)]));
            let resp = raft
                .change_membership(change, false)
                .await
                .map_err(write_error)?;
            Ok(ForwardResponse::MembershipChanged {
                log_index: resp.log_id.index,
            })
        }
    }
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ForwardError {
    match e {
        RaftError::Fatal(fatal) => ForwardError::Fatal(fatal.to_string()),
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
        // Not `NotLeader`: the entry may still commit through the new leader, so this must not be
        // retried blindly.
        RaftError::APIError(e @ ClientWriteError::LogEntryDiscarded(_)) => {
            ForwardError::Raft(e.to_string())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => match e {
            ChangeMembershipError::InProgress(_)
            | ChangeMembershipError::UncommittedLeaderLog(_) => ForwardError::Raft(e.to_string()),
            _ => ForwardError::BadRequest(e.to_string()),
        },
        RaftError::APIError(e) => ForwardError::Raft(e.to_string()),
    }
}

fn read_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> ForwardError {
    match e {
        RaftError::Fatal(fatal) => ForwardError::Fatal(fatal.to_string()),
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => f.into(),
        // The leader could not hear from a quorum: the cluster is (maybe briefly) unavailable.
        RaftError::APIError(e @ LinearizableReadError::QuorumNotEnough(_)) => {
            ForwardError::Unreachable(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, what};

    #[test]
    fn retryable_errors() {
        assert!(ForwardError::NotLeader { leader: Some(2) }.is_retryable());
        assert!(ForwardError::Unreachable("x".into()).is_retryable());
        assert!(ForwardError::Timeout.is_retryable());
        assert!(!ForwardError::Raft("x".into()).is_retryable());
        assert!(!ForwardError::Fatal("x".into()).is_retryable());
        assert!(!ForwardError::BadRequest("x".into()).is_retryable());
    }

    #[test]
    fn forward_types_round_trip_through_the_codec() {
        let requests = [
            ForwardRequest::ReadIndex,
            ForwardRequest::AddMember {
                id: 3,
                node: NodeInfo {
                    cluster_addr: "node-3:7100".into(),
                    api_addr: "http://node-3:8200".into(),
                },
                voter: true,
            },
            ForwardRequest::RemoveMember { id: 2 },
            ForwardRequest::TransferLeader { to: 1 },
        ];
        for req in requests {
            let payload = codec::encode(what::FORWARD_REQUEST, &req).unwrap();
            assert_eq!(
                codec::decode::<ForwardRequest>(what::FORWARD_REQUEST, &payload).unwrap(),
                req
            );
        }
        let answers: [Result<ForwardResponse, ForwardError>; 4] = [
            Ok(ForwardResponse::ReadIndex { index: 42 }),
            Ok(ForwardResponse::Written(certplane_core::Outcome::default())),
            Err(ForwardError::NotLeader { leader: Some(1) }),
            Err(ForwardError::Timeout),
        ];
        for answer in answers {
            let payload = codec::encode(what::FORWARD_RESPONSE, &answer).unwrap();
            let back: Result<ForwardResponse, ForwardError> =
                codec::decode(what::FORWARD_RESPONSE, &payload).unwrap();
            assert_eq!(back, answer);
        }
    }

    #[test]
    fn not_leader_carries_the_hint() {
        let f = ForwardToLeader::<TypeConfig>::new(7, NodeInfo::default());
        assert_eq!(
            ForwardError::from(f),
            ForwardError::NotLeader { leader: Some(7) }
        );
        assert_eq!(
            ForwardError::from(ForwardToLeader::<TypeConfig>::empty()),
            ForwardError::NotLeader { leader: None }
        );
    }
}

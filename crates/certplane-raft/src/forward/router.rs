//! The router side of forwarding: find the leader and run the operation there.
//!
//! When no leader is known, or the node asked is no longer leader, [`Forwarder::submit`] waits for the
//! Raft metrics to show a change (bounded by a deadline, 5 s by default) and tries again; it never
//! sleeps for a fixed time. See the parent module for which failures are retried for writes.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use tokio::time::Instant;
use tonic::{Code, Request, Status};

use super::{execute_on_leader, ForwardError, ForwardRequest, ForwardResponse};
use crate::codec::{self, what};
use crate::network::PeerChannels;
use crate::types::{NodeId, NodeInfo, Raft, TypeConfig, Vote};

/// Routes leader-directed operations from any node to the leader.
pub struct Forwarder<SM>
where
    SM: RaftStateMachine<TypeConfig>,
{
    raft: Raft<SM>,
    id: NodeId,
    channels: PeerChannels,
    deadline: Duration,
}

impl<SM> Clone for Forwarder<SM>
where
    SM: RaftStateMachine<TypeConfig>,
{
    fn clone(&self) -> Self {
        Forwarder {
            raft: self.raft.clone(),
            id: self.id,
            channels: self.channels.clone(),
            deadline: self.deadline,
        }
    }
}

/// What the Raft metrics said about leadership when we picked a target.
#[derive(PartialEq)]
struct LeaderView {
    leader: Option<NodeId>,
    vote: Vote,
}

/// After a failed attempt, how long to wait for the metrics to show a new leader before trying the
/// same node again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(25);

impl<SM> Forwarder<SM>
where
    SM: RaftStateMachine<TypeConfig>,
{
    /// How long `submit` keeps looking for a leader by default: long enough for an election.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

    /// `channels` should be the same `PeerChannels` the `NetworkFactory` uses, so forwarding shares the
    /// connections to the peers.
    pub fn new(raft: Raft<SM>, id: NodeId, channels: PeerChannels) -> Self {
        Forwarder {
            raft,
            id,
            channels,
            deadline: Self::DEFAULT_DEADLINE,
        }
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Runs `req` on the leader, here or remotely, within the default deadline.
    pub async fn submit(&self, req: ForwardRequest) -> Result<ForwardResponse, ForwardError> {
        self.submit_within(req, self.deadline).await
    }

    /// Runs `req` on the leader within `deadline` (e.g. longer for adding a member, which waits for
    /// the new node to catch up).
    pub async fn submit_within(
        &self,
        req: ForwardRequest,
        deadline: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let deadline = Instant::now() + deadline;
        // A leader named by a node that refused the request; tried before our own (maybe older) view.
        let mut hint: Option<NodeId> = None;
        loop {
            let view = self.leader_view();
            let Some(target) = hint.take().or(view.leader) else {
                self.wait_for_leader(deadline).await?;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ForwardError::Timeout);
            }
            let outcome = if target == self.id {
                match tokio::time::timeout(remaining, execute_on_leader(&self.raft, req.clone()))
                    .await
                {
                    Ok(result) => result,
                    Err(_elapsed) => return Err(ForwardError::Timeout),
                }
            } else {
                match self.forward_to(target, &req, remaining).await {
                    Ok(result) => result,
                    Err(failure) => {
                        if !(failure.never_sent || req.is_safe_to_repeat()) {
                            return Err(failure.error);
                        }
                        tracing::debug!(target, error = %failure.error, "forwarding failed; retrying");
                        if self
                            .wait_for_change(
                                &view,
                                deadline.min(Instant::now() + RETRY_AFTER_FAILURE),
                            )
                            .await
                            .is_err()
                            && Instant::now() >= deadline
                        {
                            return Err(failure.error);
                        }
                        continue;
                    }
                }
            };
            match outcome {
                Err(ForwardError::NotLeader { leader }) => {
                    tracing::debug!(
                        target,
                        ?leader,
                        "asked a node that is not the leader; retrying"
                    );
                    match leader {
                        Some(l) if l != target => hint = Some(l),
                        // The target may be leader but not yet writable (a fresh leader whose lease
                        // is not confirmed yet), which no metrics change announces: retry shortly
                        // even if nothing changes.
                        _ => {
                            let retry_at = deadline.min(Instant::now() + RETRY_AFTER_FAILURE);
                            if self.wait_for_change(&view, retry_at).await.is_err()
                                && Instant::now() >= deadline
                            {
                                return Err(ForwardError::Timeout);
                            }
                        }
                    }
                }
                // The leader could not hear from a quorum in time: under load a heartbeat round
                // can miss, so a request that is safe to repeat tries again until the deadline,
                // and only a leader that stays cut off answers unavailable.
                Err(ForwardError::Unreachable(message)) if req.is_safe_to_repeat() => {
                    tracing::debug!(target, %message, "no quorum confirmed; retrying");
                    let retry_at = deadline.min(Instant::now() + RETRY_AFTER_FAILURE);
                    if Instant::now() >= deadline {
                        return Err(ForwardError::Unreachable(message));
                    }
                    let _ = self.wait_for_change(&view, retry_at).await;
                }
                other => return other,
            }
        }
    }

    /// A linearizable read barrier: gets the read index from the leader and waits until this node has
    /// applied it. Reads from the local state machine after this return are linearizable.
    pub async fn read_barrier(&self) -> Result<u64, ForwardError> {
        let deadline = Instant::now() + self.deadline;
        let index = match self.submit(ForwardRequest::ReadIndex).await? {
            ForwardResponse::ReadIndex { index } => index,
            other => {
                return Err(ForwardError::Raft(format!(
                    "unexpected answer to ReadIndex: {other:?}"
                )))
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map_err(|_| ForwardError::Timeout)?;
        Ok(index)
    }

    fn leader_view(&self) -> LeaderView {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        LeaderView {
            leader: metrics.current_leader,
            vote: metrics.vote,
        }
    }

    fn node_of(&self, id: NodeId) -> Option<NodeInfo> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), ForwardError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map(|_| ())
            .map_err(|_| ForwardError::Timeout)
    }

    /// Waits until the metrics show a different leader or vote than `seen`.
    async fn wait_for_change(&self, seen: &LeaderView, until: Instant) -> Result<(), ForwardError> {
        let remaining = until.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .metrics(
                |m| m.current_leader != seen.leader || m.vote != seen.vote,
                "leadership changed",
            )
            .await
            .map(|_| ())
            .map_err(|_| ForwardError::Timeout)
    }

    /// One Forward RPC. `Ok` holds the leader's answer; `Err` a transport failure.
    async fn forward_to(
        &self,
        target: NodeId,
        req: &ForwardRequest,
        ttl: Duration,
    ) -> Result<Result<ForwardResponse, ForwardError>, TransportFailure> {
        let Some(node) = self.node_of(target) else {
            let msg = format!("leader {target} is not in this node's membership config");
            return Err(TransportFailure {
                error: ForwardError::Unreachable(msg),
                never_sent: true,
            });
        };
        let payload = codec::encode(what::FORWARD_REQUEST, req).map_err(|e| TransportFailure {
            error: ForwardError::BadRequest(e.to_string()),
            never_sent: true,
        })?;
        let mut client =
            self.channels
                .client(&node.cluster_addr)
                .map_err(|e| TransportFailure {
                    error: ForwardError::Unreachable(e.to_string()),
                    never_sent: true,
                })?;
        let mut request = Request::new(payload);
        request.set_timeout(ttl);
        let response = match tokio::time::timeout(ttl, client.forward(request)).await {
            Err(_elapsed) => {
                return Err(TransportFailure {
                    error: ForwardError::Timeout,
                    never_sent: false,
                })
            }
            Ok(Err(status)) => return Err(TransportFailure::from_status(target, &status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        codec::decode(what::FORWARD_RESPONSE, &response).map_err(|e| TransportFailure {
            error: ForwardError::Unreachable(e.to_string()),
            never_sent: false,
        })
    }
}

/// A Forward RPC that produced no answer from the leader.
struct TransportFailure {
    error: ForwardError,
    /// True when the request certainly did not reach the leader, so repeating it is safe.
    never_sent: bool,
}

impl TransportFailure {
    fn from_status(target: NodeId, status: &Status) -> Self {
        let error = match status.code() {
            Code::DeadlineExceeded => ForwardError::Timeout,
            // The leader refused to decode our request: retrying the same bytes cannot help.
            Code::InvalidArgument => ForwardError::BadRequest(status.message().to_string()),
            _ => ForwardError::Unreachable(format!("node {target}: {status}")),
        };
        let never_sent = status.code() == Code::InvalidArgument || connection_refused(status);
        TransportFailure { error, never_sent }
    }
}

/// Whether the error chain shows a refused TCP connection: the request never left this node.
fn connection_refused(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused connection proves the request never left: the forwarder may repeat even a write
    /// without idempotency key.
    #[tokio::test]
    async fn refused_connection_is_recognised_as_never_sent() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut client = PeerChannels::new(None).client(&addr.to_string()).unwrap();
        let payload = codec::encode(what::FORWARD_REQUEST, &ForwardRequest::ReadIndex).unwrap();
        let status = client.forward(payload).await.unwrap_err();
        let failure = TransportFailure::from_status(2, &status);
        assert!(failure.never_sent, "{status:?}");
        assert!(
            matches!(failure.error, ForwardError::Unreachable(_)),
            "{:?}",
            failure.error
        );
    }

    #[test]
    fn deadline_is_not_never_sent() {
        let failure = TransportFailure::from_status(2, &Status::deadline_exceeded("slow"));
        assert!(!failure.never_sent);
        assert_eq!(failure.error, ForwardError::Timeout);
    }
}

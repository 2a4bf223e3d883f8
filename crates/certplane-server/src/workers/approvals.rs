//! The leader's approval worker: expires pending requests whose approval deadline has passed.
//!
//! Pending requests are indexed by deadline, so a pass reads only those already due. The expiry is
//! a command like any other: `apply` checks the deadline against the proposal's time, so a worker
//! with a fast clock cannot expire a request early on other nodes' behalf.

use std::sync::Arc;
use std::time::Duration;

use certplane_core::apply::{
    deadline_value, request_index_key, APPROVAL_DEADLINE_INDEX, APPROVAL_WORKER,
};
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{Command, Principal, Proposal, Timestamp};
use certplane_raft::node::RaftNode;
use tokio::sync::watch;

const EVERY: Duration = Duration::from_secs(1);
const BATCH: usize = 256;

pub fn worker_principal() -> Principal {
    Principal::system(APPROVAL_WORKER, "approval worker")
}

/// Ids of pending requests whose deadline is at or before `now`.
pub fn due(view: &impl StateRead, now: Timestamp) -> Vec<String> {
    let prefix = request_index_key(APPROVAL_DEADLINE_INDEX, "", "");
    // `kind\0` then the value: the prefix without its trailing separator byte pair.
    let prefix = &prefix[..prefix.len() - 1];
    let end = request_index_key(
        APPROVAL_DEADLINE_INDEX,
        &deadline_value(Timestamp(now.0 + 1)),
        "",
    );
    match view.scan(Keyspace::RequestIndex, prefix, &end, BATCH) {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(key, _)| {
                let text = String::from_utf8_lossy(&key).to_string();
                text.rsplit('\0').next().map(str::to_string)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "approval worker cannot read the deadline index");
            Vec::new()
        }
    }
}

pub async fn run(node: Arc<RaftNode>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if node.is_leader() {
            let now = Timestamp(crate::api::now_ms());
            for id in due(&node.view(), now) {
                let proposal = Proposal::new(
                    Timestamp(crate::api::now_ms()),
                    worker_principal(),
                    Command::ExpireApproval {
                        request_id: id.clone(),
                    },
                );
                match node.write(proposal).await {
                    Ok(outcome) => {
                        if outcome.result.is_ok() {
                            tracing::info!(request = %id, "request expired waiting for approval");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "approval expiry not applied; retrying later");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

//! The leader's expiry-notice worker: sends `certificate.expiring` when a certificate reaches its
//! zone's `notify_before` and `renew_before` thresholds.
//!
//! Each live certificate carries its notices with the time each is due, and the notice queue indexes
//! the unsent ones by that time, so a pass reads only what is already due (no scan of the
//! inventory, at failover or ever). `apply` checks the time against the proposal and marks the
//! notice sent; the event reaches subscribers through the webhook deliveries. Notices due together
//! are committed together through the worker's [`Batcher`] (decision 0013).

use std::sync::Arc;
use std::time::Duration;

use certplane_core::apply::NOTICE_WORKER;
use certplane_core::keys::expiry_key;
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{Command, Principal, Timestamp};
use certplane_raft::node::RaftNode;
use tokio::sync::watch;

use crate::workers::batch::Batcher;

const EVERY: Duration = Duration::from_secs(1);
/// Notices read per pass: bounded work per pass whatever the backlog.
const BATCH: usize = 1024;

pub fn worker_principal() -> Principal {
    Principal::system(NOTICE_WORKER, "expiry notice worker")
}

/// (certificate id, threshold) of every notice due at or before `now`, oldest first.
pub fn due(view: &impl StateRead, now: Timestamp) -> Vec<(String, String)> {
    let end = expiry_key(Timestamp(now.0.saturating_add(1)), "");
    match view.scan(Keyspace::NoticeQueue, b"", &end, BATCH) {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(key, _)| {
                let rest = std::str::from_utf8(key.get(8..)?).ok()?;
                let (id, threshold) = rest.split_once('\0')?;
                Some((id.to_string(), threshold.to_string()))
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "notice worker cannot read its queue");
            Vec::new()
        }
    }
}

pub async fn run(node: Arc<RaftNode>, mut shutdown: watch::Receiver<bool>) {
    // Notices due together (every certificate of a batch reaches its threshold in the same second)
    // share log entries instead of taking one commit round each.
    let notices = Batcher::start(node.clone(), worker_principal(), || {
        Timestamp(crate::api::now_ms())
    });
    loop {
        if *shutdown.borrow() {
            return;
        }
        if node.is_leader() {
            let due = due(&node.view(), Timestamp(crate::api::now_ms()));
            let full = due.len() >= BATCH;
            let mut sent = tokio::task::JoinSet::new();
            for (id, threshold) in due {
                let notices = notices.clone();
                sent.spawn(async move {
                    let command = Command::NotifyExpiring {
                        certificate_id: id,
                        threshold: threshold.clone(),
                    };
                    (threshold, notices.write(command).await)
                });
            }
            let mut failed = false;
            while let Some(done) = sent.join_next().await {
                match done {
                    Ok((threshold, Ok(Ok(_)))) => {
                        metrics::counter!("certplane_expiry_notices_total", "threshold" => threshold)
                            .increment(1);
                    }
                    Ok((_, Ok(Err(_)))) => {}
                    Ok((_, Err(e))) => {
                        tracing::debug!(error = %e, "expiry notice not applied; retrying later");
                        failed = true;
                    }
                    Err(_) => failed = true,
                }
            }
            if full && !failed {
                // A full pass: more notices are due; look again at once.
                continue;
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

//! Every node checks its own copy of the audit chain in the background, from where the last pass
//! stopped, and reports the result for the alert rules:
//! `certplane_audit_chain_broken` (1 once a broken link is found, with the record's sequence in
//! `certplane_audit_broken_seq`), `certplane_audit_last_verified_timestamp_seconds` and
//! `certplane_audit_verified_records`.
//!
//! Each pass reads only the records appended since the previous one, so its cost follows the write
//! rate, not the size of the history; a node restart verifies the whole chain once.

use std::sync::Arc;
use std::time::Duration;

use certplane_core::audit::{AuditRecord, ChainVerifier, GENESIS_HASH};
use certplane_core::keys::{decode_record, seq_key};
use certplane_core::store::{Keyspace, StateRead};
use certplane_raft::node::RaftNode;
use tokio::sync::watch;

const PAGE: usize = 1000;

/// Where the next pass starts: the next sequence number and the hash it must chain to.
#[derive(Debug, Clone)]
struct Position {
    seq: u64,
    prev: String,
}

/// Verify from `at` to the head; the new position, or the broken link's sequence and reason.
fn verify_from(view: &impl StateRead, at: &Position) -> Result<Position, (u64, String)> {
    let mut verifier = ChainVerifier::starting_at(at.seq, &at.prev);
    let mut next = at.seq;
    loop {
        let rows = view
            .scan(Keyspace::Audit, &seq_key(next), b"", PAGE)
            .map_err(|e| (next, format!("cannot read the audit log: {e}")))?;
        let n = rows.len();
        for (key, value) in rows {
            let key_seq = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let record =
                decode_record::<AuditRecord>("audit record", &value).map_err(|e| e.to_string());
            verifier
                .push(key_seq, record)
                .map_err(|broken| (broken.seq, broken.reason))?;
        }
        let head = verifier.head();
        next = head.seq + 1;
        if n < PAGE {
            return Ok(Position {
                seq: next,
                prev: head.hash,
            });
        }
    }
}

pub async fn run(node: Arc<RaftNode>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut at = Position {
        seq: 1,
        prev: GENESIS_HASH.to_string(),
    };
    loop {
        let view = node.view();
        let from = at.clone();
        let result = tokio::task::spawn_blocking(move || verify_from(&view, &from)).await;
        match result {
            Ok(Ok(next)) => {
                at = next;
                metrics::gauge!("certplane_audit_chain_broken").set(0.0);
                metrics::gauge!("certplane_audit_verified_records").set((at.seq - 1) as f64);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                metrics::gauge!("certplane_audit_last_verified_timestamp_seconds").set(now);
            }
            Ok(Err((seq, reason))) => {
                // Stay at the same position: every pass reports the break until it is dealt with.
                metrics::gauge!("certplane_audit_chain_broken").set(1.0);
                metrics::gauge!("certplane_audit_broken_seq").set(seq as f64);
                tracing::error!(seq, reason = %reason, "the audit chain is broken");
            }
            Err(e) => tracing::warn!(error = %e, "audit verification did not run"),
        }
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
            _ = tokio::time::sleep(every) => {}
        }
    }
}

//! Raft metrics, exported through the `metrics` crate. Names:
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `certplane_raft_term` | gauge | current term |
//! | `certplane_raft_is_leader` | gauge | 1 on the leader |
//! | `certplane_raft_leader_changes_total` | counter | times this node saw the leader change |
//! | `certplane_raft_last_log_index` | gauge | last log index |
//! | `certplane_raft_applied_index` | gauge | last applied index |
//! | `certplane_raft_replication_lag_entries` | gauge (label `peer`) | entries a member is behind (leader only) |
//! | `certplane_raft_commit_seconds` | histogram | proposal to applied outcome, as the API sees it (forwarding included) |
//! | `certplane_raft_apply_seconds` | histogram | time to apply and persist one batch |
//! | `certplane_raft_log_fsync_seconds` | histogram | time of one log WAL sync |
//! | `certplane_raft_snapshot_build_seconds` | histogram | time to build a snapshot |

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;

use crate::node::CertRaft;

pub fn spawn_raft_metrics(raft: CertRaft, mut stop: watch::Receiver<bool>) {
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        let mut last_leader = None;
        loop {
            let m = rx.borrow_watched().clone();
            metrics::gauge!("certplane_raft_term").set(m.current_term as f64);
            metrics::gauge!("certplane_raft_is_leader").set(if m.state == ServerState::Leader {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("certplane_raft_last_log_index")
                .set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("certplane_raft_applied_index")
                .set(m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0) as f64);
            if m.current_leader != last_leader {
                if last_leader.is_some() || m.current_leader.is_some() {
                    metrics::counter!("certplane_raft_leader_changes_total").increment(1);
                }
                last_leader = m.current_leader;
            }
            if let Some(replication) = &m.replication {
                let last = m.last_log_index.unwrap_or(0);
                for (peer, matched) in replication {
                    let lag = last.saturating_sub(matched.as_ref().map(|l| l.index()).unwrap_or(0));
                    metrics::gauge!("certplane_raft_replication_lag_entries", "peer" => peer.to_string()).set(lag as f64);
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = stop.changed() => break,
            }
        }
    });
}

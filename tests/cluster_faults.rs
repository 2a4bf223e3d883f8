//! In-process cluster tests with fault injection: real nodes on loopback, links cut by TCP relays.
//! Every acknowledged write must survive and every node must converge.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_for, Certs, TestCluster};

/// Import `count` certificates through `via`, as a careful client would: each with an Idempotency-Key,
/// retried on 503 (a leader change in progress) for up to 20 s. Returns the acknowledged ids.
async fn import_many(
    cluster: &TestCluster,
    certs: &Certs,
    via: u64,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let body = certs.import_body(
            &format!("{prefix}-{i}.example.com"),
            // Beyond the default 60-day notice threshold: no expiry notice is written in the
            // background while these tests compare states.
            100 + i as i64,
            "team-a",
            "web/prod",
        );
        let key = format!("{prefix}-{i}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let v = loop {
            tick.tick().await;
            let resp = cluster
                .http
                .post(format!(
                    "{}/v1/certificates/import",
                    cluster.node(via).url()
                ))
                .bearer_auth(&cluster.token)
                .header("idempotency-key", &key)
                .json(&body)
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            match status {
                200 | 201 => break v,
                503 if tokio::time::Instant::now() < deadline => continue,
                _ => panic!("import through node {via}: {status} {v}"),
            }
        };
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    ids
}

async fn assert_readable_everywhere(cluster: &TestCluster, ids: &[String]) {
    for n in cluster.running() {
        for id in ids {
            let (status, v) = cluster
                .get(n.id, &format!("/v1/certificates/{id}?consistency=stale"))
                .await;
            assert_eq!(
                status, 200,
                "node {} lost acknowledged certificate {id}: {v}",
                n.id
            );
        }
    }
}

async fn active_count(cluster: &TestCluster, id: u64) -> u64 {
    let (_, report) = cluster.get(id, "/v1/sys/node").await;
    report["certificates_active"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_follower_catches_up_after_heal() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let certs = Certs::new();
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut acked = import_many(&cluster, &certs, leader, "before", 5).await;

    cluster.partition(follower);
    acked.extend(import_many(&cluster, &certs, leader, "during", 20).await);
    // The isolated follower cannot confirm a read index: linearizable reads there must not answer.
    let (status, _) = cluster.get(follower, "/v1/certificates?limit=1").await;
    assert_eq!(
        status, 503,
        "a partitioned follower must refuse linearizable reads"
    );

    cluster.heal(follower);
    acked.extend(import_many(&cluster, &certs, follower, "after", 5).await);
    cluster.wait_converged().await;
    assert_readable_everywhere(&cluster, &acked).await;
    assert_eq!(active_count(&cluster, follower).await, 30);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_leader_is_replaced_and_loses_no_acknowledged_write() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let certs = Certs::new();
    let old_leader = cluster.leader().await;
    let mut acked = import_many(&cluster, &certs, old_leader, "first", 10).await;

    cluster.partition(old_leader);
    let majority: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();
    let new_leader = cluster.leader_among(&majority).await;
    assert_ne!(new_leader, old_leader);
    acked.extend(import_many(&cluster, &certs, majority[0], "second", 10).await);

    // A write sent to the isolated old leader cannot be acknowledged without a quorum.
    let body = certs.import_body("orphan.example.com", 10, "team-a", "web");
    let (status, v) = cluster
        .post(old_leader, "/v1/certificates/import", &body)
        .await;
    assert_eq!(status, 503, "the minority side acknowledged a write: {v}");
    assert_eq!(v["error"]["code"], "unavailable");

    cluster.heal(old_leader);
    let after = cluster.leader().await;
    assert!(majority.contains(&after) || after == old_leader);
    cluster.wait_converged().await;
    assert_readable_everywhere(&cluster, &acked).await;
    for n in 1..=3 {
        let (_, verify) = cluster.get(n, "/v1/audit/verify").await;
        assert_eq!(verify["ok"], true, "audit chain on node {n}: {verify}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_node_keeps_its_data_and_catches_up() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let certs = Certs::new();
    let leader = cluster.leader().await;
    let victim = (1..=3).find(|id| *id != leader).expect("follower");
    let mut acked = import_many(&cluster, &certs, leader, "one", 10).await;
    cluster.wait_converged().await;

    cluster.stop(victim).await;
    let survivor = (1..=3).find(|id| *id != victim).expect("survivor");
    acked.extend(import_many(&cluster, &certs, survivor, "two", 15).await);
    cluster.restart(victim).await;
    cluster.wait_converged().await;
    assert_readable_everywhere(&cluster, &acked).await;

    // Restart the leader too: the others elect a new one and nothing acknowledged is lost.
    let leader = cluster.leader().await;
    cluster.stop(leader).await;
    let rest: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.leader_among(&rest).await;
    acked.extend(import_many(&cluster, &certs, rest[0], "three", 5).await);
    cluster.restart(leader).await;
    cluster.wait_converged().await;
    assert_readable_everywhere(&cluster, &acked).await;
    assert_eq!(active_count(&cluster, leader).await, 30);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_added_after_compaction_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start(3, |c| {
        c.raft.snapshot_every = 40;
        c.raft.keep_after_snapshot = 0;
    })
    .await;
    let certs = Certs::new();
    let leader = cluster.leader().await;
    let acked = import_many(&cluster, &certs, leader, "old", 100).await;
    // Wait until the leader has compacted its log past the start.
    wait_for(
        "log compaction on the leader",
        Duration::from_secs(30),
        || async {
            let status = cluster.node(leader).handle.as_ref()?.node.status();
            (status.purged_index? > 40).then_some(())
        },
    )
    .await;

    let new_id = cluster.add_unstarted_node(|_| {}).await;
    let new_node = cluster.node(new_id);
    let body = json!({ "id": new_id, "cluster_addr": new_node.cluster_addr.to_string(), "api_addr": new_node.url() });
    let (status, v) = cluster.post(1, "/v1/sys/cluster/members", &body).await;
    assert_eq!(status, 200, "add member: {v}");
    assert!(v["members"]
        .as_array()
        .expect("members")
        .iter()
        .any(|m| m["id"] == new_id && m["voter"] == true));

    cluster.wait_converged().await;
    let status = cluster
        .node(new_id)
        .handle
        .as_ref()
        .expect("running")
        .node
        .status();
    assert!(
        status.snapshot_index.is_some(),
        "the new node must have installed a snapshot: {status:?}"
    );
    assert_readable_everywhere(&cluster, &acked).await;
    assert_eq!(active_count(&cluster, new_id).await, 100);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_restart_keeps_everything() {
    let mut cluster = TestCluster::start(3, |c| c.raft.snapshot_every = 30).await;
    let certs = Certs::new();
    let leader = cluster.leader().await;
    let acked = import_many(&cluster, &certs, leader, "keep", 50).await;
    let retired = &acked[0];
    let resp = cluster
        .http
        .delete(format!(
            "{}/v1/certificates/{retired}",
            cluster.node(leader).url()
        ))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("retire");
    assert_eq!(resp.status().as_u16(), 200);
    let (_, digest_before) = cluster.wait_converged().await;

    for id in 1..=3 {
        cluster.stop(id).await;
    }
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    let (_, digest_after) = cluster.wait_converged().await;
    assert_eq!(
        digest_before, digest_after,
        "a restart must not change the state"
    );
    assert_readable_everywhere(&cluster, &acked).await;
    let (_, v) = cluster.get(2, &format!("/v1/certificates/{retired}")).await;
    assert_eq!(v["status"], "retired");
    let (_, audit) = cluster.get(3, "/v1/audit?action=certificate.retire").await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_restore_into_a_new_cluster_reproduces_the_inventory() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let certs = Certs::new();
    let leader = cluster.leader().await;
    let acked = import_many(&cluster, &certs, leader, "saved", 40).await;
    let (_, digest) = cluster.wait_converged().await;

    // Kept outside the cluster's directory, which goes away with the old cluster.
    let backup_dir = tempfile::tempdir().expect("tempdir");
    let snapshot = backup_dir.path().join("backup.snap");
    let resp = cluster
        .http
        .get(format!("{}/v1/sys/snapshot", cluster.node(2).url()))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("snapshot");
    assert_eq!(resp.status().as_u16(), 200);
    std::fs::write(&snapshot, resp.bytes().await.expect("body")).expect("write snapshot");
    let (old_list, old_token) = {
        let (_, v) = cluster.get(1, "/v1/certificates?limit=1000").await;
        (
            v["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|c| c["id"].as_str().unwrap_or("").to_string())
                .collect::<BTreeSet<_>>(),
            cluster.token.clone(),
        )
    };
    cluster.shutdown().await;

    let restored = TestCluster::start_restored(&snapshot, 3, &old_token).await;
    restored.leader().await;
    let (_, new_digest) = restored.wait_converged().await;
    assert_eq!(
        new_digest, digest,
        "the restored cluster starts from the saved state"
    );
    let (status, v) = restored.get(3, "/v1/certificates?limit=1000").await;
    assert_eq!(status, 200, "{v}");
    let new_list: BTreeSet<String> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(new_list, old_list);
    assert_eq!(new_list.len(), acked.len());
    // The restored cluster takes writes and keeps its audit chain valid.
    let body: Value = certs.import_body("after-restore.example.com", 5, "team-b", "web");
    let (status, _) = restored.post(2, "/v1/certificates/import", &body).await;
    assert_eq!(status, 201);
    restored.wait_converged().await;
    let (_, verify) = restored.get(1, "/v1/audit/verify").await;
    assert_eq!(verify["ok"], true);
    // Each restored member records its API URL, so clients can find every node.
    wait_for(
        "API URLs in the restored membership",
        Duration::from_secs(20),
        || async {
            let (_, v) = restored.get(1, "/v1/sys/cluster").await;
            let members = v["members"].as_array()?;
            members
                .iter()
                .all(|m| {
                    m["api_addr"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("http://"))
                })
                .then_some(())
        },
    )
    .await;
    restored.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_started_with_join_becomes_a_voter_and_catches_up() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let certs = Certs::new();
    let leader = cluster.leader().await;
    let acked = import_many(&cluster, &certs, leader, "pre-join", 10).await;
    // Join through a follower's API: the membership change is forwarded to the leader.
    let follower = (1..=3).find(|id| *id != leader).expect("follower");
    let (url, token) = (cluster.node(follower).url(), cluster.token.clone());
    let new_id = cluster
        .add_unstarted_node(|c| {
            c.join = Some(url.clone());
            c.join_token = Some(token.clone());
        })
        .await;
    wait_for(
        "the joined node to be a voter",
        Duration::from_secs(30),
        || async {
            let (_, v) = cluster.get(leader, "/v1/sys/cluster").await;
            v["members"]
                .as_array()?
                .iter()
                .any(|m| m["id"] == new_id && m["voter"] == true)
                .then_some(())
        },
    )
    .await;
    cluster.wait_converged().await;
    assert_readable_everywhere(&cluster, &acked).await;
    let (_, audit) = cluster.get(new_id, "/v1/audit/verify").await;
    assert_eq!(audit["ok"], true);
    cluster.shutdown().await;
}

/// A worker's commands committed through its `Batcher`: under load several share one log entry, yet
/// each caller gets the answer to its own command (the refused ones among them included), and every
/// node applies the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_worker_commands_each_get_their_own_answer() {
    use certplane_core::command::Applied;
    use certplane_core::error::RejectCode;
    use certplane_core::{Command, Principal, Timestamp};
    use certplane_server::workers::batch::Batcher;

    const COMMANDS: u64 = 300;
    let cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let node = cluster
        .node(leader)
        .handle
        .as_ref()
        .expect("the leader runs")
        .node
        .clone();
    let before = node.status().last_log_index.unwrap_or(0);
    let batcher = Batcher::start(
        node.clone(),
        Principal::system("system:batch-test", "batch test"),
        || Timestamp(certplane_pki::testing::now_ms()),
    );
    // Every 50th drill id is invalid, so its probe is refused inside the batch that carries it.
    let drill_of = |i: u64| {
        if i % 50 == 7 {
            format!("not a drill id {i}")
        } else {
            format!("batch-{i}")
        }
    };
    let tasks: Vec<_> = (0..COMMANDS)
        .map(|i| {
            let batcher = batcher.clone();
            let drill = drill_of(i);
            tokio::spawn(async move { batcher.write(Command::Probe { drill, seq: i }).await })
        })
        .collect();
    let mut refused = 0;
    for (i, task) in (0..COMMANDS).zip(tasks) {
        match task.await.expect("the writer task") {
            Ok(Ok(Applied::Probed { drill, seq })) => {
                assert_eq!((drill.as_str(), seq), (drill_of(i).as_str(), i));
                assert!(
                    drill.starts_with("batch-"),
                    "{drill} must have been refused"
                );
            }
            Ok(Err(rejection)) => {
                assert!(
                    drill_of(i).starts_with("not a drill"),
                    "probe {i}: {rejection:?}"
                );
                assert_eq!(rejection.code, RejectCode::InvalidArgument);
                refused += 1;
            }
            other => panic!("probe {i}: {other:?}"),
        }
    }
    assert_eq!(refused, 6);
    let entries = node.status().last_log_index.unwrap_or(0) - before;
    assert!(
        entries < COMMANDS,
        "{COMMANDS} concurrent commands took {entries} entries: none were shared"
    );

    cluster.wait_converged().await;
    for n in cluster.running() {
        let view = n.handle.as_ref().expect("running").node.view();
        for i in (0..COMMANDS).filter(|i| i % 50 != 7) {
            let probe = certplane_core::apply::get_probe(&view, &drill_of(i))
                .expect("read")
                .unwrap_or_else(|| panic!("node {} lacks probe {i}", n.id));
            assert_eq!(probe.seq, i);
        }
    }
    cluster.shutdown().await;
}

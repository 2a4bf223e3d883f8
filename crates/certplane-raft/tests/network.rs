//! The node-to-node network over real sockets: wire hygiene (bad input never panics), mutual TLS,
//! and a small in-process cluster exercising replication, pre-vote, snapshot streaming, leader
//! transfer and forwarding. The state machine and log are test-only in-memory stand-ins.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use certplane_raft::codec::pb::raft_service_client::RaftServiceClient;
use certplane_raft::codec::pb::{snapshot_chunk, RaftPayload, SnapshotChunk};
use certplane_raft::codec::{self, what, SnapshotHeader, WIRE_VERSION};
use certplane_raft::forward::{ForwardError, ForwardRequest, ForwardResponse};
use certplane_raft::grpc::{self, RaftGrpcService};
use certplane_raft::network::{NetworkFactory, PeerChannels};
use certplane_raft::types::{SnapshotMeta, Vote};
use certplane_raft::{NodeInfo, TypeConfig};
use openraft::errors::RPCError;
use openraft::network::RPCOption;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use support::{noop_proposal, start_nodes, TestNode, TestPki};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn garbage() -> RaftPayload {
    RaftPayload {
        v: WIRE_VERSION,
        json: b"\x00{definitely not json".to_vec(),
    }
}

async fn plain_client(node: &TestNode) -> RaftServiceClient<tonic::transport::Channel> {
    PeerChannels::new(None)
        .client(&node.info.cluster_addr)
        .unwrap()
}

#[tokio::test]
async fn garbage_payloads_are_invalid_argument_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(1, dir.path(), None, 0).await;
    let mut client = plain_client(&node).await;

    for status in [
        client.vote(garbage()).await.unwrap_err(),
        client.pre_vote(garbage()).await.unwrap_err(),
        client.append_entries(garbage()).await.unwrap_err(),
        client.transfer_leader(garbage()).await.unwrap_err(),
        client.forward(garbage()).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    let future_version = RaftPayload {
        v: WIRE_VERSION + 1,
        json: b"{}".to_vec(),
    };
    let status = client.vote(future_version).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("unsupported wire version"),
        "{}",
        status.message()
    );

    // Still alive: a well-formed vote gets a real answer.
    let req = VoteRequest::<TypeConfig>::new(Vote::new(1, 2), None);
    let payload = codec::encode(what::VOTE_REQUEST, &req).unwrap();
    let resp = client.vote(payload).await.unwrap().into_inner();
    let _: VoteResponse<TypeConfig> = codec::decode(what::VOTE_RESPONSE, &resp).unwrap();
}

#[tokio::test]
async fn stream_append_garbage_ends_the_stream_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(1, dir.path(), None, 0).await;
    let mut client = plain_client(&node).await;
    let mut results = client
        .stream_append(futures::stream::iter([garbage()]))
        .await
        .unwrap()
        .into_inner();
    let status = results.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

fn header_chunk(size: u64) -> SnapshotChunk {
    let header = SnapshotHeader {
        vote: Vote::new_committed(1, 2),
        meta: SnapshotMeta::default(),
        size,
    };
    SnapshotChunk {
        part: Some(snapshot_chunk::Part::Header(
            codec::encode(what::SNAPSHOT_HEADER, &header).unwrap(),
        )),
    }
}

fn data_chunk(len: usize) -> SnapshotChunk {
    SnapshotChunk {
        part: Some(snapshot_chunk::Part::Data(vec![7; len])),
    }
}

#[tokio::test]
async fn malformed_snapshot_streams_are_refused_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(1, dir.path(), None, 0).await;
    let mut client = plain_client(&node).await;

    let cases: Vec<(Vec<SnapshotChunk>, &str)> = vec![
        (vec![], "missing the header"),
        (vec![data_chunk(10)], "must start with the header"),
        (
            vec![header_chunk(100), data_chunk(10)],
            "ended after 10 of 100 bytes",
        ),
        (
            vec![header_chunk(5), data_chunk(10)],
            "more than the declared",
        ),
        (
            vec![header_chunk(10), header_chunk(10)],
            "only data may follow",
        ),
        (
            vec![header_chunk(2 << 20), data_chunk((1 << 20) + 1)],
            "exceeds the 1048576 byte limit",
        ),
    ];
    for (chunks, expected) in cases {
        let status = client
            .install_snapshot(futures::stream::iter(chunks))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "expected {expected:?} in {:?}",
            status.message()
        );
    }
    assert_eq!(
        std::fs::read_dir(&node.incoming_dir).unwrap().count(),
        0,
        "partial snapshot files left behind"
    );
}

#[tokio::test]
async fn oversized_snapshot_is_refused_before_any_data() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(1, dir.path(), None, 0).await;
    // A second server on the same Raft, with a small limit.
    let service = RaftGrpcService::new(node.raft.clone(), dir.path().join("small"))
        .unwrap()
        .with_max_snapshot_bytes(1000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(grpc::serve(
        listener,
        service,
        None,
        futures::future::pending(),
    ));
    let mut client = PeerChannels::new(None).client(&addr).unwrap();
    let status = client
        .install_snapshot(futures::stream::iter([header_chunk(1001)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn dead_peer_is_unreachable_for_openraft() {
    // Bind then drop: a port nobody listens on.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut factory = NetworkFactory::new(1, PeerChannels::new(None));
    let node = NodeInfo {
        cluster_addr: addr.to_string(),
        api_addr: String::new(),
    };
    let mut conn = factory.new_client(2, &node).await;
    let req = VoteRequest::<TypeConfig>::new(Vote::new(1, 1), None);
    let err = conn
        .vote(req, RPCOption::new(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(conn.backoff().is_some());
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_cluster_certificate() {
    // The binary installs ring at start; with aws-lc-rs also compiled in, rustls needs to be told.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let node = TestNode::start(1, dir.path(), Some(pki.node_tls(1)), 0).await;
    let addr = node.info.cluster_addr.clone();

    // A member (certificate from the cluster CA) reaches the handler.
    let mut member = PeerChannels::new(Some(pki.node_tls(2)))
        .client(&addr)
        .unwrap();
    assert_eq!(
        member.vote(garbage()).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // No client certificate: the handshake fails.
    let ca = Certificate::from_pem(&pki.node_tls(2).ca_pem);
    let anonymous = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("localhost"),
        )
        .unwrap()
        .connect_lazy();
    let status = RaftServiceClient::new(anonymous)
        .vote(garbage())
        .await
        .unwrap_err();
    assert_ne!(
        status.code(),
        Code::InvalidArgument,
        "anonymous client reached the handler"
    );

    // A certificate from another CA: refused too.
    let stranger = TestPki::new().node_tls(9);
    let mut outsider = PeerChannels::new(Some(stranger)).client(&addr).unwrap();
    assert_ne!(
        outsider.vote(garbage()).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Plaintext against a TLS port: refused.
    let mut plain = PeerChannels::new(None).client(&addr).unwrap();
    assert_ne!(
        plain.vote(garbage()).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_over_plaintext() {
    run_cluster_scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_over_mutual_tls() {
    // The binary installs ring at start; with aws-lc-rs also compiled in, rustls needs to be told.
    let _ = rustls::crypto::ring::default_provider().install_default();
    run_cluster_scenario(Some(TestPki::new())).await;
}

/// Replication, forwarding from followers, read barrier, snapshot streaming to a new learner,
/// leader transfer, and forwarding across a leader failure.
async fn run_cluster_scenario(pki: Option<TestPki>) {
    // `RUST_LOG=openraft=debug` shows what the nodes did when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    // 3 MiB of ballast: every snapshot spans several 1 MiB chunks.
    let mut nodes = start_nodes(&[1, 2, 3, 4], dir.path(), pki.as_ref(), 3 << 20).await;
    let n = |nodes: &BTreeMap<u64, TestNode>, id: u64| nodes[&id].forwarder.clone();

    nodes[&1]
        .raft
        .initialize(BTreeMap::from([(1, nodes[&1].info.clone())]))
        .await
        .unwrap();
    assert_eq!(nodes[&1].wait_leader(WAIT).await, 1);
    // The leader's blank entry (index 1) applied: the initial membership is committed, so the next
    // membership change is not refused as "in progress".
    nodes[&1].wait_applied(1, WAIT).await;
    for id in [2, 3] {
        let req = ForwardRequest::AddMember {
            id,
            node: nodes[&id].info.clone(),
            voter: true,
        };
        let resp = n(&nodes, 1).submit_within(req, WAIT).await.unwrap();
        assert!(
            matches!(resp, ForwardResponse::MembershipChanged { .. }),
            "{resp:?}"
        );
    }

    // A write submitted on a follower is forwarded to the leader and answered with its outcome.
    let written = n(&nodes, 3)
        .submit(ForwardRequest::Write(noop_proposal(1, None)))
        .await
        .unwrap();
    let ForwardResponse::Written(outcome) = written else {
        panic!("unexpected {written:?}")
    };
    nodes[&3].wait_applied(outcome.index, WAIT).await;
    assert_eq!(nodes[&3].sm.writes(), 1);

    // Read barrier on another follower: once it returns, that follower has applied the write.
    let read_index = n(&nodes, 2).read_barrier().await.unwrap();
    assert!(read_index >= outcome.index);
    assert_eq!(nodes[&2].sm.writes(), 1);

    // Snapshot and purge the log on the leader; a new learner can then only catch up by snapshot.
    for i in 2..=5 {
        n(&nodes, 2)
            .submit(ForwardRequest::Write(noop_proposal(i, None)))
            .await
            .unwrap();
    }
    let leader = &nodes[&1].raft;
    leader.trigger().snapshot().await.unwrap();
    let snap = leader
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "snapshot")
        .await
        .unwrap()
        .snapshot;
    leader
        .trigger()
        .purge_log(snap.unwrap().index)
        .await
        .unwrap();
    leader
        .wait(Some(WAIT))
        .metrics(|m| m.purged == snap, "purged")
        .await
        .unwrap();

    let req = ForwardRequest::AddMember {
        id: 4,
        node: nodes[&4].info.clone(),
        voter: false,
    };
    n(&nodes, 2).submit_within(req, WAIT).await.unwrap();
    let m4 = nodes[&4]
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "snapshot installed")
        .await
        .unwrap();
    assert_eq!(m4.snapshot, snap);
    assert_eq!(nodes[&4].sm.writes(), 5);
    assert_eq!(
        std::fs::read_dir(&nodes[&4].incoming_dir).unwrap().count(),
        0,
        "incoming snapshot not taken over"
    );

    // Leader transfer requested on a follower.
    n(&nodes, 3)
        .submit(ForwardRequest::TransferLeader { to: 2 })
        .await
        .unwrap();
    for id in [1, 3] {
        nodes[&id]
            .raft
            .wait(Some(WAIT))
            .current_leader(2, "transferred")
            .await
            .unwrap();
    }
    let written = n(&nodes, 1)
        .submit(ForwardRequest::Write(noop_proposal(6, None)))
        .await
        .unwrap();
    assert!(
        matches!(written, ForwardResponse::Written(_)),
        "{written:?}"
    );

    // The leader dies; a write with an idempotency key submitted on a follower waits for the new
    // leader and goes through.
    nodes.get_mut(&2).unwrap().kill().await;
    let resp = n(&nodes, 3)
        .submit(ForwardRequest::Write(noop_proposal(7, Some("k-7"))))
        .await
        .unwrap();
    let ForwardResponse::Written(outcome) = resp else {
        panic!("unexpected {resp:?}")
    };
    for id in [1, 3] {
        nodes[&id].wait_applied(outcome.index, WAIT).await;
        assert_eq!(nodes[&id].sm.writes(), 7);
    }

    // Remove the dead node; removing it again is a harmless success.
    let remove = || ForwardRequest::RemoveMember { id: 2 };
    assert!(matches!(
        n(&nodes, 4).submit(remove()).await.unwrap(),
        ForwardResponse::MembershipChanged { .. }
    ));
    assert!(matches!(
        n(&nodes, 1).submit(remove()).await.unwrap(),
        ForwardResponse::MembershipChanged { .. }
    ));
    let bad = n(&nodes, 1)
        .submit(ForwardRequest::TransferLeader { to: 42 })
        .await
        .unwrap_err();
    assert!(matches!(bad, ForwardError::BadRequest(_)), "{bad:?}");

    for (_, mut node) in nodes {
        node.kill().await;
    }
}

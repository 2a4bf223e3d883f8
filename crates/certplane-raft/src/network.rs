//! Client side of the node-to-node network: how this node's openraft reaches its peers.
//!
//! ```text
//!  openraft replication ──► PeerConnection (one per target, made by NetworkFactory)
//!  Forwarder (forward.rs) ─┐        │ RaftServiceClient
//!                          └──────► PeerChannels: one lazily connected HTTP/2 channel per cluster_addr
//! ```
//!
//! All RPCs to a peer share one tonic `Channel` (HTTP/2 multiplexes them, so heartbeats are not
//! stuck behind a snapshot). Channels connect lazily: `new_client` never blocks, and a peer that is
//! down costs one failed connect per retry, spaced by [`NetworkFactory`]'s backoff.
//!
//! Error mapping, for openraft's retry policy: a peer we cannot connect to (`Unavailable`) is
//! `Unreachable` (back off), a call that runs past its budget is `Timeout`, anything else —
//! including a payload we cannot decode — is `Network` (retry soon).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RPCTypes, RaftNetworkFactory, RaftNetworkV2, StorageError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::codec::pb::raft_service_client::RaftServiceClient;
use crate::codec::pb::{self, snapshot_chunk};
use crate::codec::{self, what, CodecError, SnapshotHeader, What, SNAPSHOT_CHUNK_SIZE};
use crate::tls::{tls_domain, ClusterTls};
use crate::types::{NodeId, NodeInfo, SnapshotFile, TypeConfig, Vote};

type RpcError = RPCError<TypeConfig>;
pub type RaftClient = RaftServiceClient<Channel>;

/// Largest gRPC message either side accepts or sends. AppendEntries batches are bounded by openraft's
/// `max_payload_entries`; this is the safety net above that, well over the 1 MiB snapshot chunks.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Transport settings for peer channels.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Budget for the TCP (and TLS) connect. Short: peers are on a private network, and openraft
    /// retries through its backoff anyway.
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval. Detects a silently dead peer (e.g. a network partition) on long-lived
    /// streams, where no per-call deadline applies.
    pub keepalive_interval: Duration,
    /// How long to wait for a PING answer before closing the connection.
    pub keepalive_timeout: Duration,
    /// Dial another address than a peer's advertised one (`cluster_addr` -> `host:port`). Empty in
    /// production; fault-injection tests route each link through a relay they can cut.
    pub dial_overrides: HashMap<String, String>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connect_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            dial_overrides: HashMap::new(),
        }
    }
}

/// The address could not be turned into a channel (a configuration problem, not a network one).
#[derive(Debug, thiserror::Error)]
#[error("cannot open a channel to peer {addr}: {reason}")]
pub struct ChannelError {
    pub addr: String,
    pub reason: String,
}

/// One cached channel per peer `cluster_addr`, shared by Raft replication and forwarding.
///
/// Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct PeerChannels {
    inner: Arc<PeerChannelsInner>,
}

struct PeerChannelsInner {
    tls: Option<ClusterTls>,
    config: ChannelConfig,
    /// A std `Mutex`: held only to look up or insert, never across an `.await`, and creating a lazy
    /// channel does no I/O.
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerChannels {
    /// `tls: None` is the plaintext `--insecure` development mode.
    pub fn new(tls: Option<ClusterTls>) -> Self {
        Self::with_config(tls, ChannelConfig::default())
    }

    pub fn with_config(tls: Option<ClusterTls>, config: ChannelConfig) -> Self {
        PeerChannels { inner: Arc::new(PeerChannelsInner { tls, config, channels: Mutex::new(HashMap::new()) }) }
    }

    /// The channel to `cluster_addr` (`host:port`), created on first use. It connects lazily and
    /// reconnects by itself after the peer restarts.
    pub fn channel(&self, cluster_addr: &str) -> Result<Channel, ChannelError> {
        let mut channels = self.lock();
        if let Some(channel) = channels.get(cluster_addr) {
            return Ok(channel.clone());
        }
        let channel = self.connect_lazy(cluster_addr)?;
        channels.insert(cluster_addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A Raft service client to `cluster_addr`, with the message size limits set.
    pub fn client(&self, cluster_addr: &str) -> Result<RaftClient, ChannelError> {
        let channel = self.channel(cluster_addr)?;
        Ok(RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Drops the cached channel, e.g. after a node left the cluster.
    pub fn forget(&self, cluster_addr: &str) {
        self.lock().remove(cluster_addr);
    }

    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // A panic while holding the lock cannot leave the map half-updated (single insert/remove),
        // so a poisoned lock is still safe to use.
        self.inner.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connect_lazy(&self, cluster_addr: &str) -> Result<Channel, ChannelError> {
        let fail = |reason: String| ChannelError { addr: cluster_addr.to_string(), reason };
        let scheme = if self.is_tls() { "https" } else { "http" };
        let config = &self.inner.config;
        let dial = config.dial_overrides.get(cluster_addr).map(String::as_str).unwrap_or(cluster_addr);
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{dial}"))
            .map_err(|e| fail(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.inner.tls {
            endpoint = endpoint.tls_config(tls.client_config(&tls_domain(cluster_addr))).map_err(|e| fail(e.to_string()))?;
        }
        Ok(endpoint.connect_lazy())
    }
}

/// Creates the per-target connections openraft asks for.
#[derive(Clone)]
pub struct NetworkFactory {
    /// This node's id, reported in openraft `Timeout` errors.
    id: NodeId,
    channels: PeerChannels,
    backoff: Duration,
}

impl NetworkFactory {
    /// Delay between retries to an unreachable peer. Short enough that a restarted peer is back in
    /// replication within a heartbeat or two, long enough not to spin on a dead one.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);

    pub fn new(id: NodeId, channels: PeerChannels) -> Self {
        NetworkFactory { id, channels, backoff: Self::DEFAULT_BACKOFF }
    }

    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn channels(&self) -> &PeerChannels {
        &self.channels
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerConnection {
            id: self.id,
            target,
            addr: node.cluster_addr.clone(),
            channels: self.channels.clone(),
            backoff: self.backoff,
        }
    }
}

/// openraft's view of one peer. Holds no connection itself; it borrows the shared channel per call.
pub struct PeerConnection {
    id: NodeId,
    target: NodeId,
    addr: String,
    channels: PeerChannels,
    backoff: Duration,
}

impl PeerConnection {
    fn client(&self) -> Result<RaftClient, RpcError> {
        self.channels.client(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    fn timeout_error(&self, action: RPCTypes, timeout: Duration) -> Timeout<TypeConfig> {
        Timeout { action, id: self.id, target: self.target, timeout }
    }

    /// One request/response RPC with a deadline. `call` picks the RPC method.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        (req_what, resp_what): (What, What),
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient, Request<pb::RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::RaftPayload>, Status>>,
    {
        let payload = codec::encode(req_what, req).map_err(codec_error)?;
        // openraft's soft TTL: a deadline that ends before openraft's own hard limit, so the error
        // is ours (and precise) rather than a cancelled future.
        let ttl = option.soft_ttl();
        let mut request = Request::new(payload);
        request.set_timeout(ttl); // tells the server to give up too
        let response = match tokio::time::timeout(ttl, call(self.client()?, request)).await {
            Err(_elapsed) => return Err(RPCError::Timeout(self.timeout_error(action, ttl))),
            Ok(Err(status)) => return Err(status_to_rpc_error(status, || self.timeout_error(action, ttl))),
            Ok(Ok(response)) => response.into_inner(),
        };
        codec::decode(resp_what, &response).map_err(codec_error)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let whats = (what::APPEND_REQUEST, what::APPEND_RESPONSE);
        self.unary(RPCTypes::AppendEntries, whats, &rpc, &option, |mut c, r| async move { c.append_entries(r).await })
            .await
    }

    /// Native bidirectional streaming: requests flow out as openraft produces them and results come
    /// back in order, so replication is pipelined instead of one round trip per batch.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcError>>, RpcError>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            // A request we cannot encode ends the outbound stream: skipping it would leave a gap,
            // and ending lets openraft resume from the follower's last acknowledged entry.
            let outbound = input
                .map(|req| codec::encode(what::APPEND_REQUEST, &req))
                .take_while(|encoded| {
                    if let Err(e) = encoded {
                        tracing::error!(error = %e, "ending replication stream");
                    }
                    futures::future::ready(encoded.is_ok())
                })
                .filter_map(|encoded| futures::future::ready(encoded.ok()));

            // The soft TTL bounds stream setup only: the stream itself lives as long as openraft
            // feeds it, and a dead peer is detected by HTTP/2 keepalive.
            let ttl = option.soft_ttl();
            let (id, target) = (self.id, self.target);
            let timeout = move || Timeout { action: RPCTypes::AppendEntries, id, target, timeout: ttl };
            let inbound = match tokio::time::timeout(ttl, client.stream_append(Request::new(outbound))).await {
                Err(_elapsed) => return Err(RPCError::Timeout(timeout())),
                Ok(Err(status)) => return Err(status_to_rpc_error(status, timeout)),
                Ok(Ok(response)) => response.into_inner(),
            };

            // The output ends after the first error, as openraft expects (a conflict, a higher vote,
            // or a transport failure all end the session).
            let mut ended = false;
            let results = inbound
                .map(move |item| {
                    let payload = item.map_err(|status| status_to_rpc_error(status, timeout))?;
                    codec::decode::<StreamAppendResult<TypeConfig>>(what::STREAM_APPEND_RESULT, &payload)
                        .map_err(codec_error)
                })
                .take_while(move |result| {
                    let keep = !ended;
                    ended = !matches!(result, Ok(Ok(_)));
                    futures::future::ready(keep)
                });
            let results: BoxStream<'s, _> = Box::pin(results);
            Ok(results)
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let whats = (what::VOTE_REQUEST, what::VOTE_RESPONSE);
        self.unary(RPCTypes::Vote, whats, &rpc, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let whats = (what::VOTE_REQUEST, what::VOTE_RESPONSE);
        self.unary(RPCTypes::Vote, whats, &rpc, &option, |mut c, r| async move { c.pre_vote(r).await }).await
    }

    /// Streams the snapshot file in 1 MiB chunks; never holds more than a few chunks in memory.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let path = snapshot.snapshot.path;
        let read_error = |e: std::io::Error| StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let mut file = tokio::fs::File::open(&path).await.map_err(read_error)?;
        let size = file.metadata().await.map_err(read_error)?.len();
        let header = SnapshotHeader { vote, meta: snapshot.meta, size };
        tracing::info!(target = self.target, %header, "sending snapshot");
        let header = codec::encode(what::SNAPSHOT_HEADER, &header).map_err(codec_error)?;
        let mut client = self.client()?;

        // openraft's snapshot TTL (`install_snapshot_timeout`, 200 ms by default) cannot cover a
        // multi-gigabyte transfer, so it bounds the progress of each chunk instead, with a floor.
        let progress_ttl = option.soft_ttl().max(SNAPSHOT_PROGRESS_FLOOR);
        let stalled = self.timeout_error(RPCTypes::InstallSnapshot, progress_ttl);

        // Two chunks in flight at most: the channel is the memory bound of the sender.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::SnapshotChunk>(2);
        let send = async move {
            let send_chunk = |part| {
                let tx = tx.clone();
                let stalled = stalled.clone();
                async move {
                    match tokio::time::timeout(progress_ttl, tx.send(pb::SnapshotChunk { part: Some(part) })).await {
                        Err(_elapsed) => Err(StreamingError::Timeout(stalled)),
                        // The call ended (the receiver is gone); its status explains why.
                        Ok(Err(_closed)) => Err(StreamingError::Network(NetworkError::from_string("snapshot call ended"))),
                        Ok(Ok(())) => Ok(()),
                    }
                }
            };
            send_chunk(snapshot_chunk::Part::Header(header)).await?;
            let mut sent = 0u64;
            loop {
                let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_SIZE);
                let n = (&mut file).take(SNAPSHOT_CHUNK_SIZE as u64).read_to_end(&mut buf).await.map_err(read_error)?;
                if n == 0 {
                    break;
                }
                sent += n as u64;
                send_chunk(snapshot_chunk::Part::Data(buf)).await?;
            }
            if sent != size {
                // Snapshot files are immutable; a size change means something else wrote to it. The
                // receiver rejects the stream anyway (size mismatch); say why here.
                let e = std::io::Error::other(format!("{} changed while sending: {size} -> {sent} bytes", path.display()));
                return Err(read_error(e).into());
            }
            Ok::<(), StreamingError<TypeConfig>>(())
            // `tx` drops here, which ends the request stream.
        };
        let call = client.install_snapshot(Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
        let transfer = async {
            let (call_result, send_result) = tokio::join!(call, send);
            let timeout = || self.timeout_error(RPCTypes::InstallSnapshot, progress_ttl);
            // The call's status is the better explanation when both failed (e.g. the receiver refused
            // the snapshot, which also made our sends fail).
            let response = call_result.map_err(|status| StreamingError::from(status_to_rpc_error(status, timeout)))?;
            send_result?;
            codec::decode::<SnapshotResponse<TypeConfig>>(what::SNAPSHOT_RESPONSE, &response.into_inner())
                .map_err(|e| StreamingError::from(codec_error(e)))
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = transfer => result,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        let whats = (what::TRANSFER_LEADER_REQUEST, what::TRANSFER_LEADER_RESPONSE);
        self.unary(RPCTypes::TransferLeader, whats, &req, &option, |mut c, r| async move { c.transfer_leader(r).await })
            .await
    }

    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(std::iter::repeat(self.backoff)))
    }
}

/// Lower bound for the per-chunk progress deadline of a snapshot transfer.
const SNAPSHOT_PROGRESS_FLOOR: Duration = Duration::from_secs(10);

/// Maps a gRPC status to openraft's retry classes.
///
/// `Unavailable` is what tonic reports when it cannot connect (refused, connect timeout, TLS
/// handshake failure) and what our server answers when its Raft has stopped: back off.
pub(crate) fn status_to_rpc_error(status: Status, timeout: impl FnOnce() -> Timeout<TypeConfig>) -> RpcError {
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        Code::DeadlineExceeded => RPCError::Timeout(timeout()),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn codec_error(e: CodecError) -> RpcError {
    RPCError::Network(NetworkError::new(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_cached_per_address() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Endpoint::connect_lazy needs a runtime to spawn its background task.
        rt.block_on(async {
            let channels = PeerChannels::new(None);
            channels.channel("127.0.0.1:1").unwrap();
            channels.channel("127.0.0.1:1").unwrap();
            channels.channel("127.0.0.1:2").unwrap();
            assert_eq!(channels.lock().len(), 2);
            channels.forget("127.0.0.1:1");
            assert_eq!(channels.lock().len(), 1);
        });
    }

    #[test]
    fn bad_address_is_an_error_not_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let err = PeerChannels::new(None).channel("not a host:port").unwrap_err();
            assert!(err.to_string().contains("not a host:port"), "{err}");
        });
    }

    #[test]
    fn status_mapping_matches_openraft_retry_classes() {
        let t = || Timeout { action: RPCTypes::Vote, id: 1, target: 2, timeout: Duration::from_millis(1) };
        assert!(matches!(status_to_rpc_error(Status::unavailable("down"), t), RPCError::Unreachable(_)));
        assert!(matches!(status_to_rpc_error(Status::deadline_exceeded("slow"), t), RPCError::Timeout(_)));
        assert!(matches!(status_to_rpc_error(Status::invalid_argument("bad"), t), RPCError::Network(_)));
        assert!(matches!(status_to_rpc_error(Status::internal("oops"), t), RPCError::Network(_)));
    }
}

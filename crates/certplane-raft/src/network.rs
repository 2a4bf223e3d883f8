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

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{
    ErrorSubject, ErrorVerb, OptionalSend, RPCTypes, RaftNetworkFactory, RaftNetworkV2,
    StorageError,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tonic::{Code, Request, Status};

use crate::codec::pb::{self, snapshot_chunk};
use crate::codec::{self, what, CodecError, SnapshotHeader, What, SNAPSHOT_CHUNK_SIZE};
use crate::types::{NodeId, NodeInfo, SnapshotFile, TypeConfig, Vote};

mod peers;

pub use peers::{ChannelConfig, ChannelError, PeerChannels, RaftClient, MAX_MESSAGE_BYTES};

type RpcError = RPCError<TypeConfig>;

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
        NetworkFactory {
            id,
            channels,
            backoff: Self::DEFAULT_BACKOFF,
        }
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
        self.channels
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    fn timeout_error(&self, action: RPCTypes, timeout: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.id,
            target: self.target,
            timeout,
        }
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
            Ok(Err(status)) => {
                return Err(status_to_rpc_error(status, || {
                    self.timeout_error(action, ttl)
                }))
            }
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
        self.unary(
            RPCTypes::AppendEntries,
            whats,
            &rpc,
            &option,
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
    }

    /// Native bidirectional streaming: requests flow out as openraft produces them and results come
    /// back in order, so replication is pipelined instead of one round trip per batch.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcError>>, RpcError>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            // Wait for the first request before connecting. openraft applies its backoff (after
            // `Unreachable`) while producing the next request; a transport that connected first
            // would fail fast against a dead peer and retry in a tight loop.
            let mut input = input;
            let Some(first) = input.next().await else {
                let nothing: BoxStream<'s, _> = Box::pin(futures::stream::empty());
                return Ok(nothing);
            };
            let mut client = self.client()?;
            // A request we cannot encode ends the outbound stream: skipping it would leave a gap,
            // and ending lets openraft resume from the follower's last acknowledged entry.
            let outbound = futures::stream::once(futures::future::ready(first))
                .chain(input)
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
            let timeout = move || Timeout {
                action: RPCTypes::AppendEntries,
                id,
                target,
                timeout: ttl,
            };
            let inbound =
                match tokio::time::timeout(ttl, client.stream_append(Request::new(outbound))).await
                {
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
                    codec::decode::<StreamAppendResult<TypeConfig>>(
                        what::STREAM_APPEND_RESULT,
                        &payload,
                    )
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

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let whats = (what::VOTE_REQUEST, what::VOTE_RESPONSE);
        self.unary(
            RPCTypes::Vote,
            whats,
            &rpc,
            &option,
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let whats = (what::VOTE_REQUEST, what::VOTE_RESPONSE);
        self.unary(
            RPCTypes::Vote,
            whats,
            &rpc,
            &option,
            |mut c, r| async move { c.pre_vote(r).await },
        )
        .await
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
        let read_error = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)
        };
        let mut file = tokio::fs::File::open(&path).await.map_err(read_error)?;
        let size = file.metadata().await.map_err(read_error)?.len();
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta,
            size,
        };
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
                    match tokio::time::timeout(
                        progress_ttl,
                        tx.send(pb::SnapshotChunk { part: Some(part) }),
                    )
                    .await
                    {
                        Err(_elapsed) => Err(StreamingError::Timeout(stalled)),
                        // The call ended (the receiver is gone); its status explains why.
                        Ok(Err(_closed)) => Err(StreamingError::Network(
                            NetworkError::from_string("snapshot call ended"),
                        )),
                        Ok(Ok(())) => Ok(()),
                    }
                }
            };
            send_chunk(snapshot_chunk::Part::Header(header)).await?;
            let mut sent = 0u64;
            loop {
                let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_SIZE);
                let n = (&mut file)
                    .take(SNAPSHOT_CHUNK_SIZE as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(read_error)?;
                if n == 0 {
                    break;
                }
                sent += n as u64;
                send_chunk(snapshot_chunk::Part::Data(buf)).await?;
            }
            if sent != size {
                // Snapshot files are immutable; a size change means something else wrote to it. The
                // receiver rejects the stream anyway (size mismatch); say why here.
                let e = std::io::Error::other(format!(
                    "{} changed while sending: {size} -> {sent} bytes",
                    path.display()
                ));
                return Err(read_error(e).into());
            }
            Ok::<(), StreamingError<TypeConfig>>(())
            // `tx` drops here, which ends the request stream.
        };
        let call = client.install_snapshot(Request::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let transfer = async {
            let (call_result, send_result) = tokio::join!(call, send);
            let timeout = || self.timeout_error(RPCTypes::InstallSnapshot, progress_ttl);
            // The call's status is the better explanation when both failed (e.g. the receiver refused
            // the snapshot, which also made our sends fail).
            let response = call_result
                .map_err(|status| StreamingError::from(status_to_rpc_error(status, timeout)))?;
            send_result?;
            codec::decode::<SnapshotResponse<TypeConfig>>(
                what::SNAPSHOT_RESPONSE,
                &response.into_inner(),
            )
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
        let whats = (
            what::TRANSFER_LEADER_REQUEST,
            what::TRANSFER_LEADER_RESPONSE,
        );
        self.unary(
            RPCTypes::TransferLeader,
            whats,
            &req,
            &option,
            |mut c, r| async move { c.transfer_leader(r).await },
        )
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
pub(crate) fn status_to_rpc_error(
    status: Status,
    timeout: impl FnOnce() -> Timeout<TypeConfig>,
) -> RpcError {
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
    fn status_mapping_matches_openraft_retry_classes() {
        let t = || Timeout {
            action: RPCTypes::Vote,
            id: 1,
            target: 2,
            timeout: Duration::from_millis(1),
        };
        assert!(matches!(
            status_to_rpc_error(Status::unavailable("down"), t),
            RPCError::Unreachable(_)
        ));
        assert!(matches!(
            status_to_rpc_error(Status::deadline_exceeded("slow"), t),
            RPCError::Timeout(_)
        ));
        assert!(matches!(
            status_to_rpc_error(Status::invalid_argument("bad"), t),
            RPCError::Network(_)
        ));
        assert!(matches!(
            status_to_rpc_error(Status::internal("oops"), t),
            RPCError::Network(_)
        ));
    }
}

//! Server side of the node-to-node network: the `RaftService` gRPC service.
//!
//! ```text
//!  peer ──gRPC──► RaftGrpcService ──► Raft::{vote, pre_vote, append_entries, stream_append,
//!                                          install_full_snapshot, handle_transfer_leader}
//!                                 └─► forward::execute_on_leader (Forward RPC from followers)
//! ```
//!
//! Handlers translate and delegate; they decide nothing. Input from the wire is never trusted: a
//! payload that does not decode is answered with `InvalidArgument`, and a stopped Raft with
//! `Unavailable` (so the caller backs off, see `network.rs`).
//!
//! Snapshots arrive as a stream and are written to a uniquely named file in `snapshot_incoming_dir`,
//! fsync'd, and handed to openraft as a [`SnapshotFile`]. Contract with the state machine:
//! `install_snapshot` takes the file over by moving it out of the incoming directory (or deleting it).
//! Whatever is still at the incoming path after installation was not installed and is removed.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use openraft::Snapshot;
use tokio::io::AsyncWriteExt;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::pb::raft_service_server::{RaftService, RaftServiceServer};
use crate::codec::pb::{self, snapshot_chunk};
use crate::codec::{self, what, SnapshotHeader, SNAPSHOT_CHUNK_SIZE};
use crate::forward::{execute_on_leader, ForwardError, ForwardRequest, ForwardResponse};
use crate::network::MAX_MESSAGE_BYTES;
use crate::tls::ClusterTls;
use crate::types::{Raft, SnapshotFile, TypeConfig};

/// Prefix of files being received; anything with it in the incoming directory at start-up is a
/// leftover of an interrupted transfer.
const INCOMING_PREFIX: &str = "incoming-";

/// Serves this node's Raft to its peers.
pub struct RaftGrpcService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    raft: Raft<SM>,
    snapshot_incoming_dir: PathBuf,
    max_snapshot_bytes: u64,
}

impl<SM> RaftGrpcService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    /// Largest snapshot accepted by default. Far above what millions of certificates need; its job
    /// is to stop a runaway or hostile stream from filling the disk.
    pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;

    /// Creates the incoming directory if needed and removes leftovers of interrupted transfers.
    pub fn new(raft: Raft<SM>, snapshot_incoming_dir: impl Into<PathBuf>) -> io::Result<Self> {
        let snapshot_incoming_dir = snapshot_incoming_dir.into();
        std::fs::create_dir_all(&snapshot_incoming_dir)?;
        for entry in std::fs::read_dir(&snapshot_incoming_dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(INCOMING_PREFIX)
            {
                tracing::info!(path = %entry.path().display(), "removing partial incoming snapshot");
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(RaftGrpcService {
            raft,
            snapshot_incoming_dir,
            max_snapshot_bytes: Self::DEFAULT_MAX_SNAPSHOT_BYTES,
        })
    }

    pub fn with_max_snapshot_bytes(mut self, max_snapshot_bytes: u64) -> Self {
        self.max_snapshot_bytes = max_snapshot_bytes;
        self
    }

    /// The tonic service with explicit message limits, to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> RaftServiceServer<Self> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// A server with the transport settings of the cluster port and the Raft service added.
/// More services (e.g. health) can be added to the returned router before serving.
pub fn router<SM>(
    service: RaftGrpcService<SM>,
    tls: Option<&ClusterTls>,
) -> Result<Router, tonic::transport::Error>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        // Mirrors the client keepalive: a vanished peer's streams are torn down instead of hanging.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    Ok(builder.add_service(service.into_server()))
}

/// Serves the Raft service on `listener` until `shutdown` resolves. `tls: None` is plaintext
/// (`--insecure`). Tests bind `127.0.0.1:0` and pass the listener in.
pub async fn serve<SM>(
    listener: tokio::net::TcpListener,
    service: RaftGrpcService<SM>,
    tls: Option<ClusterTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    router(service, tls.as_ref())?
        .serve_with_incoming_shutdown(
            // TCP_NODELAY on every accepted socket: the builder's `tcp_nodelay` only covers sockets it
            // binds itself, and with TLS, Nagle plus delayed ACKs adds ~40 ms to each response.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<pb::RaftPayload, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<SM> RaftService for RaftGrpcService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req = codec::decode(what::VOTE_REQUEST, request.get_ref())?;
        let resp = self.raft.vote(req).await.map_err(|e| fatal_status(&e))?;
        reply(what::VOTE_RESPONSE, &resp)
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req = codec::decode(what::VOTE_REQUEST, request.get_ref())?;
        let resp = self
            .raft
            .pre_vote(req)
            .await
            .map_err(|e| fatal_status(&e))?;
        reply(what::VOTE_RESPONSE, &resp)
    }

    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req = codec::decode(what::APPEND_REQUEST, request.get_ref())?;
        let resp = self
            .raft
            .append_entries(req)
            .await
            .map_err(|e| fatal_status(&e))?;
        reply(what::APPEND_RESPONSE, &resp)
    }

    type StreamAppendStream = ResultStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // The first undecodable request ends the input; its error is sent after the results of the
        // requests before it, so the sender learns why the stream ended.
        let bad_input: Arc<Mutex<Option<Status>>> = Arc::default();
        let record = bad_input.clone();
        let requests = request.into_inner().scan((), move |_, item| {
            let next = match item {
                Ok(payload) => match codec::decode(what::APPEND_REQUEST, &payload) {
                    Ok(req) => Some(req),
                    Err(e) => {
                        *lock(&record) = Some(Status::from(e));
                        None
                    }
                },
                // The sender went away; there is nobody to tell.
                Err(status) => {
                    tracing::debug!(%status, "replication stream from leader ended");
                    None
                }
            };
            futures::future::ready(next)
        });
        let results = self
            .raft
            .stream_append(requests)
            .map(|result| match result {
                Ok(append_result) => Ok(codec::encode(what::STREAM_APPEND_RESULT, &append_result)?),
                Err(fatal) => Err(fatal_status(&fatal)),
            });
        let trailer = futures::stream::once(async move { lock(&bad_input).take().map(Err) })
            .filter_map(futures::future::ready);
        Ok(Response::new(Box::pin(results.chain(trailer))))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let mut chunks = request.into_inner();
        let header: SnapshotHeader = match chunks.message().await? {
            Some(pb::SnapshotChunk {
                part: Some(snapshot_chunk::Part::Header(payload)),
            }) => codec::decode(what::SNAPSHOT_HEADER, &payload)?,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "snapshot stream must start with the header (vote and meta)",
                ))
            }
            None => {
                return Err(Status::invalid_argument(
                    "empty snapshot stream: missing the header (vote and meta)",
                ))
            }
        };
        if header.size > self.max_snapshot_bytes {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes exceeds this node's maximum of {} bytes",
                header.size, self.max_snapshot_bytes
            )));
        }
        check_snapshot_within_vote(&header)?;
        tracing::info!(%header, "receiving snapshot");

        let mut incoming = IncomingFile::create(&self.snapshot_incoming_dir, &header).await?;
        let mut received = 0u64;
        while let Some(chunk) = chunks.message().await? {
            let Some(snapshot_chunk::Part::Data(data)) = chunk.part else {
                return Err(Status::invalid_argument(
                    "snapshot stream: only data may follow the header",
                ));
            };
            if data.len() > SNAPSHOT_CHUNK_SIZE {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk of {} bytes exceeds the {SNAPSHOT_CHUNK_SIZE} byte limit",
                    data.len()
                )));
            }
            received += data.len() as u64;
            if received > header.size {
                return Err(Status::invalid_argument(format!(
                    "snapshot stream carries more than the declared {} bytes",
                    header.size
                )));
            }
            incoming
                .file
                .write_all(&data)
                .await
                .map_err(|e| io_status("writing snapshot", &e))?;
        }
        if received != header.size {
            return Err(Status::invalid_argument(format!(
                "snapshot stream ended after {received} of {} bytes",
                header.size
            )));
        }
        let path = incoming.finish().await?;

        // Installation runs in its own task: once openraft has the file, a caller that disconnects
        // must not cancel the clean-up below (or remove the file under the state machine).
        let raft = self.raft.clone();
        let install = tokio::spawn(async move {
            let snapshot = Snapshot {
                meta: header.meta,
                snapshot: SnapshotFile { path: path.clone() },
            };
            let result = raft.install_full_snapshot(header.vote, snapshot).await;
            if let Err(e) = remove_if_exists(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove uninstalled incoming snapshot");
            }
            result
        });
        let resp = install
            .await
            .map_err(|e| Status::internal(format!("snapshot installation task failed: {e}")))?
            .map_err(|e| fatal_status(&e))?;
        reply(what::SNAPSHOT_RESPONSE, &resp)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req = codec::decode(what::TRANSFER_LEADER_REQUEST, request.get_ref())?;
        let resp = self
            .raft
            .handle_transfer_leader(req)
            .await
            .map_err(|e| fatal_status(&e))?;
        reply(what::TRANSFER_LEADER_RESPONSE, &resp)
    }

    async fn forward(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let req: ForwardRequest = codec::decode(what::FORWARD_REQUEST, request.get_ref())?;
        let result: Result<ForwardResponse, ForwardError> =
            execute_on_leader(&self.raft, req).await;
        reply(what::FORWARD_RESPONSE, &result)
    }
}

fn reply<T: serde::Serialize>(
    what: codec::What,
    value: &T,
) -> Result<Response<pb::RaftPayload>, Status> {
    Ok(Response::new(codec::encode(what, value)?))
}

/// A stopped Raft cannot serve anything; `Unavailable` makes the caller back off and retry later.
fn fatal_status(e: &impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is stopped on this node: {e}"))
}

fn io_status(action: &str, e: &io::Error) -> Status {
    Status::internal(format!("{action}: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held for a single assignment, so a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// openraft panics (by design) when asked to install a snapshot whose last log id lies beyond the
/// leadership of the vote that sends it. Such a pair cannot come from a correct leader, so refuse
/// it here instead of letting input from the wire stop the node.
fn check_snapshot_within_vote(header: &SnapshotHeader) -> Result<(), Status> {
    let leader = header.vote.leader_id().to_committed();
    match &header.meta.last_log_id {
        Some(last) if last.leader_id > leader => Err(Status::invalid_argument(format!(
            "snapshot last log id {last} lies beyond the sender's leadership {leader}"
        ))),
        _ => Ok(()),
    }
}

/// A snapshot file being received. Removed when dropped before [`IncomingFile::finish`], so a broken
/// stream leaves nothing behind.
struct IncomingFile {
    path: PathBuf,
    file: tokio::fs::File,
    finished: bool,
}

impl IncomingFile {
    async fn create(dir: &Path, header: &SnapshotHeader) -> Result<Self, Status> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let index = header
            .meta
            .last_log_id
            .as_ref()
            .map(|l| l.index)
            .unwrap_or(0);
        let name = format!(
            "{INCOMING_PREFIX}{index}-{}-{nanos}-{}.snap",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        // `create_new`: never write into a file some other transfer owns.
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_status(&format!("creating {}", path.display()), &e))?;
        Ok(IncomingFile {
            path,
            file,
            finished: false,
        })
    }

    /// Makes the file durable (data and directory entry) and returns its path.
    async fn finish(mut self) -> Result<PathBuf, Status> {
        let sync = async {
            self.file.flush().await?;
            self.file.sync_all().await?;
            if let Some(dir) = self.path.parent() {
                tokio::fs::File::open(dir).await?.sync_all().await?;
            }
            io::Result::Ok(())
        };
        sync.await.map_err(|e| io_status("syncing snapshot", &e))?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = remove_if_exists(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove partial snapshot");
            }
        }
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

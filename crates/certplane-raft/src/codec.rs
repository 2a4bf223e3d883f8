//! The one place where node-to-node messages turn into bytes and back.
//!
//! ```text
//!   openraft / certplane type ──serde_json──► RaftPayload { v: WIRE_VERSION, json }  ──protobuf──► wire
//! ```
//!
//! Protobuf is only the envelope (see `proto/raft.proto`); the payloads are the openraft and certplane
//! types themselves, serialised with serde. A payload carries the wire version `v` so a node can refuse
//! a format it does not understand with a clear error, instead of misreading it.
//!
//! Failures never panic: on the server they become `Status::invalid_argument`, on the client
//! `RPCError::Network` (see `network.rs`).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::types::{SnapshotMeta, Vote};

/// Generated protobuf envelopes, tonic client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("certplane.raft.v1");
}

/// The JSON format version this build writes and the only one it reads.
///
/// Bump it when a payload changes incompatibly; a mixed-version cluster then fails loudly on the
/// first RPC rather than applying half-understood messages.
pub const WIRE_VERSION: u32 = 1;

/// Largest data chunk in an InstallSnapshot stream. Bounds the memory a transfer needs on both ends.
pub const SNAPSHOT_CHUNK_SIZE: usize = 1024 * 1024;

/// What a message is, for error messages only.
pub type What = &'static str;

/// A payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{what}: unsupported wire version {got} (this node speaks version {WIRE_VERSION})")]
    UnsupportedVersion { what: What, got: u32 },
    #[error("{what}: malformed payload: {source}")]
    Malformed {
        what: What,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: cannot encode: {source}")]
    Encode {
        what: What,
        #[source]
        source: serde_json::Error,
    },
}

impl CodecError {
    /// True when the peer sent something we cannot read (as opposed to us failing to write).
    pub fn is_decode(&self) -> bool {
        !matches!(self, CodecError::Encode { .. })
    }
}

impl From<CodecError> for Status {
    fn from(e: CodecError) -> Self {
        if e.is_decode() {
            Status::invalid_argument(e.to_string())
        } else {
            Status::internal(e.to_string())
        }
    }
}

/// Serialises `value` into a versioned envelope.
pub fn encode<T: Serialize>(what: What, value: &T) -> Result<pb::RaftPayload, CodecError> {
    let json = serde_json::to_vec(value).map_err(|source| CodecError::Encode { what, source })?;
    Ok(pb::RaftPayload {
        v: WIRE_VERSION,
        json,
    })
}

/// Reads a versioned envelope, refusing unknown versions and malformed JSON.
pub fn decode<T: DeserializeOwned>(what: What, payload: &pb::RaftPayload) -> Result<T, CodecError> {
    if payload.v != WIRE_VERSION {
        return Err(CodecError::UnsupportedVersion {
            what,
            got: payload.v,
        });
    }
    serde_json::from_slice(&payload.json).map_err(|source| CodecError::Malformed { what, source })
}

/// The first message of an InstallSnapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The sending leader's vote; the receiver passes it to `Raft::install_full_snapshot`.
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// Exact number of data bytes that follow. Lets the receiver refuse an oversized snapshot before
    /// writing anything, and detect a stream that ended early.
    pub size: u64,
}

impl fmt::Display for SnapshotHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot {} ({} bytes) from leader vote {}",
            self.meta, self.size, self.vote
        )
    }
}

/// Message names used in errors and logs.
pub mod what {
    use super::What;
    pub const VOTE_REQUEST: What = "VoteRequest";
    pub const VOTE_RESPONSE: What = "VoteResponse";
    pub const APPEND_REQUEST: What = "AppendEntriesRequest";
    pub const APPEND_RESPONSE: What = "AppendEntriesResponse";
    pub const STREAM_APPEND_RESULT: What = "StreamAppendResult";
    pub const SNAPSHOT_HEADER: What = "SnapshotHeader";
    pub const SNAPSHOT_RESPONSE: What = "SnapshotResponse";
    pub const TRANSFER_LEADER_REQUEST: What = "TransferLeaderRequest";
    pub const TRANSFER_LEADER_RESPONSE: What = "TransferLeaderResponse";
    pub const FORWARD_REQUEST: What = "ForwardRequest";
    pub const FORWARD_RESPONSE: What = "ForwardResponse";
}

#[cfg(test)]
mod tests {
    use openraft::raft::{VoteRequest, VoteResponse};
    use tonic::Code;

    use super::*;
    use crate::types::{LogId, TypeConfig};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        openraft::LogId::new(
            openraft::vote::leader_id_adv::LeaderId {
                term,
                node_id: node,
            },
            index,
        )
    }

    #[test]
    fn vote_request_round_trips() {
        let req = VoteRequest::<TypeConfig>::new(Vote::new(3, 1), Some(log_id(2, 1, 10)));
        let payload = encode(what::VOTE_REQUEST, &req).unwrap();
        assert_eq!(payload.v, WIRE_VERSION);
        let back: VoteRequest<TypeConfig> = decode(what::VOTE_REQUEST, &payload).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn vote_response_round_trips() {
        let resp = VoteResponse::<TypeConfig>::new(
            Vote::new_committed(4, 2),
            Some(log_id(4, 2, 7)),
            false,
        );
        let payload = encode(what::VOTE_RESPONSE, &resp).unwrap();
        let back: VoteResponse<TypeConfig> = decode(what::VOTE_RESPONSE, &payload).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn snapshot_header_round_trips() {
        let header = SnapshotHeader {
            vote: Vote::new_committed(5, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(5, 1, 99)),
                last_membership: Default::default(),
            },
            size: 12345,
        };
        let back: SnapshotHeader = decode(
            what::SNAPSHOT_HEADER,
            &encode(what::SNAPSHOT_HEADER, &header).unwrap(),
        )
        .unwrap();
        assert_eq!(back, header);
    }

    #[test]
    fn garbage_json_is_invalid_argument() {
        let payload = pb::RaftPayload {
            v: WIRE_VERSION,
            json: b"{not json".to_vec(),
        };
        let err = decode::<VoteRequest<TypeConfig>>(what::VOTE_REQUEST, &payload).unwrap_err();
        assert!(err.is_decode());
        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("VoteRequest"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn wrong_shape_is_invalid_argument() {
        let payload = encode("test", &serde_json::json!({"vote": 1, "surprise": [1, 2]})).unwrap();
        let status = Status::from(
            decode::<VoteRequest<TypeConfig>>(what::VOTE_REQUEST, &payload).unwrap_err(),
        );
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut payload = encode(
            what::VOTE_REQUEST,
            &VoteRequest::<TypeConfig>::new(Vote::new(1, 1), None),
        )
        .unwrap();
        payload.v = WIRE_VERSION + 1;
        let err = decode::<VoteRequest<TypeConfig>>(what::VOTE_REQUEST, &payload).unwrap_err();
        assert!(
            matches!(err, CodecError::UnsupportedVersion { got, .. } if got == WIRE_VERSION + 1)
        );
        assert_eq!(Status::from(err).code(), Code::InvalidArgument);
    }
}

//! One cached, lazily connected HTTP/2 channel per peer, shared by Raft replication and forwarding.
//!
//! All RPCs to a peer share one tonic `Channel`: HTTP/2 multiplexes them, so heartbeats are not stuck
//! behind a snapshot transfer. Creating a channel does no I/O; it connects on first use and reconnects
//! by itself after the peer restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::codec::pb::raft_service_client::RaftServiceClient;
use crate::tls::{tls_domain, ClusterTls};

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
        PeerChannels {
            inner: Arc::new(PeerChannelsInner {
                tls,
                config,
                channels: Mutex::new(HashMap::new()),
            }),
        }
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
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connect_lazy(&self, cluster_addr: &str) -> Result<Channel, ChannelError> {
        let fail = |reason: String| ChannelError {
            addr: cluster_addr.to_string(),
            reason,
        };
        let scheme = if self.is_tls() { "https" } else { "http" };
        let config = &self.inner.config;
        let dial = config
            .dial_overrides
            .get(cluster_addr)
            .map(String::as_str)
            .unwrap_or(cluster_addr);
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{dial}"))
            .map_err(|e| fail(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.inner.tls {
            endpoint = endpoint
                .tls_config(tls.client_config(&tls_domain(cluster_addr)))
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(endpoint.connect_lazy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_cached_per_address() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let err = PeerChannels::new(None)
                .channel("not a host:port")
                .unwrap_err();
            assert!(err.to_string().contains("not a host:port"), "{err}");
        });
    }
}

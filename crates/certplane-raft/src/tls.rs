//! Mutual TLS between cluster nodes.
//!
//! Every node holds the cluster CA certificate and its own certificate and key, signed by that CA.
//! The server demands a client certificate from the same CA, so only cluster members can call the
//! Raft RPCs; the client checks the server's name against the certificate's SANs. Node certificates
//! carry the SANs `localhost`, `node-N` and `127.0.0.1`.
//!
//! Without a `ClusterTls` the nodes talk plain HTTP/2: the explicit `--insecure` development mode.

use std::fmt;
use std::io;
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// PEM material for node-to-node mutual TLS.
///
/// `Debug` never prints the private key.
#[derive(Clone)]
pub struct ClusterTls {
    /// The cluster CA certificate(s), PEM. Trust anchor for both directions.
    pub ca_pem: Vec<u8>,
    /// This node's certificate chain, PEM. Presented as server and as client certificate.
    pub cert_pem: Vec<u8>,
    /// This node's private key, PEM.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl ClusterTls {
    /// Reads the three PEM files and checks that tonic/rustls accepts them, so a bad file fails at
    /// start-up rather than on the first connection.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> io::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
        };
        Self::from_pem(read(ca)?, read(cert)?, read(key)?)
    }

    /// Builds from PEM bytes already in memory, with the same checks as [`ClusterTls::load`].
    pub fn from_pem(ca_pem: Vec<u8>, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> io::Result<Self> {
        let tls = ClusterTls {
            ca_pem,
            cert_pem,
            key_pem,
        };
        tls.validate()?;
        Ok(tls)
    }

    /// Server side: present our identity and require a client certificate signed by the cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            // Explicit, although it is tonic's default: a client without a certificate is refused.
            .client_auth_optional(false)
    }

    /// Client side for a peer reached under `domain` (the name checked against its certificate).
    pub fn client_config(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(domain)
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Parses the material by building both configurations once. Neither builder touches the network.
    fn validate(&self) -> io::Result<()> {
        let invalid = |side: &str, e: tonic::transport::Error| {
            // tonic's Display is terse ("transport error"); the source names the actual PEM problem.
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cluster TLS material rejected ({side}): {e}: {detail}"),
            )
        };
        Server::builder()
            .tls_config(self.server_config())
            .map_err(|e| invalid("server", e))?;
        Endpoint::from_static("https://localhost")
            .tls_config(self.client_config("localhost"))
            .map_err(|e| invalid("client", e))?;
        Ok(())
    }
}

/// The name to verify a peer's certificate against, given its `host:port` cluster address.
///
/// Node certificates name the host (`node-N`, `localhost`); an address given as a bare IP is checked
/// as `localhost`, the SAN every node certificate carries, because rustls matches IP addresses only
/// against IP SANs and deployments address nodes by IP behind a private network.
pub fn tls_domain(cluster_addr: &str) -> String {
    let host = host_of(cluster_addr);
    if host.parse::<std::net::IpAddr>().is_ok() {
        "localhost".to_string()
    } else {
        host.to_string()
    }
}

/// `host` of `host:port`, `[v6]:port`, `v6` or `host`.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address without port.
        Some((host, _)) if host.contains(':') => addr,
        Some((host, _)) => host,
        None => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_of_ip_is_localhost() {
        assert_eq!(tls_domain("127.0.0.1:7100"), "localhost");
        assert_eq!(tls_domain("[::1]:7100"), "localhost");
        assert_eq!(tls_domain("::1"), "localhost");
        assert_eq!(tls_domain("10.0.3.4:7100"), "localhost");
    }

    #[test]
    fn domain_of_name_is_the_name() {
        assert_eq!(tls_domain("node-2:7100"), "node-2");
        assert_eq!(
            tls_domain("node-2.cluster.internal:7100"),
            "node-2.cluster.internal"
        );
        assert_eq!(tls_domain("localhost"), "localhost");
    }

    #[test]
    fn garbage_pem_is_rejected_at_load() {
        // As the binary does at start: with more than one rustls provider compiled in (the AWS
        // SDK brings aws-lc-rs), rustls does not pick one by itself.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let err =
            ClusterTls::from_pem(b"nope".to_vec(), b"nope".to_vec(), b"nope".to_vec()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn debug_redacts_the_key() {
        let tls = ClusterTls {
            ca_pem: vec![1],
            cert_pem: vec![2],
            key_pem: b"SECRET".to_vec(),
        };
        let shown = format!("{tls:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("83"),
            "{shown}"
        );
    }
}

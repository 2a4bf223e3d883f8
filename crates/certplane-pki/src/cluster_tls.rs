//! Material for the cluster's node-to-node mutual TLS, the way `consul tls ca create` and
//! `consul tls cert create` help operators bootstrap.
//!
//! ```text
//!  cluster CA (ECDSA P-256, 10 years, pathlen 0)
//!    ├─ node-1 (serverAuth + clientAuth, 825 days, SANs node-1, localhost, 127.0.0.1, ::1, extras)
//!    ├─ node-2
//!    └─ ...
//! ```
//!
//! Every node certificate carries both EKUs because each node is a gRPC server to its peers and a
//! client of them. 825 days is the longest lifetime mainstream TLS clients have accepted for leaf
//! certificates, so the files also work if an operator points a browser or curl at a node.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::inspect::{self, PrivateKeyFormat};
use crate::{pem_blocks, seal, PkiError};

pub const CA_VALIDITY_DAYS: i64 = 3650;
pub const NODE_VALIDITY_DAYS: i64 = 825;
/// Most node certificates `write_cluster_tls` makes in one call; clusters have 3-7 voters.
pub const MAX_NODES: usize = 1000;
/// Backdating covers clocks that lag the machine that generated the files.
const BACKDATE: Duration = Duration::minutes(5);
const ORGANIZATION: &str = "certplane";

/// A CA certificate and its PKCS#8 private key, both PEM.
#[derive(Clone)]
pub struct GeneratedCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A node certificate and its PKCS#8 private key, both PEM.
#[derive(Clone)]
pub struct GeneratedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for GeneratedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl GeneratedCa {
    /// Load an existing CA (for example the `ca.pem` / `ca-key.pem` written earlier) to issue more node
    /// certificates. The certificate must be a CA and the key must be its PKCS#8 private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<GeneratedCa, PkiError> {
        let chain = inspect::parse_chain_pem(cert_pem)?;
        if chain.certificate_count != 1 {
            return Err(PkiError::InvalidArgument(format!(
                "the CA file holds {} certificates; expected exactly the CA certificate",
                chain.certificate_count
            )));
        }
        if !chain.leaf.is_ca {
            return Err(PkiError::InvalidArgument(
                "the certificate is not a CA (basicConstraints CA:TRUE is missing)".to_string(),
            ));
        }
        let key = inspect::parse_private_key_pem(key_pem)?;
        if key.format() != PrivateKeyFormat::Pkcs8 {
            return Err(PkiError::UnsupportedKey {
                reason: format!(
                    "the CA key is a {} block; convert it with `openssl pkcs8 -topk8 -nocrypt`",
                    key.label()
                ),
            });
        }
        if !inspect::key_matches_certificate(&key, &chain.leaf_der)? {
            return Err(PkiError::InvalidPrivateKey {
                reason: "the CA key does not belong to the CA certificate".to_string(),
            });
        }
        Ok(GeneratedCa {
            cert_pem: chain.chain_pem,
            key_pem: key.to_pem().to_string(),
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::InvalidPrivateKey {
            reason: format!("the CA key cannot be loaded ({e})"),
        })?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| PkiError::InvalidCertificate {
            index: 1,
            reason: format!("the CA certificate cannot be used to sign ({e})"),
        })
    }
}

/// A self-signed ECDSA P-256 CA valid for ten years, allowed to sign end-entity certificates only.
pub fn generate_cluster_ca(common_name: &str) -> Result<GeneratedCa, PkiError> {
    if common_name.trim().is_empty() {
        return Err(PkiError::InvalidArgument(
            "the CA common name is empty".to_string(),
        ));
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error)?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key).map_err(generate_error)?;
    Ok(GeneratedCa {
        cert_pem: pem_blocks::encode("CERTIFICATE", cert.der()),
        key_pem: pem_blocks::encode("PRIVATE KEY", key.serialized_der()),
    })
}

/// Issue a node certificate (ECDSA P-256, 825 days, serverAuth + clientAuth). DNS SANs are
/// `node_name`, `localhost` and `dns_names`; IP SANs are `ips`. Duplicates are dropped.
pub fn issue_node_certificate(
    ca: &GeneratedCa,
    node_name: &str,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<GeneratedCert, PkiError> {
    if node_name.trim().is_empty() {
        return Err(PkiError::InvalidArgument(
            "the node name is empty".to_string(),
        ));
    }
    let issuer = ca.issuer()?;
    let mut names: Vec<&str> = vec![node_name, "localhost"];
    names.extend(dns_names.iter().map(String::as_str));
    let mut sans: Vec<SanType> = Vec::new();
    for name in names {
        let san = SanType::DnsName(name.try_into().map_err(|_| {
            PkiError::InvalidArgument(format!("\"{name}\" is not a valid DNS name"))
        })?);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    for ip in ips {
        let san = SanType::IpAddress(*ip);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error)?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(node_name);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(NODE_VALIDITY_DAYS);
    params.serial_number = Some(random_serial()?);
    let cert = params.signed_by(&key, &issuer).map_err(generate_error)?;
    Ok(GeneratedCert {
        cert_pem: pem_blocks::encode("CERTIFICATE", cert.der()),
        key_pem: pem_blocks::encode("PRIVATE KEY", key.serialized_der()),
    })
}

/// Write a fresh cluster CA and `nodes` node certificates into `out_dir` (created if missing):
/// `ca.pem`, `ca-key.pem`, then `node-{i}.pem` and `node-{i}-key.pem` for i in 1..=nodes. Keys get mode
/// 0600. Node i's SANs are `node-{i}`, `localhost`, 127.0.0.1, ::1 and the extras.
///
/// Refuses to replace an existing `ca.pem` unless `force`: a new CA silently cuts every node still
/// holding certificates from the old one out of the cluster. Returns the paths written, in that order.
pub fn write_cluster_tls(
    out_dir: &Path,
    nodes: usize,
    extra_dns: &[String],
    extra_ips: &[IpAddr],
    force: bool,
) -> Result<Vec<PathBuf>, PkiError> {
    if nodes > MAX_NODES {
        return Err(PkiError::InvalidArgument(format!(
            "{nodes} nodes requested; at most {MAX_NODES} node certificates are written at once"
        )));
    }
    let ca_path = out_dir.join("ca.pem");
    if !force && ca_path.exists() {
        return Err(PkiError::AlreadyExists { path: ca_path });
    }

    // Generate everything before writing anything, so a bad SAN leaves the directory untouched.
    let ca = generate_cluster_ca("certplane cluster CA")?;
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    ips.extend_from_slice(extra_ips);
    let node_certs = (1..=nodes)
        .map(|i| issue_node_certificate(&ca, &format!("node-{i}"), extra_dns, &ips))
        .collect::<Result<Vec<_>, _>>()?;

    std::fs::create_dir_all(out_dir).map_err(|e| PkiError::io(out_dir, e))?;
    let mut written = Vec::with_capacity(2 + 2 * nodes);
    // Node files first and ca.pem last: if we stop half-way, the next run is not refused.
    for (i, cert) in node_certs.iter().enumerate() {
        let node = i + 1;
        written.push(write_file(
            &out_dir.join(format!("node-{node}.pem")),
            &cert.cert_pem,
            false,
        )?);
        written.push(write_file(
            &out_dir.join(format!("node-{node}-key.pem")),
            &cert.key_pem,
            true,
        )?);
    }
    let ca_key_path = write_file(&out_dir.join("ca-key.pem"), &ca.key_pem, true)?;
    let ca_cert_path = write_file(&ca_path, &ca.cert_pem, false)?;
    written.splice(0..0, [ca_cert_path, ca_key_path]);
    Ok(written)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 128 random bits, top bit clear so the DER integer stays 16 bytes and positive (RFC 5280 wants
/// positive serials of at most 20 bytes, CA/B Forum at least 64 random bits).
pub(crate) fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    seal::fill_random(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn generate_error(err: rcgen::Error) -> PkiError {
    PkiError::Generate(err.to_string())
}

/// Write via a temporary file and rename, so a reader never sees half a key and a private key is never
/// briefly world-readable.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<PathBuf, PkiError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PkiError::io(&tmp, e)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if secret { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(|e| PkiError::io(&tmp, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| PkiError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| PkiError::io(path, e))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
#[path = "cluster_tls_tests.rs"]
mod tests;

//! The inventory fields of one certificate, in the plain forms the API and the index keys use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_DSA, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384,
    OID_NIST_EC_P521, OID_PKCS1_MD5WITHRSAENC, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
    OID_PKCS1_SHA1WITHRSA, OID_PKCS1_SHA224WITHRSA, OID_PKCS1_SHA256WITHRSA,
    OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_DSA_WITH_SHA1,
    OID_SIG_ECDSA_WITH_SHA224, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_SIG_ECDSA_WITH_SHA512, OID_SIG_ED25519, OID_SIG_ED448,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::{ECPoint, RSAPublicKey};
use x509_parser::x509::SubjectPublicKeyInfo;

/// What the inventory records about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Lowercase hex SHA-256 of the DER: the identity of a certificate across imports and discovery.
    pub fingerprint_sha256: String,
    /// The subject as x509-parser prints it (RFC 4514 style, `CN=..., O=...`).
    pub subject: String,
    pub common_name: Option<String>,
    pub issuer: String,
    /// Lowercase hex, two digits per byte of the DER integer without its sign-padding zero byte, so it
    /// matches `openssl x509 -serial` and ACM's serial (both without separators, lowercased).
    pub serial: String,
    /// DNS names as written, IP addresses as text, `email:...` and `uri:...` for the other name types.
    pub sans: Vec<String>,
    /// Unix epoch milliseconds, the unit every timestamp in certplane uses.
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    /// "RSA", "RSA-PSS", "EC", "Ed25519", "Ed448", "DSA", or the key algorithm's OID.
    pub key_algorithm: String,
    /// RSA modulus bits, EC curve size (256/384/521), 256 for Ed25519, 448 for Ed448; 0 when unknown.
    pub key_bits: u32,
    /// OpenSSL's short name ("sha256WithRSAEncryption", "ecdsa-with-SHA256", "Ed25519") or the OID.
    pub signature_algorithm: String,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Issuer equals subject and the certificate's own key verifies its signature.
    pub self_signed: bool,
}

/// Errors are plain reasons; the caller knows the certificate's position.
pub(super) fn extract(cert: &X509Certificate<'_>, der: &[u8]) -> Result<CertificateInfo, String> {
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let (key_algorithm, key_bits) = key_algorithm_and_bits(cert.public_key());
    let validity = cert.validity();
    Ok(CertificateInfo {
        fingerprint_sha256: hex::encode(Sha256::digest(der)),
        subject: cert.subject().to_string(),
        common_name,
        issuer: cert.issuer().to_string(),
        serial: serial_hex(cert.raw_serial()),
        sans: subject_alt_names(cert)?,
        not_before_ms: validity.not_before.timestamp().saturating_mul(1000),
        not_after_ms: validity.not_after.timestamp().saturating_mul(1000),
        key_algorithm,
        key_bits,
        signature_algorithm: signature_algorithm_name(&cert.signature_algorithm.algorithm),
        is_ca: cert.is_ca(),
        self_signed: is_self_signed(cert),
    })
}

pub(super) fn serial_hex(raw: &[u8]) -> String {
    match raw.iter().position(|b| *b != 0) {
        Some(first) => hex::encode(&raw[first..]),
        None => "00".to_string(),
    }
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| format!("its subjectAltName extension is invalid ({e})"))?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            GeneralName::RFC822Name(email) => Some(format!("email:{email}")),
            GeneralName::URI(uri) => Some(format!("uri:{uri}")),
            // Directory names, otherName (UPN, SRV) and the rest do not identify a TLS endpoint.
            _ => None,
        })
        .collect())
}

pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    if !super::names_match(cert.issuer(), cert.subject()) {
        return false;
    }
    match cert.verify_signature(None) {
        Ok(()) => true,
        // We cannot check the signature; equal names is the best evidence we have.
        Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => true,
        Err(_) => false,
    }
}

pub(super) fn key_algorithm_and_bits(spki: &SubjectPublicKeyInfo<'_>) -> (String, u32) {
    let oid = &spki.algorithm.algorithm;
    let key_data: &[u8] = &spki.subject_public_key.data;
    if *oid == OID_PKCS1_RSAENCRYPTION || *oid == OID_PKCS1_RSASSAPSS {
        let bits = RSAPublicKey::from_der(key_data)
            .map(|(_, key)| unsigned_bits(key.modulus))
            .unwrap_or(0);
        let name = if *oid == OID_PKCS1_RSASSAPSS {
            "RSA-PSS"
        } else {
            "RSA"
        };
        (name.to_string(), bits)
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let bits = match curve {
            Some(c) if c == OID_EC_P256 => 256,
            Some(c) if c == OID_NIST_EC_P384 => 384,
            Some(c) if c == OID_NIST_EC_P521 => 521,
            // Other named curves: the point size is exact for the usual uncompressed encoding.
            _ => u32::try_from(ECPoint::from(key_data).key_size()).unwrap_or(0),
        };
        ("EC".to_string(), bits)
    } else if *oid == OID_SIG_ED25519 {
        ("Ed25519".to_string(), 256)
    } else if *oid == OID_SIG_ED448 {
        ("Ed448".to_string(), 448)
    } else if *oid == OID_KEY_TYPE_DSA {
        let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        ("DSA".to_string(), u32::try_from(bits).unwrap_or(0))
    } else {
        (oid.to_id_string(), 0)
    }
}

/// Bit length of a big-endian unsigned integer as DER stores it (possibly with a leading 0x00).
/// x509-parser's own `key_size` only counts moduli that carry the padding byte.
pub(crate) fn unsigned_bits(be: &[u8]) -> u32 {
    let trimmed = strip_leading_zeros(be);
    match trimmed.first() {
        None => 0,
        Some(first) => {
            let len = u32::try_from(trimmed.len()).unwrap_or(u32::MAX / 8);
            len.saturating_sub(1) * 8 + (8 - first.leading_zeros())
        }
    }
}

pub(crate) fn strip_leading_zeros(be: &[u8]) -> &[u8] {
    let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    &be[first..]
}

const SIGNATURE_NAMES: [(Oid<'static>, &str); 15] = [
    (OID_PKCS1_SHA256WITHRSA, "sha256WithRSAEncryption"),
    (OID_PKCS1_SHA384WITHRSA, "sha384WithRSAEncryption"),
    (OID_PKCS1_SHA512WITHRSA, "sha512WithRSAEncryption"),
    (OID_PKCS1_SHA224WITHRSA, "sha224WithRSAEncryption"),
    (OID_PKCS1_SHA1WITHRSA, "sha1WithRSAEncryption"),
    (OID_SHA1_WITH_RSA, "sha1WithRSAEncryption"),
    (OID_PKCS1_MD5WITHRSAENC, "md5WithRSAEncryption"),
    (OID_PKCS1_RSASSAPSS, "rsassaPss"),
    (OID_SIG_ECDSA_WITH_SHA256, "ecdsa-with-SHA256"),
    (OID_SIG_ECDSA_WITH_SHA384, "ecdsa-with-SHA384"),
    (OID_SIG_ECDSA_WITH_SHA512, "ecdsa-with-SHA512"),
    (OID_SIG_ECDSA_WITH_SHA224, "ecdsa-with-SHA224"),
    (OID_SIG_ED25519, "Ed25519"),
    (OID_SIG_ED448, "Ed448"),
    (OID_SIG_DSA_WITH_SHA1, "dsaWithSHA1"),
];

pub(crate) fn signature_algorithm_name(oid: &Oid<'_>) -> String {
    SIGNATURE_NAMES
        .iter()
        .find(|(known, _)| known == oid)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| oid.to_id_string())
}

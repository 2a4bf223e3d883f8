//! Shared fixtures and independent checkers for this crate's CA, CSR and key tests.
//!
//! Keys and CAs are generated once per test binary (RSA-4096 takes seconds) and shared. Issued
//! certificates are checked by two verifiers that share no code with rcgen: rustls-webpki, and the
//! `openssl` command line when it is installed.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::ca::{create_root_and_intermediate, new_serial, CaCertificate, LeafProfile};
use crate::keys::{generate_key, GeneratedKey, KeyAlgorithm, KeySpec};
use crate::testing::{now_ms, DAY_MS};

pub const ALL_KEY_SPECS: [KeySpec; 6] = [
    KeySpec::Rsa { bits: 2048 },
    KeySpec::Rsa { bits: 3072 },
    KeySpec::Rsa { bits: 4096 },
    KeySpec::EcdsaP256,
    KeySpec::EcdsaP384,
    KeySpec::Ed25519,
];

/// One CA spec per CA key algorithm certplane signs with.
pub const CA_SPECS: [KeySpec; 4] = [
    KeySpec::EcdsaP256,
    KeySpec::EcdsaP384,
    KeySpec::Rsa { bits: 2048 },
    KeySpec::Ed25519,
];

/// A generated key per spec, made once.
pub fn key(spec: KeySpec) -> &'static GeneratedKey {
    static KEYS: [OnceLock<GeneratedKey>; 6] = [const { OnceLock::new() }; 6];
    let index = ALL_KEY_SPECS
        .iter()
        .position(|s| *s == spec)
        .expect("a spec from ALL_KEY_SPECS");
    KEYS[index].get_or_init(|| generate_key(&spec).expect("generate a test key"))
}

/// A root and intermediate per CA spec, made once, valid from now for 10 / 5 years.
pub fn ca_pair(spec: KeySpec) -> &'static (CaCertificate, CaCertificate) {
    static CAS: [OnceLock<(CaCertificate, CaCertificate)>; 4] = [const { OnceLock::new() }; 4];
    let index = CA_SPECS
        .iter()
        .position(|s| *s == spec)
        .expect("a spec from CA_SPECS");
    CAS[index].get_or_init(|| {
        let name = format!("certplane test {spec:?}").replace(['{', '}', ':'], "");
        create_root_and_intermediate(&name, &spec, now_ms(), 3650, 1825).expect("create test CAs")
    })
}

/// A profile valid from an hour ago for 30 days, for the given key.
pub fn profile(spki_der: &[u8], dns: &[&str], ips: &[IpAddr]) -> LeafProfile {
    let now = now_ms();
    LeafProfile {
        serial: new_serial().expect("serial"),
        common_name: dns.first().map(|s| (*s).to_string()),
        dns_names: dns.iter().map(|s| (*s).to_string()).collect(),
        ip_addresses: ips.to_vec(),
        not_before_ms: (now - 60 * 60 * 1000).div_euclid(1000) * 1000,
        not_after_ms: (now + 30 * DAY_MS).div_euclid(1000) * 1000,
        spki_der: spki_der.to_vec(),
    }
}

pub fn parse_cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("a DER certificate");
    assert!(rest.is_empty(), "trailing bytes after the certificate");
    cert
}

/// What a leaf certificate says, in plain values the tests compare against a profile.
#[derive(Debug, PartialEq, Eq)]
pub struct LeafFacts {
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub other_names: usize,
    pub is_ca: bool,
    pub basic_constraints_critical: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
    pub digital_signature: bool,
    pub key_encipherment: bool,
    pub server_auth: bool,
    pub client_auth: bool,
    pub other_ekus: usize,
    pub extension_oids: Vec<String>,
}

pub fn leaf_facts(cert: &X509Certificate<'_>) -> LeafFacts {
    let mut facts = LeafFacts {
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        other_names: 0,
        is_ca: false,
        basic_constraints_critical: false,
        key_cert_sign: false,
        crl_sign: false,
        digital_signature: false,
        key_encipherment: false,
        server_auth: false,
        client_auth: false,
        other_ekus: 0,
        extension_oids: Vec::new(),
    };
    for ext in cert.extensions() {
        facts.extension_oids.push(ext.oid.to_id_string());
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => facts.dns_names.push((*d).to_string()),
                        GeneralName::IPAddress(b) => facts.ip_addresses.push(match b.len() {
                            4 => IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")),
                            _ => IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes")),
                        }),
                        _ => facts.other_names += 1,
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => {
                facts.is_ca = bc.ca;
                facts.basic_constraints_critical = ext.critical;
            }
            ParsedExtension::KeyUsage(ku) => {
                facts.key_cert_sign = ku.key_cert_sign();
                facts.crl_sign = ku.crl_sign();
                facts.digital_signature = ku.digital_signature();
                facts.key_encipherment = ku.key_encipherment();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                facts.server_auth = eku.server_auth;
                facts.client_auth = eku.client_auth;
                facts.other_ekus = usize::from(eku.any)
                    + usize::from(eku.code_signing)
                    + usize::from(eku.email_protection)
                    + usize::from(eku.time_stamping)
                    + usize::from(eku.ocsp_signing)
                    + eku.other.len();
            }
            _ => {}
        }
    }
    facts
}

pub fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

pub fn authority_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

/// rustls-webpki path validation: `leaf` ← `intermediates` ← `root` (trust anchor) at `at_ms`, for
/// TLS server use, optionally for `dns_name`, optionally checking the leaf against `crls`.
pub fn webpki_verify(
    root_der: &[u8],
    intermediates: &[&[u8]],
    leaf_der: &[u8],
    at_ms: i64,
    dns_name: Option<&str>,
    crls: &[&[u8]],
) -> Result<(), webpki::Error> {
    let root = CertificateDer::from(root_der.to_vec());
    let anchors = [webpki::anchor_from_trusted_cert(&root)?];
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|der| CertificateDer::from(der.to_vec()))
        .collect();
    let leaf = CertificateDer::from(leaf_der.to_vec());
    let end_entity = EndEntityCert::try_from(&leaf)?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(at_ms / 1000).expect("a time after 1970"),
    ));
    let crls: Vec<CertRevocationList<'_>> = crls
        .iter()
        .map(|der| BorrowedCertRevocationList::from_der(der).map(CertRevocationList::from))
        .collect::<Result<_, _>>()?;
    let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
    let revocation = if crl_refs.is_empty() {
        None
    } else {
        Some(
            RevocationOptionsBuilder::new(&crl_refs)
                .expect("at least one CRL")
                .with_depth(RevocationCheckDepth::EndEntity)
                .with_status_policy(UnknownStatusPolicy::Deny)
                .with_expiration_policy(ExpirationPolicy::Enforce)
                .build(),
        )
    };
    let algorithms = [
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384,
        webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    ];
    end_entity.verify_for_usage(
        &algorithms,
        &anchors,
        &intermediates,
        time,
        KeyUsage::server_auth(),
        revocation,
        None,
    )?;
    if let Some(name) = dns_name {
        let server_name = ServerName::try_from(name.to_string()).expect("a valid test name");
        end_entity.verify_is_valid_for_subject_name(&server_name)?;
    }
    Ok(())
}

/// Whether the `openssl` binary can be run; prints a notice once per call site when it cannot.
pub fn openssl_available(test: &str) -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        println!("NOTICE: {test}: the openssl binary is missing; skipping the OpenSSL cross-check");
    }
    ok
}

/// `openssl verify -x509_strict -purpose sslserver -CAfile root -untrusted intermediates leaf` at
/// `at_ms`. Returns OpenSSL's combined output on failure.
pub fn openssl_verify(
    dir: &Path,
    root_pem: &str,
    intermediates_pem: &str,
    leaf_pem: &str,
    at_ms: i64,
) -> Result<(), String> {
    openssl_verify_with(dir, root_pem, intermediates_pem, leaf_pem, at_ms, true)
}

/// As [`openssl_verify`]; `strict: false` leaves out `-x509_strict`, which (OpenSSL 3) also insists
/// that every CA certificate carries keyUsage, a rule of RFC 5280 for CAs, not for their leaves.
pub fn openssl_verify_with(
    dir: &Path,
    root_pem: &str,
    intermediates_pem: &str,
    leaf_pem: &str,
    at_ms: i64,
    strict: bool,
) -> Result<(), String> {
    let root = dir.join("root.pem");
    let untrusted = dir.join("intermediates.pem");
    let leaf = dir.join("leaf.pem");
    std::fs::write(&root, root_pem).expect("write root.pem");
    std::fs::write(&untrusted, intermediates_pem).expect("write intermediates.pem");
    std::fs::write(&leaf, leaf_pem).expect("write leaf.pem");
    let mut command = Command::new("openssl");
    command.arg("verify");
    if strict {
        command.arg("-x509_strict");
    }
    command
        .args(["-purpose", "sslserver"])
        .args(["-attime", &(at_ms / 1000).to_string()])
        .arg("-CAfile")
        .arg(&root);
    if !intermediates_pem.is_empty() {
        command.arg("-untrusted").arg(&untrusted);
    }
    run(command.arg(&leaf))
}

pub fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

/// The signature algorithm OID the certificate must carry for a CA key of this type.
pub fn expected_signature_oid(ca_key: KeyAlgorithm) -> &'static str {
    match ca_key {
        KeyAlgorithm::EcdsaP256 => "1.2.840.10045.4.3.2",
        KeyAlgorithm::EcdsaP384 => "1.2.840.10045.4.3.3",
        KeyAlgorithm::Rsa => "1.2.840.113549.1.1.11",
        KeyAlgorithm::Ed25519 => "1.3.101.112",
    }
}

/// The SubjectPublicKeyInfo of a committed OpenSSL CSR fixture, without checking anything else.
pub fn csr_fixture_spki(pem: &str) -> Vec<u8> {
    let der = pem::parse(pem).expect("fixture PEM").into_contents();
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .expect("fixture CSR");
    csr.certification_request_info.subject_pki.raw.to_vec()
}

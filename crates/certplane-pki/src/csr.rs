//! Checking certificate signing requests (PKCS#10) before anything is issued from them.
//!
//! ```text
//!  PEM ─► one CERTIFICATE REQUEST block ─► DER ─► key acceptable? ─► signature algorithm strong? ─►
//!         (size cap, label)                (x509-parser) (keys.rs)       (no MD5/SHA-1/unknown)
//!  ─► self-signature verifies (ring) ─► CsrInfo (names and requested extensions, for policy only)
//! ```
//!
//! A CSR proves one thing: whoever made it holds the private key for its public key. Everything else
//! in it is a wish. The built-in CA copies only the public key out of a CSR; names come from the
//! request certplane approved and extensions from certplane's leaf profile ([`crate::ca::Signer`]).
//! `requests_ca` and `requested_extensions` are reported so the API can warn or refuse, never obeyed.

use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::FromDer;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::AlgorithmIdentifier;

use crate::inspect::fields::ip_from_bytes;
use crate::keys::{self, KeyFacts};
use crate::{pem_blocks, PkiError};

/// Largest CSR we parse, PEM or DER. Real CSRs are 0.5-4 KiB; the room above that is for requests
/// with a few hundred SANs, and the cap keeps a hostile upload cheap.
pub const MAX_CSR_BYTES: usize = 256 * 1024;

/// What a verified CSR asks for. Informational: issuance takes only `spki_der` from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// The subject as x509-parser prints it (RFC 4514 style, `CN=..., O=...`).
    pub subject: String,
    pub common_name: Option<String>,
    /// DNS names from the requested subjectAltName, as written.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Requested SANs of other types (`email:...`, `uri:...`, `dirName:...`, `otherName:<oid>`, ...).
    /// certplane's leaf profile never carries them; they are listed so policy can say so.
    pub other_names: Vec<String>,
    /// Every extension in the extensionRequest attribute, by short name (`subjectAltName`,
    /// `basicConstraints`, ...) or dotted OID when the name is unknown.
    pub requested_extensions: Vec<String>,
    /// The request asks for basicConstraints CA:TRUE, keyCertSign or cRLSign. Never granted.
    pub requests_ca: bool,
    pub key: KeyFacts,
    /// The DER SubjectPublicKeyInfo, exactly as in the request: the only part issuance uses.
    pub spki_der: Vec<u8>,
    /// OpenSSL-style name of the CSR's signature algorithm (`ecdsa-with-SHA256`, `rsassaPss with
    /// SHA-256`, `Ed25519`, ...).
    pub signature_algorithm: String,
}

/// Parse and check a PEM CSR (`-----BEGIN CERTIFICATE REQUEST-----`, or the older `NEW CERTIFICATE
/// REQUEST` label some tools write). Text around the block is ignored; a second block is refused.
pub fn parse_csr(input: &str) -> Result<CsrInfo, PkiError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(PkiError::TooLarge {
            size: input.len(),
            limit: MAX_CSR_BYTES,
        });
    }
    let mut blocks = pem_blocks::split(input).into_iter();
    let Some(block) = blocks.next() else {
        return Err(invalid(
            "no -----BEGIN CERTIFICATE REQUEST----- block was found",
        ));
    };
    let extra = blocks.count();
    if extra > 0 {
        return Err(invalid(&format!(
            "the input holds {} PEM blocks; send exactly one certificate request",
            extra + 1
        )));
    }
    let block = block.map_err(|e| {
        invalid(&format!(
            "it is not valid PEM: {}",
            pem_blocks::describe_error(&e)
        ))
    })?;
    match block.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {}
        "CERTIFICATE" => {
            return Err(invalid(
                "this is a CERTIFICATE, not a certificate request; send the CSR",
            ))
        }
        label if pem_blocks::is_private_key_label(label) => {
            return Err(invalid(&format!(
                "this is a {label}; never send a private key, send only the certificate request"
            )))
        }
        label => {
            return Err(invalid(&format!(
                "this is a {label} block, not a CERTIFICATE REQUEST"
            )))
        }
    }
    parse_csr_der(block.contents())
}

/// As [`parse_csr`], for DER bytes.
pub fn parse_csr_der(der: &[u8]) -> Result<CsrInfo, PkiError> {
    if der.len() > MAX_CSR_BYTES {
        return Err(PkiError::TooLarge {
            size: der.len(),
            limit: MAX_CSR_BYTES,
        });
    }
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| {
        invalid(&match e {
            x509_parser::nom::Err::Incomplete(_) => "the DER data is truncated".to_string(),
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => {
                format!("the DER data is not a PKCS#10 request ({e})")
            }
        })
    })?;
    if !rest.is_empty() {
        return Err(invalid(&format!(
            "{} unexpected bytes follow the request",
            rest.len()
        )));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(invalid(&format!(
            "it declares version {}; PKCS#10 defines only version 1 (encoded as 0)",
            u64::from(info.version.0) + 1
        )));
    }

    // Key first: "RSA 1024 is too weak" is a better answer than a complaint about its signature.
    let key = keys::key_facts(&info.subject_pki)?;
    let signature_algorithm = check_signature_algorithm(&csr.signature_algorithm)?;
    match csr.verify_signature() {
        Ok(()) => {}
        Err(X509Error::SignatureUnsupportedAlgorithm) => {
            return Err(PkiError::UnsupportedSignatureAlgorithm {
                algorithm: signature_algorithm,
            })
        }
        Err(_) => return Err(PkiError::CsrSignatureInvalid),
    }

    let mut found = Requested::default();
    let mut extension_requests = 0;
    for attribute in info.iter_attributes() {
        if let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() {
            extension_requests += 1;
            if extension_requests > 1 {
                return Err(invalid("it has more than one extensionRequest attribute"));
            }
            for extension in &request.extensions {
                found.add(extension)?;
            }
        }
    }

    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let info = CsrInfo {
        subject: info.subject.to_string(),
        common_name,
        dns_names: found.dns_names,
        ip_addresses: found.ip_addresses,
        other_names: found.other_names,
        requested_extensions: found.extensions,
        requests_ca: found.requests_ca,
        key,
        spki_der: info.subject_pki.raw.to_vec(),
        signature_algorithm,
    };
    Ok(info)
}

fn invalid(reason: &str) -> PkiError {
    PkiError::InvalidCsr {
        reason: reason.to_string(),
    }
}

/// What the extensionRequest attribute asks for.
#[derive(Default)]
struct Requested {
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    other_names: Vec<String>,
    extensions: Vec<String>,
    oids: Vec<String>,
    requests_ca: bool,
}

impl Requested {
    fn add(&mut self, extension: &X509Extension<'_>) -> Result<(), PkiError> {
        let oid = extension.oid.to_id_string();
        let name = extension_name(&extension.oid);
        // RFC 5280 forbids repeating an extension; a request that does is malformed or probing which
        // copy a CA reads.
        if self.oids.contains(&oid) {
            return Err(invalid(&format!(
                "it requests the {name} extension more than once"
            )));
        }
        self.oids.push(oid);
        match extension.parsed_extension() {
            ParsedExtension::ParseError { error } => {
                return Err(invalid(&format!(
                    "its requested {name} extension is malformed ({error})"
                )))
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for general_name in &san.general_names {
                    self.add_name(general_name)?;
                }
            }
            ParsedExtension::BasicConstraints(constraints) if constraints.ca => {
                self.requests_ca = true;
            }
            ParsedExtension::KeyUsage(usage) if usage.key_cert_sign() || usage.crl_sign() => {
                self.requests_ca = true;
            }
            _ => {}
        }
        self.extensions.push(name);
        Ok(())
    }

    fn add_name(&mut self, name: &GeneralName<'_>) -> Result<(), PkiError> {
        match name {
            GeneralName::DNSName(dns) => self.dns_names.push((*dns).to_string()),
            GeneralName::IPAddress(bytes) => {
                let ip = ip_from_bytes(bytes).ok_or_else(|| {
                    invalid(&format!(
                        "a requested IP address SAN has {} bytes; expected 4 or 16",
                        bytes.len()
                    ))
                })?;
                self.ip_addresses.push(ip);
            }
            GeneralName::RFC822Name(email) => self.other_names.push(format!("email:{email}")),
            GeneralName::URI(uri) => self.other_names.push(format!("uri:{uri}")),
            GeneralName::DirectoryName(dn) => self.other_names.push(format!("dirName:{dn}")),
            GeneralName::OtherName(oid, _) => self
                .other_names
                .push(format!("otherName:{}", oid.to_id_string())),
            GeneralName::RegisteredID(oid) => self
                .other_names
                .push(format!("registeredID:{}", oid.to_id_string())),
            GeneralName::X400Address(_) => self.other_names.push("x400Address".to_string()),
            GeneralName::EDIPartyName(_) => self.other_names.push("ediPartyName".to_string()),
            GeneralName::Invalid(tag, _) => {
                return Err(invalid(&format!(
                    "a requested subjectAltName entry (tag {tag:?}) is malformed"
                )))
            }
        }
        Ok(())
    }
}

fn extension_name(oid: &Oid<'_>) -> String {
    oid2sn(oid, oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| oid.to_id_string())
}

/// How certplane treats a signature algorithm found on a CSR.
enum Verdict {
    Accepted,
    /// Broken digest: refused even though ring could check some of them.
    Weak,
    Unsupported,
}

/// The CSR's signature algorithm by name, or the refusal. Checked before verifying, because ring still
/// verifies SHA-1 signatures and a valid SHA-1 signature proves nothing.
fn check_signature_algorithm(algorithm: &AlgorithmIdentifier<'_>) -> Result<String, PkiError> {
    let (name, verdict) = classify(algorithm);
    match verdict {
        Verdict::Accepted => Ok(name),
        Verdict::Weak => Err(PkiError::WeakSignatureAlgorithm { algorithm: name }),
        Verdict::Unsupported => Err(PkiError::UnsupportedSignatureAlgorithm { algorithm: name }),
    }
}

fn classify(algorithm: &AlgorithmIdentifier<'_>) -> (String, Verdict) {
    let oid = algorithm.algorithm.to_id_string();
    let (name, verdict) = match oid.as_str() {
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", Verdict::Accepted),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", Verdict::Accepted),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", Verdict::Accepted),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", Verdict::Accepted),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", Verdict::Accepted),
        "1.3.101.112" => ("Ed25519", Verdict::Accepted),
        "1.2.840.113549.1.1.10" => return classify_pss(algorithm),
        "1.2.840.113549.1.1.2" => ("md2WithRSAEncryption", Verdict::Weak),
        "1.2.840.113549.1.1.3" => ("md4WithRSAEncryption", Verdict::Weak),
        "1.2.840.113549.1.1.4" => ("md5WithRSAEncryption", Verdict::Weak),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => ("sha1WithRSAEncryption", Verdict::Weak),
        "1.2.840.10045.4.1" => ("ecdsa-with-SHA1", Verdict::Weak),
        "1.2.840.10040.4.3" | "1.3.14.3.2.27" => ("dsaWithSHA1", Verdict::Weak),
        "1.2.840.113549.1.1.14" => ("sha224WithRSAEncryption", Verdict::Unsupported),
        "1.2.840.10045.4.3.1" => ("ecdsa-with-SHA224", Verdict::Unsupported),
        "1.2.840.10045.4.3.4" => ("ecdsa-with-SHA512", Verdict::Unsupported),
        "2.16.840.1.101.3.4.3.1" => ("dsa_with_SHA224", Verdict::Unsupported),
        "2.16.840.1.101.3.4.3.2" => ("dsa_with_SHA256", Verdict::Unsupported),
        "1.3.101.113" => ("Ed448", Verdict::Unsupported),
        other => return (format!("algorithm {other}"), Verdict::Unsupported),
    };
    (name.to_string(), verdict)
}

/// RSASSA-PSS names its hash in parameters, and absent parameters mean SHA-1 (RFC 4055).
fn classify_pss(algorithm: &AlgorithmIdentifier<'_>) -> (String, Verdict) {
    let Some(params) = algorithm
        .parameters
        .as_ref()
        .and_then(|p| RsaSsaPssParams::try_from(p).ok())
    else {
        return match algorithm.parameters {
            None => ("rsassaPss with SHA-1".to_string(), Verdict::Weak),
            Some(_) => (
                "rsassaPss with unreadable parameters".to_string(),
                Verdict::Unsupported,
            ),
        };
    };
    match params.hash_algorithm_oid().to_id_string().as_str() {
        "2.16.840.1.101.3.4.2.1" => ("rsassaPss with SHA-256".to_string(), Verdict::Accepted),
        "2.16.840.1.101.3.4.2.2" => ("rsassaPss with SHA-384".to_string(), Verdict::Accepted),
        "2.16.840.1.101.3.4.2.3" => ("rsassaPss with SHA-512".to_string(), Verdict::Accepted),
        "1.3.14.3.2.26" => ("rsassaPss with SHA-1".to_string(), Verdict::Weak),
        "1.2.840.113549.2.5" => ("rsassaPss with MD5".to_string(), Verdict::Weak),
        other => (format!("rsassaPss with hash {other}"), Verdict::Unsupported),
    }
}

#[cfg(test)]
#[path = "csr_tests.rs"]
mod tests;

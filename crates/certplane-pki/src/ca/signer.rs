//! Issuing leaf certificates from certplane's profile, never from the request.
//!
//! The signer copies exactly one thing from a request: the public key, and only after
//! [`crate::keys::key_facts_from_spki`] accepts it. Names come from the approved request; every
//! extension comes from the profile below. A CSR that asks for CA:TRUE, keyCertSign, extra SANs or any
//! other extension gets none of it, because nothing from the CSR besides its key reaches this module.
//!
//! Leaf profile (fixed):
//!
//! | field / extension        | value                                                          |
//! | ------------------------ | -------------------------------------------------------------- |
//! | serial, validity         | exactly the caller's (validity rounded down to whole seconds)   |
//! | subject                  | `CN=<common_name>` if given, else empty                        |
//! | subjectAltName           | exactly the given DNS names and IPs (critical if subject empty) |
//! | basicConstraints         | CA:FALSE, critical                                             |
//! | keyUsage                 | digitalSignature (+ keyEncipherment for RSA keys), critical     |
//! | extendedKeyUsage         | serverAuth, clientAuth                                         |
//! | subject / authority key identifiers | derived from the leaf key / copied from the CA's SKI |
//! | signature                | follows the CA key: ecdsa-with-SHA256 (P-256), ecdsa-with-SHA384 (P-384), sha256WithRSAEncryption, Ed25519 |

use std::fmt;
use std::net::IpAddr;

use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

use super::MAX_COMMON_NAME_CHARS;
use super::{datetime_from_ms, generate_error, import, serial_hex, CaCertificate};
use crate::inspect::{self, private_key::public_keys_equal};
use crate::keys::{self, KeyAlgorithm, WipedKeyPair};
use crate::{pem_blocks, PkiError};

/// Longest DNS name (RFC 1035: 253 characters in text form).
const MAX_DNS_NAME_CHARS: usize = 253;

/// Everything that varies between leaf certificates. Built by certplane from an approved request;
/// nothing in it comes from a CSR except `spki_der`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafProfile {
    /// From [`super::new_serial`], chosen by the proposer so every node issues the same serial.
    pub serial: [u8; 16],
    pub common_name: Option<String>,
    /// DNS SANs in order. Internationalised names must already be A-labels (`xn--...`).
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Unix epoch milliseconds; the certificate keeps whole seconds (rounded down).
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    /// The subject's public key as DER SubjectPublicKeyInfo (from a CSR or a generated key).
    pub spki_der: Vec<u8>,
}

/// A signed leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// Lowercase hex without separators or a leading `00`, like `CertificateInfo::serial`.
    pub serial_hex: String,
}

/// An issuing CA ready to sign: its key parsed once (RSA key loading in ring costs milliseconds), its
/// name and key identifier prepared. Cheap to share behind an `Arc`; signing takes `&self`.
pub struct Signer {
    key: WipedKeyPair,
    /// Only the issuer-side fields are used: distinguished name and key identifier method.
    issuer: CertificateParams,
    algorithm: KeyAlgorithm,
    subject: String,
    not_after_ms: i64,
    /// Whether leaves get an authorityKeyIdentifier: only when the CA has a subjectKeyIdentifier to
    /// point at. An identifier that matches nothing misleads path builders that search by it.
    has_key_identifier: bool,
    pub(super) can_sign_crl: bool,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &self.subject)
            .field("algorithm", &self.algorithm)
            .field("not_after_ms", &self.not_after_ms)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Signer {
    /// Prepare `ca` for signing. Checks again what [`super::import_ca`] checked (a `CaCertificate` can
    /// also be rebuilt from storage): the certificate is a CA allowed to sign certificates, its key is
    /// one certplane signs with, and the private key belongs to it. Does not check expiry: a CA that
    /// expired can still sign a final CRL.
    pub fn new(ca: &CaCertificate) -> Result<Signer, PkiError> {
        let cert = inspect::parse_der(&ca.cert_der, 1)?;
        let usage = import::check_ca_usage(&cert)?;
        let algorithm = keys::key_facts(cert.public_key())?.algorithm;
        let key = keys::signing_key_from_pkcs8(&ca.key_pkcs8, algorithm)?;
        if !public_keys_equal(key.public_key_raw(), cert.public_key()) {
            return Err(PkiError::InvalidPrivateKey {
                reason: "the CA key does not belong to the CA certificate".to_string(),
            });
        }
        let subject_key_identifier =
            cert.iter_extensions()
                .find_map(|ext| match ext.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                    _ => None,
                });
        let mut issuer = CertificateParams::default();
        issuer.distinguished_name = distinguished_name(cert.subject())?;
        issuer.key_identifier_method = match &subject_key_identifier {
            Some(id) => KeyIdMethod::PreSpecified(id.clone()),
            None => KeyIdMethod::Sha256,
        };
        let signer = Signer {
            key,
            issuer,
            algorithm,
            subject: cert.subject().to_string(),
            not_after_ms: cert.validity().not_after.timestamp().saturating_mul(1000),
            has_key_identifier: subject_key_identifier.is_some(),
            can_sign_crl: usage.can_sign_crl,
        };
        signer.check_issuer_name(cert.subject().as_raw())?;
        Ok(signer)
    }

    /// The CA key's algorithm, which decides the signature algorithm of everything this signer makes.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The CA's subject (the issuer of everything this signer makes).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the CA expires; no leaf may outlive it.
    pub fn not_after_ms(&self) -> i64 {
        self.not_after_ms
    }

    /// Sign a leaf certificate for `profile`. See the module documentation for the exact profile.
    pub fn issue(&self, profile: &LeafProfile) -> Result<IssuedCertificate, PkiError> {
        let leaf_key = keys::key_facts_from_spki(&profile.spki_der)?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&profile.spki_der).map_err(|e| {
            PkiError::UnacceptablePublicKey {
                reason: format!("the key cannot be placed in a certificate ({e})"),
            }
        })?;
        // rcgen re-encodes the key from its parts; insist that the certificate carries the exact
        // bytes the caller gave, so what was approved is what gets certified.
        if public_key.subject_public_key_info() != profile.spki_der {
            return Err(PkiError::UnacceptablePublicKey {
                reason: "the SubjectPublicKeyInfo is not in the canonical DER form".to_string(),
            });
        }
        if profile.serial.iter().all(|b| *b == 0) {
            return Err(PkiError::InvalidArgument(
                "the serial number is zero; serials must be positive (use new_serial)".to_string(),
            ));
        }
        let not_before = datetime_from_ms(profile.not_before_ms, "the start of validity")?;
        let not_after = datetime_from_ms(profile.not_after_ms, "the end of validity")?;
        if not_after <= not_before {
            return Err(PkiError::InvalidArgument(
                "the end of validity must be at least one second after its start".to_string(),
            ));
        }
        if not_after.unix_timestamp().saturating_mul(1000) > self.not_after_ms {
            return Err(PkiError::InvalidArgument(format!(
                "the certificate would be valid until {}, after its issuing CA expires at {}; \
                 shorten the validity or issue from a newer CA",
                format_ms(profile.not_after_ms),
                format_ms(self.not_after_ms)
            )));
        }

        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(&profile.serial));
        params.not_before = not_before;
        params.not_after = not_after;
        params.distinguished_name = leaf_subject(profile.common_name.as_deref())?;
        params.subject_alt_names = subject_alt_names(&profile.dns_names, &profile.ip_addresses)?;
        if params.distinguished_name.iter().next().is_none() && params.subject_alt_names.is_empty()
        {
            return Err(PkiError::InvalidArgument(
                "the certificate would name nobody: give a common name or at least one SAN"
                    .to_string(),
            ));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // RSA key exchange (TLS 1.2 RSA kx) encrypts to the certificate key; EC and Ed25519 keys
        // only ever sign.
        if leaf_key.algorithm == KeyAlgorithm::Rsa {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = self.has_key_identifier;
        let cert = params
            .signed_by(&public_key, &self.issuer())
            .map_err(generate_error)?;
        Ok(IssuedCertificate {
            cert_pem: pem_blocks::encode("CERTIFICATE", cert.der()),
            cert_der: cert.der().to_vec(),
            serial_hex: serial_hex(&profile.serial),
        })
    }

    pub(super) fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.issuer, &*self.key)
    }

    pub(super) fn issuer_key_identifier_method(&self) -> KeyIdMethod {
        self.issuer.key_identifier_method.clone()
    }

    /// rcgen writes the issuer name from its own model of a distinguished name, which cannot hold a
    /// repeated attribute type (rustls/rcgen#81: `DC=example, DC=com`) or a multi-valued RDN. Sign one
    /// throw-away certificate and compare its issuer field with the CA's subject byte for byte, so a CA
    /// whose certificates would not chain is refused here and not discovered by a client.
    fn check_issuer_name(&self, ca_subject_der: &[u8]) -> Result<(), PkiError> {
        let mut probe = CertificateParams::default();
        probe.serial_number = Some(SerialNumber::from_slice(&[1]));
        probe.not_before = OffsetDateTime::UNIX_EPOCH;
        probe.not_after = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1);
        let cert = probe
            .signed_by(&*self.key, &self.issuer())
            .map_err(generate_error)?;
        let parsed = inspect::parse_der(cert.der(), 1)?;
        if parsed.issuer().as_raw() != ca_subject_der {
            return Err(unreproducible_name(
                "certplane's signer would not write it back byte for byte",
            ));
        }
        Ok(())
    }
}

/// The CA's subject in rcgen's model, refusing what that model cannot hold.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            return Err(unreproducible_name(
                "it has a multi-valued or empty relative distinguished name",
            ));
        };
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or_else(|| unreproducible_name("an attribute type is not a valid OID"))?
            .collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err(unreproducible_name(&format!(
                "it repeats the {} attribute",
                attribute.attr_type().to_id_string()
            )));
        }
        let value = attribute.attr_value();
        let data = value.data;
        let text = || {
            std::str::from_utf8(data)
                .map_err(|_| unreproducible_name("an attribute value is not valid text"))
        };
        let bad_string = |_| unreproducible_name("an attribute value breaks its string type");
        let dn_value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::PrintableString => {
                DnValue::PrintableString(PrintableString::try_from(text()?).map_err(bad_string)?)
            }
            Tag::Ia5String => DnValue::Ia5String(Ia5String::try_from(text()?).map_err(bad_string)?),
            Tag::T61String => {
                DnValue::TeletexString(TeletexString::try_from(text()?).map_err(bad_string)?)
            }
            Tag::BmpString => {
                DnValue::BmpString(BmpString::from_utf16be(data.to_vec()).map_err(bad_string)?)
            }
            Tag::UniversalString => DnValue::UniversalString(
                UniversalString::from_utf32be(data.to_vec()).map_err(bad_string)?,
            ),
            other => {
                return Err(unreproducible_name(&format!(
                    "an attribute value has the unsupported string type {other:?}"
                )))
            }
        };
        dn.push(ty, dn_value);
    }
    Ok(dn)
}

fn unreproducible_name(why: &str) -> PkiError {
    PkiError::NotACa {
        reason: format!(
            "its subject name cannot be used as the issuer of new certificates ({why}); \
             certificates signed under it would not chain to it"
        ),
    }
}

fn leaf_subject(common_name: Option<&str>) -> Result<DistinguishedName, PkiError> {
    let mut dn = DistinguishedName::new();
    if let Some(cn) = common_name {
        if cn.trim().is_empty() || cn.chars().any(char::is_control) {
            return Err(PkiError::InvalidArgument(
                "the common name is empty or contains control characters".to_string(),
            ));
        }
        if cn.chars().count() > MAX_COMMON_NAME_CHARS {
            return Err(PkiError::InvalidArgument(format!(
                "the common name has {} characters; at most {MAX_COMMON_NAME_CHARS} fit a \
                 certificate",
                cn.chars().count()
            )));
        }
        dn.push(DnType::CommonName, cn);
    }
    Ok(dn)
}

/// DNS names must already be valid (policy checks syntax and ownership); here we only refuse what
/// cannot be encoded or is obviously not a name.
fn subject_alt_names(dns_names: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, PkiError> {
    let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
    for name in dns_names {
        if name.is_empty()
            || name.len() > MAX_DNS_NAME_CHARS
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(PkiError::InvalidArgument(format!(
                "\"{}\" is not a DNS name",
                name.escape_debug()
            )));
        }
        let ia5 = Ia5String::try_from(name.as_str()).map_err(|_| {
            PkiError::InvalidArgument(format!(
                "\"{name}\" is not ASCII; internationalised names must be given as A-labels \
                 (xn--...)"
            ))
        })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(ips.iter().copied().map(SanType::IpAddress));
    Ok(sans)
}

/// RFC 3339 for error messages, falling back to the raw number outside the representable range.
pub(super) fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms since the Unix epoch"))
}

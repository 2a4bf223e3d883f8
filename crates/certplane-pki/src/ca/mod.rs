//! The built-in CA: create or import a CA, issue leaf certificates from certplane's own profile, and
//! publish CRLs.
//!
//! ```text
//!  create_root_and_intermediate ──► root CA (CA:TRUE) ──signs──► intermediate CA (CA:TRUE, pathlen 0)
//!  import_ca (PEM cert + key)   ──► CaCertificate ─┐
//!                                                  ▼
//!                            Signer::new (key parsed once) ──► issue(LeafProfile) ──► leaf (CA:FALSE)
//!                                                          └─► crl(revoked, number, times) ──► CRL DER
//! ```
//!
//! Everything here is deterministic given its inputs except key generation and [`new_serial`]: times,
//! serials and names come from the caller, which in certplane is a command in the replicated log, so
//! the same intent issues the same certificate fields on every node that performs it. Nothing reads the
//! clock.

mod crl;
mod import;
mod signer;

#[cfg(test)]
mod tests;

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::keys::{self, KeyFacts, KeySpec};
use crate::{pem_blocks, seal, PkiError};

pub use crl::{crl_pem, RevocationReason, RevokedEntry};
pub use import::import_ca;
pub use signer::{IssuedCertificate, LeafProfile, Signer};

/// CA certificates start this long before `now_ms`, so relying parties whose clocks lag a little
/// accept certificates issued in the CA's first minutes.
pub const CA_BACKDATE_MS: i64 = 60 * 60 * 1000;
/// Longest CA lifetime `create_root_and_intermediate` accepts (100 years).
pub const MAX_CA_VALIDITY_DAYS: u32 = 36_500;
/// X.520 `ub-common-name`: longer common names are refused by strict parsers.
pub const MAX_COMMON_NAME_CHARS: usize = 64;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const ROOT_SUFFIX: &str = " Root CA";
const INTERMEDIATE_SUFFIX: &str = " Intermediate CA";

/// A CA certificate with its private key: what [`Signer::new`] needs.
#[derive(Clone)]
pub struct CaCertificate {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// Unencrypted PKCS#8, wiped on drop. Seal it before it is stored or replicated.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    pub key: KeyFacts,
    /// RFC 4514 style, as x509-parser prints it (`CN=Example Root CA`).
    pub subject: String,
    /// Unix epoch milliseconds (whole seconds, as the certificate stores them).
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

impl fmt::Debug for CaCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCertificate")
            .field("subject", &self.subject)
            .field("key", &self.key)
            .field("not_before_ms", &self.not_before_ms)
            .field("not_after_ms", &self.not_after_ms)
            .field("key_pkcs8", &"<redacted>")
            .finish()
    }
}

impl CaCertificate {
    /// Rebuild a CA from what certplane stores: the CA certificate (PEM, first block) and its
    /// unsealed PKCS#8 key. The pairing was checked when the CA was created or imported; building a
    /// [`Signer`] from the result checks again that ring can sign with the key.
    pub fn from_parts(
        cert_pem: &str,
        key_pkcs8: Zeroizing<Vec<u8>>,
    ) -> Result<CaCertificate, PkiError> {
        let chain = crate::inspect::parse_chain_pem(cert_pem)?;
        let cert = crate::inspect::parse_der(&chain.leaf_der, 1)?;
        let facts = keys::key_facts(cert.public_key())?;
        drop(cert);
        ca_certificate(chain.leaf_der, key_pkcs8, facts)
    }
}

/// Create a root CA and an intermediate CA signed by it, both with fresh keys of `spec`.
///
/// Subjects are `CN=<name> Root CA` and `CN=<name> Intermediate CA`. Both certificates are valid
/// from `now_ms` minus [`CA_BACKDATE_MS`]; the root for `root_validity_days`, the intermediate for
/// `intermediate_validity_days`, which may not exceed the root's. The root is CA:TRUE without a path
/// length limit; the intermediate is CA:TRUE with pathlen 0, so it can only sign end entities. Both
/// have keyUsage keyCertSign + cRLSign (critical), a subject key identifier, and 128-bit random serials;
/// the intermediate carries the root's key identifier as its authority key identifier.
///
/// Returns `(root, intermediate)`. Issue leaves from the intermediate and keep the root's key offline
/// where possible.
pub fn create_root_and_intermediate(
    name: &str,
    spec: &KeySpec,
    now_ms: i64,
    root_validity_days: u32,
    intermediate_validity_days: u32,
) -> Result<(CaCertificate, CaCertificate), PkiError> {
    let name = check_ca_name(name)?;
    if root_validity_days == 0 || root_validity_days > MAX_CA_VALIDITY_DAYS {
        return Err(PkiError::InvalidArgument(format!(
            "the root CA validity must be between 1 and {MAX_CA_VALIDITY_DAYS} days, not \
             {root_validity_days}"
        )));
    }
    if intermediate_validity_days == 0 || intermediate_validity_days > root_validity_days {
        return Err(PkiError::InvalidArgument(format!(
            "the intermediate CA validity must be between 1 day and the root's {root_validity_days} \
             days, not {intermediate_validity_days}"
        )));
    }
    spec.validate()?;
    let not_before_ms = now_ms.saturating_sub(CA_BACKDATE_MS);
    let root_not_after_ms = days_after(now_ms, root_validity_days);
    let intermediate_not_after_ms = days_after(now_ms, intermediate_validity_days);

    // Every parameter is checked before the (possibly slow) key generation.
    let mut root_params = ca_params(
        &format!("{name}{ROOT_SUFFIX}"),
        not_before_ms,
        root_not_after_ms,
    )?;
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut intermediate_params = ca_params(
        &format!("{name}{INTERMEDIATE_SUFFIX}"),
        not_before_ms,
        intermediate_not_after_ms,
    )?;
    intermediate_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    intermediate_params.use_authority_key_identifier_extension = true;

    let root_key = keys::generate_key(spec)?;
    let root_signing_key =
        keys::signing_key_from_pkcs8(&root_key.pkcs8_der, root_key.facts.algorithm)?;
    let root_cert = root_params
        .self_signed(&*root_signing_key)
        .map_err(generate_error)?;

    let intermediate_key = keys::generate_key(spec)?;
    // Only the public half is used here; loading the key also proves ring can sign with it.
    let intermediate_public = keys::signing_key_from_pkcs8(
        &intermediate_key.pkcs8_der,
        intermediate_key.facts.algorithm,
    )?;
    let root_issuer = Issuer::from_params(&root_params, &*root_signing_key);
    let intermediate_cert = intermediate_params
        .signed_by(&*intermediate_public, &root_issuer)
        .map_err(generate_error)?;

    Ok((
        ca_certificate(root_cert.der().to_vec(), root_key.pkcs8_der, root_key.facts)?,
        ca_certificate(
            intermediate_cert.der().to_vec(),
            intermediate_key.pkcs8_der,
            intermediate_key.facts,
        )?,
    ))
}

/// A PEM chain for a server to present: the leaf, then each CA in the order given (normally the
/// intermediate, optionally followed by the root). Blocks are normalised to LF line endings with
/// nothing between them, the same form `inspect::parse_chain_pem` produces.
pub fn chain_pem(leaf_pem: &str, cas: &[&CaCertificate]) -> String {
    let mut chain = leaf_pem.trim_end().to_string();
    chain.push('\n');
    for ca in cas {
        chain.push_str(ca.cert_pem.trim_end());
        chain.push('\n');
    }
    chain
}

/// A fresh certificate serial: 128 random bits with the top bit cleared, so the DER INTEGER is
/// positive and at most 16 bytes (RFC 5280 allows 20; the CA/B Forum wants at least 64 random bits).
/// Never all zero. Generated by the proposer and put into the command, so every node signs the same
/// serial for the same intent.
pub fn new_serial() -> Result<[u8; 16], PkiError> {
    loop {
        let mut serial = [0u8; 16];
        seal::fill_random(&mut serial)?;
        serial[0] &= 0x7f;
        // Zero is not a positive serial; the odds are 2^-127, but the loop costs nothing.
        if serial.iter().any(|b| *b != 0) {
            return Ok(serial);
        }
    }
}

/// Lowercase hex of a serial's magnitude without leading zero bytes, matching
/// `CertificateInfo::serial` and `openssl x509 -serial` (lowercased).
pub(crate) fn serial_hex(serial: &[u8]) -> String {
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    if first == serial.len() {
        return "00".to_string();
    }
    hex::encode(&serial[first..])
}

/// Latest time an X.509 certificate can encode (9999-12-31T23:59:59Z), in seconds.
const MAX_X509_SECONDS: i64 = 253_402_300_799;

/// Epoch milliseconds to the whole second at or before it. Certificates and CRLs store whole seconds,
/// and rounding down keeps a validity window inside what the caller asked for. `what` names the field
/// in the error.
pub(crate) fn datetime_from_ms(ms: i64, what: &str) -> Result<OffsetDateTime, PkiError> {
    let seconds = ms.div_euclid(1000);
    if !(0..=MAX_X509_SECONDS).contains(&seconds) {
        return Err(PkiError::InvalidArgument(format!(
            "{what} ({ms} ms since the Unix epoch) is outside 1970-01-01..9999-12-31"
        )));
    }
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| PkiError::InvalidArgument(format!("{what} ({ms} ms) cannot be represented")))
}

fn days_after(now_ms: i64, days: u32) -> i64 {
    now_ms.saturating_add(i64::from(days).saturating_mul(DAY_MS))
}

fn check_ca_name(name: &str) -> Result<&str, PkiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(PkiError::InvalidArgument(
            "the CA name is empty".to_string(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(PkiError::InvalidArgument(
            "the CA name contains control characters".to_string(),
        ));
    }
    let limit = MAX_COMMON_NAME_CHARS - INTERMEDIATE_SUFFIX.len();
    if name.chars().count() > limit {
        return Err(PkiError::InvalidArgument(format!(
            "the CA name may have at most {limit} characters, so that \"<name>{INTERMEDIATE_SUFFIX}\" \
             fits the {MAX_COMMON_NAME_CHARS}-character limit of a common name"
        )));
    }
    Ok(name)
}

fn ca_params(
    common_name: &str,
    not_before_ms: i64,
    not_after_ms: i64,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = datetime_from_ms(not_before_ms, "the CA's start of validity")?;
    params.not_after = datetime_from_ms(not_after_ms, "the CA's end of validity")?;
    params.serial_number = Some(SerialNumber::from_slice(&new_serial()?));
    Ok(params)
}

/// Describe a freshly made or imported CA certificate, reading the fields back from the DER so they
/// are what relying parties will see.
fn ca_certificate(
    cert_der: Vec<u8>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    key: KeyFacts,
) -> Result<CaCertificate, PkiError> {
    let cert = crate::inspect::parse_der(&cert_der, 1)?;
    let validity = cert.validity();
    let subject = cert.subject().to_string();
    let not_before_ms = validity.not_before.timestamp().saturating_mul(1000);
    let not_after_ms = validity.not_after.timestamp().saturating_mul(1000);
    drop(cert);
    Ok(CaCertificate {
        cert_pem: pem_blocks::encode("CERTIFICATE", &cert_der),
        cert_der,
        key_pkcs8,
        key,
        subject,
        not_before_ms,
        not_after_ms,
    })
}

fn generate_error(err: rcgen::Error) -> PkiError {
    PkiError::Generate(err.to_string())
}

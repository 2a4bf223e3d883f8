//! Parsing what users upload: a certificate chain and, optionally, its private key.
//!
//! ```text
//!  chain PEM ─► split into blocks ─► CERTIFICATE? ─► X.509 DER ─► every link checked ─► ParsedChain
//!                (pem crate)          (label)        (x509-parser)  (issuer DN + signature, ring)
//! ```
//!
//! Everything an import request can get wrong is reported as a [`PkiError`] naming the block, so the
//! API can answer 400 with a message the user can act on. Validity dates are *not* checked here: an
//! expired certificate is still a certificate the inventory must be able to hold.

pub(crate) mod fields;
pub(crate) mod private_key;

#[cfg(test)]
mod private_key_tests;
#[cfg(test)]
mod tests;

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::prelude::FromDer;

use crate::pem_blocks;
use crate::PkiError;

pub use fields::CertificateInfo;
pub use private_key::{
    key_matches_certificate, parse_private_key_pem, private_key_from_der, PrivateKeyDer,
    PrivateKeyFormat, MAX_PRIVATE_KEY_PEM_BYTES,
};

/// Largest chain upload we parse. Real chains are a few KiB; the cap keeps a hostile request cheap.
pub const MAX_CHAIN_PEM_BYTES: usize = 1024 * 1024;

/// Most certificates accepted in one chain. Public chains have 2-4; ten leaves room for odd private PKIs.
pub const MAX_CHAIN_CERTIFICATES: usize = 10;

/// A validated chain, leaf first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedChain {
    /// Inventory fields of the leaf (certificate 1).
    pub leaf: CertificateInfo,
    /// The leaf's DER, kept so callers can match a private key or re-fingerprint without re-parsing.
    pub leaf_der: Vec<u8>,
    /// All certificates re-encoded in the order given (leaf first), with LF line endings and nothing
    /// between blocks, so equal chains store as equal strings whatever the uploader's formatting was.
    pub chain_pem: String,
    pub certificate_count: usize,
}

/// Parse and check a PEM chain: the leaf first, then intermediates, optionally ending with the root.
///
/// Each certificate's issuer must be the next certificate's subject and its signature must verify with
/// the next certificate's public key. The last certificate is not checked against any trust store.
pub fn parse_chain_pem(pem: &str) -> Result<ParsedChain, PkiError> {
    if pem.len() > MAX_CHAIN_PEM_BYTES {
        return Err(PkiError::TooLarge {
            size: pem.len(),
            limit: MAX_CHAIN_PEM_BYTES,
        });
    }
    let count = pem_blocks::count(pem);
    if count == 0 {
        return Err(PkiError::NoCertificate);
    }
    if count > MAX_CHAIN_CERTIFICATES {
        return Err(PkiError::TooManyCertificates {
            count,
            limit: MAX_CHAIN_CERTIFICATES,
        });
    }

    let mut ders = Vec::with_capacity(count);
    for (i, block) in pem_blocks::split(pem).into_iter().enumerate() {
        let index = i + 1;
        let block = block.map_err(|e| PkiError::NotPem {
            index,
            reason: pem_blocks::describe_error(&e),
        })?;
        if block.tag() != "CERTIFICATE" {
            let hint = if pem_blocks::is_private_key_label(block.tag()) {
                "; send the private key in its own field, never inside the chain"
            } else {
                ""
            };
            return Err(PkiError::UnexpectedBlock {
                index,
                label: block.tag().to_string(),
                hint,
            });
        }
        ders.push(block.into_contents());
    }

    let certs = ders
        .iter()
        .enumerate()
        .map(|(i, der)| parse_der(der, i + 1))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pair) in certs.windows(2).enumerate() {
        check_link(&pair[0], &pair[1], i + 1)?;
    }

    let leaf = fields::extract(&certs[0], &ders[0])
        .map_err(|reason| PkiError::InvalidCertificate { index: 1, reason })?;
    let chain_pem = ders
        .iter()
        .map(|der| pem_blocks::encode("CERTIFICATE", der))
        .collect::<String>();
    drop(certs);
    let leaf_der = ders.into_iter().next().unwrap_or_default();
    Ok(ParsedChain {
        leaf,
        leaf_der,
        chain_pem,
        certificate_count: count,
    })
}

/// Inventory fields of one DER certificate (for certificates that did not come from a user upload,
/// such as the ones a CA connector returns).
pub fn inspect_certificate_der(der: &[u8]) -> Result<CertificateInfo, PkiError> {
    let cert = parse_der(der, 1)?;
    fields::extract(&cert, der).map_err(|reason| PkiError::InvalidCertificate { index: 1, reason })
}

/// `index` is 1-based and only used in error messages.
pub(crate) fn parse_der(der: &[u8], index: usize) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::InvalidCertificate {
            index,
            reason: describe_x509_error(e),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::InvalidCertificate {
            index,
            reason: format!("{} unexpected bytes follow the certificate", rest.len()),
        });
    }
    Ok(cert)
}

fn describe_x509_error(err: x509_parser::nom::Err<X509Error>) -> String {
    match err {
        x509_parser::nom::Err::Incomplete(_) => "the DER data is truncated".to_string(),
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => {
            format!("the DER data could not be decoded ({e})")
        }
    }
}

/// `child_index` is the 1-based position of `child`; `parent` is the next certificate.
fn check_link(
    child: &X509Certificate<'_>,
    parent: &X509Certificate<'_>,
    child_index: usize,
) -> Result<(), PkiError> {
    let parent_index = child_index + 1;
    if !names_match(child.issuer(), parent.subject()) {
        return Err(PkiError::BrokenChain {
            child: child_index,
            parent: parent_index,
            reason: format!(
                "its issuer is \"{}\" but certificate {parent_index} is \"{}\"",
                child.issuer(),
                parent.subject()
            ),
        });
    }
    match child.verify_signature(Some(parent.public_key())) {
        Ok(()) => Ok(()),
        Err(X509Error::SignatureUnsupportedAlgorithm) => Err(PkiError::UnverifiableSignature {
            index: child_index,
            algorithm: fields::signature_algorithm_name(&child.signature_algorithm.algorithm),
        }),
        Err(_) => Err(PkiError::BrokenChain {
            child: child_index,
            parent: parent_index,
            reason: format!(
                "the names match but the signature does not verify with certificate \
                 {parent_index}'s public key"
            ),
        }),
    }
}

/// Byte equality covers every chain a real CA produces; the string form forgives an issuer that was
/// re-encoded with another string type (PrintableString vs UTF8String) for the same text.
pub(crate) fn names_match(
    a: &x509_parser::x509::X509Name<'_>,
    b: &x509_parser::x509::X509Name<'_>,
) -> bool {
    a.as_raw() == b.as_raw() || a.to_string() == b.to_string()
}

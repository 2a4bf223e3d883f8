//! Importing an existing CA (certificate and private key, PEM) to issue from it.
//!
//! ```text
//!  cert PEM ─► parse_chain_pem (links checked) ─► first certificate ─► CA:TRUE? keyCertSign? not expired?
//!  key PEM  ─► parse_private_key_pem ─► key_matches_certificate ─► PKCS#8 (PKCS#1 and SEC1 wrapped)
//!                                                                  └► loads into ring for signing?
//! ```
//!
//! The key may come in any of the three unencrypted forms OpenSSL writes. ring signs only from
//! PKCS#8, so PKCS#1 (RSA) and SEC1 (EC) keys are wrapped in a PKCS#8 `PrivateKeyInfo` (the RustCrypto
//! `pkcs8` types, re-exported by the `rsa` crate) without touching the key itself.

use rsa::pkcs8::der::asn1::{AnyRef, ObjectIdentifier};
use rsa::pkcs8::der::Encode;
use rsa::pkcs8::{AlgorithmIdentifierRef, PrivateKeyInfo};
use x509_parser::certificate::X509Certificate;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use super::{ca_certificate, signer, CaCertificate};
use crate::inspect::{self, PrivateKeyDer, PrivateKeyFormat};
use crate::keys::{self, KeyFacts};
use crate::PkiError;

/// id-ecPublicKey (RFC 5480), the PKCS#8 algorithm of every ECDSA key.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// What a CA certificate allows, beyond signing certificates (which is required).
pub(super) struct CaUsage {
    /// keyUsage absent, or present with cRLSign.
    pub can_sign_crl: bool,
}

/// Import a CA to issue from. `cert_pem` holds the CA certificate first, optionally followed by its
/// own issuers (their links are checked, but only the first certificate is kept). `key_pem` is the
/// CA's unencrypted private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Keys: RSA 2048-8192, ECDSA
/// P-256/P-384, Ed25519.
///
/// Refused: a certificate without basicConstraints CA:TRUE, one whose keyUsage lacks keyCertSign, one
/// that expired before `now_ms`, a key that does not belong to it, and a CA whose subject name
/// certplane's signer cannot reproduce exactly (see [`super::Signer::new`]).
pub fn import_ca(cert_pem: &str, key_pem: &str, now_ms: i64) -> Result<CaCertificate, PkiError> {
    let chain = inspect::parse_chain_pem(cert_pem)?;
    let cert = inspect::parse_der(&chain.leaf_der, 1)?;
    check_ca_usage(&cert)?;
    let not_after = cert.validity().not_after;
    if now_ms.div_euclid(1000) > not_after.timestamp() {
        return Err(PkiError::CaExpired {
            not_after: signer::format_ms(not_after.timestamp().saturating_mul(1000)),
        });
    }
    let facts = keys::key_facts(cert.public_key()).map_err(|e| match e {
        PkiError::UnacceptablePublicKey { reason } => PkiError::NotACa {
            reason: format!("certplane cannot sign with its key: {reason}"),
        },
        other => other,
    })?;

    let key = inspect::parse_private_key_pem(key_pem)?;
    if !inspect::key_matches_certificate(&key, &chain.leaf_der)? {
        return Err(PkiError::InvalidPrivateKey {
            reason: "the CA key does not belong to the CA certificate".to_string(),
        });
    }
    let pkcs8 = to_pkcs8(&key, cert.public_key(), facts)?;
    drop(cert);

    let ca = ca_certificate(chain.leaf_der, pkcs8, facts)?;
    // Building a signer proves the whole path now: ring loads the key, the name round-trips.
    signer::Signer::new(&ca).map_err(|e| match (e, key.format()) {
        (PkiError::InvalidPrivateKey { .. }, PrivateKeyFormat::Sec1) => {
            PkiError::InvalidPrivateKey {
                reason: "the EC key cannot be used for signing; if it was saved without its \
                         public key, re-export it with `openssl pkcs8 -topk8 -nocrypt`"
                    .to_string(),
            }
        }
        (e, _) => e,
    })?;
    Ok(ca)
}

/// basicConstraints CA:TRUE and, when keyUsage is present, keyCertSign. Shared with
/// [`super::Signer::new`].
pub(super) fn check_ca_usage(cert: &X509Certificate<'_>) -> Result<CaUsage, PkiError> {
    let not_a_ca = |reason: &str| PkiError::NotACa {
        reason: reason.to_string(),
    };
    match cert.basic_constraints() {
        Ok(Some(constraints)) if constraints.value.ca => {}
        Ok(_) => {
            return Err(not_a_ca(
                "it is an end-entity certificate (basicConstraints CA:TRUE is missing)",
            ))
        }
        Err(_) => return Err(not_a_ca("its basicConstraints extension is malformed")),
    }
    match cert.key_usage() {
        Ok(None) => Ok(CaUsage { can_sign_crl: true }),
        Ok(Some(usage)) if usage.value.key_cert_sign() => Ok(CaUsage {
            can_sign_crl: usage.value.crl_sign(),
        }),
        Ok(Some(_)) => Err(not_a_ca(
            "its keyUsage extension does not allow signing certificates (keyCertSign)",
        )),
        Err(_) => Err(not_a_ca("its keyUsage extension is malformed")),
    }
}

/// The key as PKCS#8, wrapping PKCS#1 and SEC1 keys without re-encoding them.
fn to_pkcs8(
    key: &PrivateKeyDer,
    spki: &SubjectPublicKeyInfo<'_>,
    facts: KeyFacts,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let wrap_error = |e: rsa::pkcs8::der::Error| PkiError::InvalidPrivateKey {
        reason: format!("the key could not be converted to PKCS#8 ({e})"),
    };
    match key.format() {
        PrivateKeyFormat::Pkcs8 => Ok(Zeroizing::new(key.der().to_vec())),
        PrivateKeyFormat::Pkcs1 => PrivateKeyInfo::new(rsa::pkcs1::ALGORITHM_ID, key.der())
            .to_der()
            .map(Zeroizing::new)
            .map_err(wrap_error),
        PrivateKeyFormat::Sec1 => {
            // key_matches_certificate has established that the key is on the certificate's curve.
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .and_then(|oid| ObjectIdentifier::from_bytes(oid.as_bytes()).ok())
                .ok_or_else(|| PkiError::UnsupportedKey {
                    reason: format!(
                        "the {} certificate does not name its curve",
                        facts.algorithm
                    ),
                })?;
            let algorithm = AlgorithmIdentifierRef {
                oid: EC_PUBLIC_KEY,
                parameters: Some(AnyRef::from(&curve)),
            };
            PrivateKeyInfo::new(algorithm, key.der())
                .to_der()
                .map(Zeroizing::new)
                .map_err(wrap_error)
        }
    }
}

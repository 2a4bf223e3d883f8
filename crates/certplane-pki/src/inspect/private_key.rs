//! Private keys uploaded with a certificate: accept the three unencrypted PEM forms OpenSSL writes,
//! and prove the key belongs to the certificate before anything is stored.
//!
//! Matching loads the key with ring (through rcgen for PKCS#8), so a key whose public half was edited
//! to look like the certificate's is rejected, not just compared by bytes.

use std::fmt;

use x509_parser::asn1_rs::{Any, BitString, Class, FromDer, Integer, Oid, Sequence};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};
use zeroize::Zeroizing;

use super::fields::strip_leading_zeros;
use crate::{pem_blocks, PkiError};

/// Private keys are a few KiB at most (an RSA-8192 PKCS#1 PEM is under 7 KiB).
pub const MAX_PRIVATE_KEY_PEM_BYTES: usize = 64 * 1024;

/// Which container the key came in; the DER is kept as uploaded so it round-trips byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateKeyFormat {
    /// `PRIVATE KEY` (RFC 5208 / 5958), any algorithm.
    Pkcs8,
    /// `RSA PRIVATE KEY` (RFC 8017 RSAPrivateKey).
    Pkcs1,
    /// `EC PRIVATE KEY` (RFC 5915 ECPrivateKey).
    Sec1,
}

impl PrivateKeyFormat {
    pub fn pem_label(self) -> &'static str {
        match self {
            PrivateKeyFormat::Pkcs8 => "PRIVATE KEY",
            PrivateKeyFormat::Pkcs1 => "RSA PRIVATE KEY",
            PrivateKeyFormat::Sec1 => "EC PRIVATE KEY",
        }
    }
}

/// An unencrypted private key in DER. The bytes are wiped when dropped and never printed.
#[derive(Clone)]
pub struct PrivateKeyDer {
    format: PrivateKeyFormat,
    der: Zeroizing<Vec<u8>>,
}

impl PrivateKeyDer {
    pub fn format(&self) -> PrivateKeyFormat {
        self.format
    }

    /// The PEM label the key arrived with (and is exported with).
    pub fn label(&self) -> &'static str {
        self.format.pem_label()
    }

    /// The secret DER; hand it straight to [`crate::seal::seal`].
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Re-encode for an authorised export.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_blocks::encode(self.label(), &self.der))
    }
}

impl fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKeyDer")
            .field("format", &self.format)
            .field("der", &"<redacted>")
            .finish()
    }
}

/// Parse one unencrypted private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). An `EC PARAMETERS` block, as
/// `openssl ecparam -genkey` writes before the key, is skipped. Encrypted keys are refused: the server
/// must be able to use the key, and a passphrase sent next to it would protect nothing.
pub fn parse_private_key_pem(pem: &str) -> Result<PrivateKeyDer, PkiError> {
    if pem.len() > MAX_PRIVATE_KEY_PEM_BYTES {
        return Err(PkiError::TooLarge {
            size: pem.len(),
            limit: MAX_PRIVATE_KEY_PEM_BYTES,
        });
    }
    let mut found: Option<PrivateKeyDer> = None;
    for (i, block) in pem_blocks::split(pem).into_iter().enumerate() {
        let block = block.map_err(|e| PkiError::InvalidPrivateKey {
            reason: format!(
                "block {} is not valid PEM: {}",
                i + 1,
                pem_blocks::describe_error(&e)
            ),
        })?;
        let format = match block.tag() {
            "PRIVATE KEY" => PrivateKeyFormat::Pkcs8,
            "RSA PRIVATE KEY" => PrivateKeyFormat::Pkcs1,
            "EC PRIVATE KEY" => PrivateKeyFormat::Sec1,
            "ENCRYPTED PRIVATE KEY" => return Err(PkiError::EncryptedPrivateKey),
            "EC PARAMETERS" => continue,
            "CERTIFICATE" => {
                return Err(PkiError::InvalidPrivateKey {
                    reason:
                        "found a CERTIFICATE block; send the certificate chain in its own field"
                            .to_string(),
                })
            }
            other => {
                return Err(PkiError::InvalidPrivateKey {
                    reason: format!("block {} is a {other}, not a private key", i + 1),
                })
            }
        };
        // Traditional OpenSSL encryption keeps the label and adds headers.
        if block.headers().get("Proc-Type").is_some() || block.headers().get("DEK-Info").is_some() {
            return Err(PkiError::EncryptedPrivateKey);
        }
        if found.is_some() {
            return Err(PkiError::InvalidPrivateKey {
                reason: "the input holds more than one private key; send exactly one".to_string(),
            });
        }
        let der = Zeroizing::new(block.into_contents());
        decode(format, &der)?;
        found = Some(PrivateKeyDer { format, der });
    }
    found.ok_or(PkiError::NoPrivateKey)
}

/// Whether `key` is the private half of the leaf certificate's public key.
///
/// `Ok(false)` means a well-formed key for another certificate. Errors mean the key cannot be checked:
/// malformed, internally inconsistent, or of a type ring does not implement (P-521, Ed448, ...).
pub fn key_matches_certificate(key: &PrivateKeyDer, leaf_der: &[u8]) -> Result<bool, PkiError> {
    let cert = super::parse_der(leaf_der, 1)?;
    let spki = cert.public_key();
    match decode(key.format, &key.der)? {
        DecodedKey::Pkcs8 { algorithm } => {
            let key_pair = rcgen::KeyPair::try_from(key.der()).map_err(|_| {
                if ring_supports(&algorithm) {
                    PkiError::InvalidPrivateKey {
                        reason: "the PKCS#8 key is malformed or its parts do not belong together"
                            .to_string(),
                    }
                } else {
                    PkiError::UnsupportedKey {
                        reason: format!(
                            "{} keys cannot be checked; supported: RSA, ECDSA P-256/P-384, Ed25519",
                            describe_algorithm(&algorithm)
                        ),
                    }
                }
            })?;
            Ok(public_keys_equal(key_pair.public_key_raw(), spki))
        }
        DecodedKey::Pkcs1 => {
            let key_pair = ring::rsa::KeyPair::from_der(key.der()).map_err(|e| {
                PkiError::InvalidPrivateKey {
                    reason: format!("the RSA key was rejected ({e})"),
                }
            })?;
            Ok(public_keys_equal(key_pair.public().as_ref(), spki))
        }
        DecodedKey::Sec1 {
            private_key,
            curve,
            public_key,
        } => sec1_matches(private_key, curve, public_key, spki),
    }
}

/// What the structural decode learned; enough to match the key and to word errors.
enum DecodedKey<'a> {
    Pkcs8 {
        algorithm: AlgorithmIdentifier<'a>,
    },
    Pkcs1,
    Sec1 {
        private_key: &'a [u8],
        curve: Option<Oid<'a>>,
        public_key: Option<Vec<u8>>,
    },
}

/// Recognise a stored private key's container from its DER alone (PKCS#8, PKCS#1 or SEC1), so an
/// export carries the label it arrived with.
pub fn private_key_from_der(der: &[u8]) -> Result<PrivateKeyDer, PkiError> {
    for format in [
        PrivateKeyFormat::Pkcs8,
        PrivateKeyFormat::Pkcs1,
        PrivateKeyFormat::Sec1,
    ] {
        if decode(format, der).is_ok() {
            return Ok(PrivateKeyDer {
                format,
                der: Zeroizing::new(der.to_vec()),
            });
        }
    }
    Err(PkiError::InvalidPrivateKey {
        reason: "the stored key is not PKCS#8, PKCS#1 or SEC1 DER".to_string(),
    })
}

fn decode(format: PrivateKeyFormat, der: &[u8]) -> Result<DecodedKey<'_>, PkiError> {
    let invalid = |what: &str| PkiError::InvalidPrivateKey {
        reason: format!("the {} block does not contain {what}", format.pem_label()),
    };
    match format {
        // PrivateKeyInfo ::= SEQUENCE { version, privateKeyAlgorithm, privateKey OCTET STRING, ... }
        PrivateKeyFormat::Pkcs8 => Sequence::from_der_and_then(der, |i| {
            let (i, _version) = u32::from_der(i)?;
            let (i, algorithm) = AlgorithmIdentifier::from_der(i).map_err(|_| {
                x509_parser::nom::Err::Error(x509_parser::asn1_rs::Error::BerValueError)
            })?;
            let (i, _key) = <&[u8]>::from_der(i)?;
            Ok((i, DecodedKey::Pkcs8 { algorithm }))
        })
        .map(|(_, key)| key)
        .map_err(|_| invalid("a PKCS#8 PrivateKeyInfo")),
        // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, privateExponent, ... }
        PrivateKeyFormat::Pkcs1 => Sequence::from_der_and_then(der, |i| {
            let (i, _version) = u32::from_der(i)?;
            let (i, _modulus) = Integer::from_der(i)?;
            let (i, _exponent) = Integer::from_der(i)?;
            let (i, _private_exponent) = Integer::from_der(i)?;
            Ok((i, DecodedKey::Pkcs1))
        })
        .map(|(_, key)| key)
        .map_err(|_| invalid("a PKCS#1 RSAPrivateKey")),
        // ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING,
        //                             parameters [0] OID OPTIONAL, publicKey [1] BIT STRING OPTIONAL }
        PrivateKeyFormat::Sec1 => Sequence::from_der_and_then(der, |i| {
            let (i, version) = u32::from_der(i)?;
            if version != 1 {
                return Err(x509_parser::nom::Err::Error(
                    x509_parser::asn1_rs::Error::BerValueError,
                ));
            }
            let (mut i, private_key) = <&[u8]>::from_der(i)?;
            let mut curve = None;
            let mut public_key = None;
            while !i.is_empty() {
                let (rest, field) = Any::from_der(i)?;
                i = rest;
                if field.class() != Class::ContextSpecific {
                    continue;
                }
                match field.tag().0 {
                    0 => curve = Some(Oid::from_der(field.data)?.1),
                    1 => public_key = Some(BitString::from_der(field.data)?.1.data.to_vec()),
                    _ => {}
                }
            }
            Ok((
                i,
                DecodedKey::Sec1 {
                    private_key,
                    curve,
                    public_key,
                },
            ))
        })
        .map(|(_, key)| key)
        .map_err(|_| invalid("an RFC 5915 ECPrivateKey")),
    }
}

fn sec1_matches(
    private_key: &[u8],
    key_curve: Option<Oid<'_>>,
    key_public: Option<Vec<u8>>,
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<bool, PkiError> {
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Ok(false);
    }
    let cert_curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    // The curve may be left out of the key when the context (here: the certificate) names it.
    let Some(curve) = key_curve.or_else(|| cert_curve.clone()) else {
        return Err(PkiError::UnsupportedKey {
            reason: "the EC key does not name its curve".to_string(),
        });
    };
    if cert_curve.as_ref() != Some(&curve) {
        return Ok(false);
    }
    let algorithm = if curve == OID_EC_P256 {
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING
    } else if curve == OID_NIST_EC_P384 {
        &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING
    } else {
        return Err(PkiError::UnsupportedKey {
            reason: format!(
                "EC keys on curve {} cannot be checked; supported: P-256, P-384",
                curve.to_id_string()
            ),
        });
    };
    let cert_public: &[u8] = &spki.subject_public_key.data;
    let rng = ring::rand::SystemRandom::new();
    match key_public {
        Some(key_public) if key_public != cert_public => Ok(false),
        // ring checks that the scalar produces this point, so a forged public half is caught.
        Some(key_public) => {
            ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
                algorithm,
                private_key,
                &key_public,
                &rng,
            )
            .map_err(|e| PkiError::InvalidPrivateKey {
                reason: format!(
                    "the EC key's public half does not belong to its private half ({e})"
                ),
            })?;
            Ok(true)
        }
        // Without a stored public key, the only question is whether the scalar produces the
        // certificate's point; ring answers exactly that.
        None => Ok(
            ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
                algorithm,
                private_key,
                cert_public,
                &rng,
            )
            .is_ok(),
        ),
    }
}

/// RSA keys are compared as numbers (DER may differ in padding); everything else by raw bytes.
pub(crate) fn public_keys_equal(key_public: &[u8], spki: &SubjectPublicKeyInfo<'_>) -> bool {
    let cert_public: &[u8] = &spki.subject_public_key.data;
    if spki.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
        return key_public == cert_public;
    }
    match (
        RSAPublicKey::from_der(key_public),
        RSAPublicKey::from_der(cert_public),
    ) {
        (Ok((_, a)), Ok((_, b))) => {
            strip_leading_zeros(a.modulus) == strip_leading_zeros(b.modulus)
                && strip_leading_zeros(a.exponent) == strip_leading_zeros(b.exponent)
        }
        _ => false,
    }
}

fn ring_supports(algorithm: &AlgorithmIdentifier<'_>) -> bool {
    let oid = &algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION || *oid == OID_SIG_ED25519 {
        return true;
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return curve.is_some_and(|c| c == OID_EC_P256 || c == OID_NIST_EC_P384);
    }
    false
}

fn describe_algorithm(algorithm: &AlgorithmIdentifier<'_>) -> String {
    if algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|c| c.to_id_string())
            .unwrap_or_else(|| "an unnamed curve".to_string());
        format!("EC ({curve})")
    } else {
        algorithm.algorithm.to_id_string()
    }
}

//! Key pairs for the built-in CA and for server-side key generation, and the one place that decides
//! which public keys certplane accepts.
//!
//! ```text
//!  KeySpec ──► generate_key ──► GeneratedKey { PKCS#8 (wiped on drop), SPKI, KeyFacts }
//!               ECDSA / Ed25519: ring (through rcgen)      RSA: RustCrypto `rsa` (ring cannot)
//!
//!  SPKI DER (from a CSR, a certificate, a generated key) ──► key_facts_from_spki ──► KeyFacts | refused
//! ```
//!
//! Accepted keys are exactly the ones ring can sign and verify with: RSA 2048-8192 bits (rsaEncryption),
//! ECDSA on P-256 or P-384, and Ed25519. Everything else (DSA, P-192/P-224, secp256k1, P-521, Ed448,
//! RSA-PSS-only keys, explicit curve parameters) is refused with a message saying what to use instead,
//! so the same rule applies to CSRs, imported CAs and issued certificates.

use std::fmt;

use rcgen::{
    KeyPair, PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ED25519, PKCS_RSA_SHA256,
};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_DSA, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ED25519, OID_SIG_ED448,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::{Zeroize, Zeroizing};

use crate::inspect::fields::{strip_leading_zeros, unsigned_bits};
use crate::PkiError;

/// Smallest RSA modulus accepted anywhere (NIST SP 800-131A, CA/B Forum baseline requirements).
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA modulus accepted: ring verifies and signs up to 8192 bits, and bigger keys only make
/// every handshake slower.
pub const MAX_RSA_BITS: u32 = 8192;
/// RSA sizes certplane generates. Odd sizes are accepted in CSRs but never produced.
pub const GENERATED_RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// The public-key algorithms certplane accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAlgorithm {
    Rsa,
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::Rsa => "RSA",
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
            KeyAlgorithm::EcdsaP384 => "ECDSA P-384",
            KeyAlgorithm::Ed25519 => "Ed25519",
        })
    }
}

/// What policy and the inventory need to know about a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyFacts {
    pub algorithm: KeyAlgorithm,
    /// RSA modulus bits; 256 or 384 for ECDSA (the curve); 256 for Ed25519.
    pub bits: u32,
}

/// A key to generate. JSON: `{"type":"ecdsa_p256"}`, `{"type":"rsa","bits":3072}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeySpec {
    /// `bits` must be one of [`GENERATED_RSA_BITS`]; [`KeySpec::validate`] says so in words.
    Rsa {
        bits: u32,
    },
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeySpec {
    /// Check the parameters before any work is done (the API calls this at intake; [`generate_key`]
    /// calls it again).
    pub fn validate(&self) -> Result<(), PkiError> {
        match self {
            KeySpec::Rsa { bits } if !GENERATED_RSA_BITS.contains(bits) => {
                Err(PkiError::InvalidArgument(format!(
                    "RSA keys are generated with 2048, 3072 or 4096 bits, not {bits}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The facts a key generated from this spec will have.
    pub fn facts(&self) -> KeyFacts {
        match *self {
            KeySpec::Rsa { bits } => KeyFacts {
                algorithm: KeyAlgorithm::Rsa,
                bits,
            },
            KeySpec::EcdsaP256 => KeyFacts {
                algorithm: KeyAlgorithm::EcdsaP256,
                bits: 256,
            },
            KeySpec::EcdsaP384 => KeyFacts {
                algorithm: KeyAlgorithm::EcdsaP384,
                bits: 384,
            },
            KeySpec::Ed25519 => KeyFacts {
                algorithm: KeyAlgorithm::Ed25519,
                bits: 256,
            },
        }
    }
}

/// A fresh key pair. The PKCS#8 DER is the secret: seal it ([`crate::seal::seal`]) before storing.
pub struct GeneratedKey {
    /// Unencrypted PKCS#8 `PrivateKeyInfo`, wiped when dropped.
    pub pkcs8_der: Zeroizing<Vec<u8>>,
    /// DER `SubjectPublicKeyInfo`, what a certificate for this key carries.
    pub spki_der: Vec<u8>,
    pub facts: KeyFacts,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("pkcs8_der", &"<redacted>")
            .field("spki_der", &hex::encode(&self.spki_der))
            .field("facts", &self.facts)
            .finish()
    }
}

/// Generate a key pair. RSA takes from tens of milliseconds (2048) to seconds (4096) of CPU; call it
/// from a blocking thread on an async runtime.
pub fn generate_key(spec: &KeySpec) -> Result<GeneratedKey, PkiError> {
    spec.validate()?;
    let (pkcs8_der, spki_der) = match *spec {
        KeySpec::Rsa { bits } => generate_rsa(bits)?,
        KeySpec::EcdsaP256 => generate_with_ring(&PKCS_ECDSA_P256_SHA256)?,
        KeySpec::EcdsaP384 => generate_with_ring(&PKCS_ECDSA_P384_SHA384)?,
        KeySpec::Ed25519 => generate_with_ring(&PKCS_ED25519)?,
    };
    // Derive the facts from what was produced rather than trusting the spec, so a generator bug
    // surfaces here and not in a certificate.
    let facts = key_facts_from_spki(&spki_der)?;
    if facts != spec.facts() {
        return Err(PkiError::KeyGeneration {
            reason: format!(
                "asked for {:?} but produced {} {} bits",
                spec, facts.algorithm, facts.bits
            ),
        });
    }
    Ok(GeneratedKey {
        pkcs8_der,
        spki_der,
        facts,
    })
}

fn generate_with_ring(
    alg: &'static SignatureAlgorithm,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), PkiError> {
    let key = WipedKeyPair(
        KeyPair::generate_for(alg).map_err(|e| PkiError::KeyGeneration {
            reason: e.to_string(),
        })?,
    );
    let pkcs8 = Zeroizing::new(key.serialize_der());
    Ok((pkcs8, key.subject_public_key_info()))
}

fn generate_rsa(bits: u32) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), PkiError> {
    let bit_size = usize::try_from(bits).map_err(|_| PkiError::KeyGeneration {
        reason: format!("{bits} bits do not fit this platform"),
    })?;
    // RsaPrivateKey wipes its numbers on drop; SecretDocument wipes the encoding on drop.
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bit_size).map_err(|e| {
        PkiError::KeyGeneration {
            reason: format!("RSA key generation failed ({e})"),
        }
    })?;
    let document = private
        .to_pkcs8_der()
        .map_err(|e| PkiError::KeyGeneration {
            reason: format!("the RSA key could not be encoded as PKCS#8 ({e})"),
        })?;
    let pkcs8 = Zeroizing::new(document.as_bytes().to_vec());
    let spki = private
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| PkiError::KeyGeneration {
            reason: format!("the RSA public key could not be encoded ({e})"),
        })?
        .into_vec();
    // Prove ring (the signer) accepts the key as produced; ring is stricter about RSA key structure
    // than the generator, and a key that cannot sign must fail now, not at first use.
    let loaded = signing_key_from_pkcs8(&pkcs8, KeyAlgorithm::Rsa)?;
    if loaded.subject_public_key_info() != spki {
        return Err(PkiError::KeyGeneration {
            reason: "ring reads a different public key from the generated RSA key".to_string(),
        });
    }
    Ok((pkcs8, spki))
}

/// The rcgen signature algorithm certplane signs with for a CA key of this type: SHA-256 with P-256
/// and RSA, SHA-384 with P-384 (matching hash and curve strength), pure Ed25519.
pub(crate) fn signature_algorithm_for(algorithm: KeyAlgorithm) -> &'static SignatureAlgorithm {
    match algorithm {
        KeyAlgorithm::Rsa => &PKCS_RSA_SHA256,
        KeyAlgorithm::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Ed25519 => &PKCS_ED25519,
    }
}

/// An rcgen key pair whose copy of the PKCS#8 bytes is wiped when dropped. (ring's own key schedule
/// cannot be wiped: ring offers no way to.)
/// `Debug` is rcgen's, which elides the secret.
#[derive(Debug)]
pub(crate) struct WipedKeyPair(KeyPair);

impl std::ops::Deref for WipedKeyPair {
    type Target = KeyPair;

    fn deref(&self) -> &KeyPair {
        &self.0
    }
}

impl Drop for WipedKeyPair {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Load a PKCS#8 key into rcgen (ring) for signing, insisting on the expected algorithm.
///
/// rcgen's `try_from` detects the type itself; checking the result against the algorithm we derived
/// from the certificate keeps a P-384 key from being silently used where P-256 was expected.
pub(crate) fn signing_key_from_pkcs8(
    pkcs8: &[u8],
    expected: KeyAlgorithm,
) -> Result<WipedKeyPair, PkiError> {
    let key = WipedKeyPair(
        KeyPair::try_from(pkcs8).map_err(|_| PkiError::InvalidPrivateKey {
            reason: format!(
                "the {expected} key cannot be loaded for signing (malformed PKCS#8, or parts that \
                 do not belong together)"
            ),
        })?,
    );
    if key.algorithm() != signature_algorithm_for(expected) {
        return Err(PkiError::InvalidPrivateKey {
            reason: format!("the private key is not an {expected} key"),
        });
    }
    Ok(key)
}

/// The facts of a DER `SubjectPublicKeyInfo`, or a refusal that names the problem and the fix.
pub fn key_facts_from_spki(spki_der: &[u8]) -> Result<KeyFacts, PkiError> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| PkiError::UnacceptablePublicKey {
            reason: "it is not a DER SubjectPublicKeyInfo".to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::UnacceptablePublicKey {
            reason: format!("{} unexpected bytes follow the key", rest.len()),
        });
    }
    key_facts(&spki)
}

/// As [`key_facts_from_spki`], for a key x509-parser has already parsed out of a CSR or certificate.
pub(crate) fn key_facts(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyFacts, PkiError> {
    let oid = &spki.algorithm.algorithm;
    let key: &[u8] = &spki.subject_public_key.data;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        rsa_facts(key)
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        ec_facts(spki, key)
    } else if *oid == OID_SIG_ED25519 {
        if spki.algorithm.parameters.is_some() || key.len() != 32 {
            return Err(refuse(
                "the Ed25519 key is malformed (expected 32 bytes, no parameters)",
            ));
        }
        Ok(KeyFacts {
            algorithm: KeyAlgorithm::Ed25519,
            bits: 256,
        })
    } else if *oid == OID_PKCS1_RSASSAPSS {
        Err(refuse(
            "RSA-PSS-only keys (id-RSASSA-PSS) are not supported; use an ordinary RSA key \
             (rsaEncryption), which can still sign with PSS",
        ))
    } else if *oid == OID_KEY_TYPE_DSA {
        Err(refuse(
            "DSA keys are not accepted: DSA is deprecated and no longer allowed for TLS \
             certificates; use ECDSA P-256/P-384, Ed25519 or RSA with at least 2048 bits",
        ))
    } else if *oid == OID_SIG_ED448 {
        Err(refuse(
            "Ed448 keys are not supported; use Ed25519, ECDSA P-256/P-384 or RSA",
        ))
    } else {
        let name = match oid.to_id_string().as_str() {
            "1.3.101.110" => "X25519 (a key-agreement key, it cannot sign)".to_string(),
            "1.3.101.111" => "X448 (a key-agreement key, it cannot sign)".to_string(),
            "1.2.840.10046.2.1" => "Diffie-Hellman (it cannot sign)".to_string(),
            other => format!("algorithm {other}"),
        };
        Err(refuse(&format!(
            "{name} keys are not supported; use ECDSA P-256/P-384, Ed25519 or RSA"
        )))
    }
}

fn refuse(reason: &str) -> PkiError {
    PkiError::UnacceptablePublicKey {
        reason: reason.to_string(),
    }
}

fn rsa_facts(key: &[u8]) -> Result<KeyFacts, PkiError> {
    let (rest, rsa) = RSAPublicKey::from_der(key)
        .map_err(|_| refuse("the RSA key is malformed (not a PKCS#1 RSAPublicKey)"))?;
    if !rest.is_empty() {
        return Err(refuse("the RSA key is malformed (trailing bytes)"));
    }
    let bits = unsigned_bits(rsa.modulus);
    if bits < MIN_RSA_BITS {
        return Err(refuse(&format!(
            "RSA keys must have at least {MIN_RSA_BITS} bits; this one has {bits}"
        )));
    }
    if bits > MAX_RSA_BITS {
        return Err(refuse(&format!(
            "RSA keys may have at most {MAX_RSA_BITS} bits; this one has {bits}"
        )));
    }
    // A real modulus is odd (a product of odd primes); an even one is garbage, not a key.
    if strip_leading_zeros(rsa.modulus)
        .last()
        .is_none_or(|b| b & 1 == 0)
    {
        return Err(refuse("the RSA modulus is even, so this is not a real key"));
    }
    // e = 1 would make "encryption" the identity; ring requires an odd e of at least 3 and below
    // 2^33, and so do we, so every accepted key can be used by the rest of the stack.
    let exponent = strip_leading_zeros(rsa.exponent);
    let value = (exponent.len() <= 5).then(|| {
        exponent
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    if !value.is_some_and(|e| e >= 3 && e & 1 == 1 && e < (1u64 << 33)) {
        return Err(refuse(
            "the RSA public exponent is unusable (it must be odd, at least 3 and below 2^33; \
             65537 is standard)",
        ));
    }
    Ok(KeyFacts {
        algorithm: KeyAlgorithm::Rsa,
        bits,
    })
}

fn ec_facts(spki: &SubjectPublicKeyInfo<'_>, point: &[u8]) -> Result<KeyFacts, PkiError> {
    let Some(curve) = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
    else {
        return Err(refuse(
            "EC keys with explicit or missing curve parameters are not accepted; use a named \
             curve (P-256 or P-384)",
        ));
    };
    let (algorithm, bits, coordinate_len) = if curve == OID_EC_P256 {
        (KeyAlgorithm::EcdsaP256, 256, 32)
    } else if curve == OID_NIST_EC_P384 {
        (KeyAlgorithm::EcdsaP384, 384, 48)
    } else {
        let (name, why) = match curve.to_id_string().as_str() {
            "1.2.840.10045.3.1.1" => ("P-192 (prime192v1)", "it is too weak"),
            "1.3.132.0.33" => ("P-224 (secp224r1)", "it is too weak"),
            "1.3.132.0.10" => (
                "secp256k1",
                "it is not a curve TLS clients accept in certificates",
            ),
            _ if curve == OID_NIST_EC_P521 => (
                "P-521 (secp521r1)",
                "certplane's crypto library (ring) cannot use it",
            ),
            "1.3.36.3.3.2.8.1.1.7" | "1.3.36.3.3.2.8.1.1.11" | "1.3.36.3.3.2.8.1.1.13" => (
                "a Brainpool curve",
                "it is not a curve mainstream TLS clients accept",
            ),
            _ => ("this curve", "it is not supported"),
        };
        return Err(PkiError::UnacceptablePublicKey {
            reason: format!(
                "ECDSA keys on {name} ({}) are not accepted because {why}; use P-256 or P-384",
                curve.to_id_string()
            ),
        });
    };
    // Uncompressed SEC1 point: 0x04 || X || Y. ring (and most TLS stacks) cannot use compressed
    // points, so a certificate carrying one would be useless.
    if point.first() != Some(&0x04) || point.len() != 1 + 2 * coordinate_len {
        return Err(refuse(
            "the EC public key is not an uncompressed point; compressed points are not supported",
        ));
    }
    Ok(KeyFacts { algorithm, bits })
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;

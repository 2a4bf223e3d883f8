//! Envelope encryption of private keys at rest (DESIGN.md section 4).
//!
//! ```text
//!   KEK (32 bytes, a file on each node, never in the log)
//!     └─ wraps ─► data key (32 random bytes, one per record)
//!                   └─ seals ─► private key DER, bound to the record by AAD (its fingerprint)
//! ```
//!
//! Both layers use XChaCha20-Poly1305 with random 24-byte nonces: nonces that large can be drawn at
//! random for any number of records without a counter, which a replicated log could not keep unique.
//! A fresh data key per record means no two records ever share a key, and rotating the KEK only
//! re-wraps 72-byte blobs. The [`SealedKey`] itself is replicated through Raft like any record; only the
//! KEK stays outside it.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::PkiError;

/// Format version written into every [`SealedKey`].
pub const SEALED_KEY_VERSION: u16 = 1;
pub const SEAL_ALGORITHM: &str = "XChaCha20-Poly1305";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// A KEK file holds 64 hex characters or 44 base64 ones; anything much bigger is the wrong file.
const MAX_KEK_FILE_BYTES: u64 = 4096;

/// Domain separation: a wrapped data key can never be mistaken for a sealed private key, and a data
/// key wrapped under one KEK id cannot be presented as wrapped under another.
const WRAP_AAD_PREFIX: &[u8] = b"certplane/sealed-key/v1/data-key/";
const SEAL_AAD_PREFIX: &[u8] = b"certplane/sealed-key/v1/private-key/";

/// The key-encryption key. Supplied to each node from outside the log; the bytes are wiped on drop and
/// never printed.
pub struct Kek {
    id: String,
    key: [u8; KEY_LEN],
}

impl Kek {
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Kek {
        // The id lets an operator see which KEK sealed a record without revealing the KEK.
        let id = hex::encode(Sha256::digest(key))[..16].to_string();
        Kek { id, key }
    }

    /// Load a KEK file: 32 random bytes written as 64 hex characters or as base64, surrounding
    /// whitespace ignored.
    pub fn load(path: &Path) -> Result<Kek, PkiError> {
        let invalid = |reason: String| PkiError::InvalidKek {
            reason: format!("{}: {reason}", path.display()),
        };
        let size = std::fs::metadata(path)
            .map_err(|e| PkiError::io(path, e))?
            .len();
        if size > MAX_KEK_FILE_BYTES {
            return Err(invalid(format!(
                "the file is {size} bytes; a KEK file holds 64 hex characters or 44 base64 characters"
            )));
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| PkiError::io(path, e))?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            invalid("the file is not text; expected 64 hex characters or base64".into())
        })?;
        Kek::parse(text.trim()).map_err(invalid)
    }

    /// Write a fresh random KEK (hex) to a new file, readable only by its owner. Refuses to replace an
    /// existing file: losing a KEK loses every private key sealed under it.
    pub fn generate_file(path: &Path) -> Result<Kek, PkiError> {
        let mut key = [0u8; KEY_LEN];
        fill_random(&mut key)?;
        let kek = Kek::from_bytes(key);
        key.zeroize();
        let text = Zeroizing::new(format!("{}\n", hex::encode(kek.key)));

        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                PkiError::io(path, e)
            }
        })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| PkiError::io(path, e))?;
        Ok(kek)
    }

    /// The first 16 hex characters of SHA-256 over the key bytes.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn parse(text: &str) -> Result<Kek, String> {
        if text.is_empty() {
            return Err(
                "the file is empty; expected 32 random bytes as 64 hex characters".to_string(),
            );
        }
        // Base64 of 32 bytes is 44 characters ending in '=', so all-hex text is always meant as hex.
        let decoded = if text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
                .ok()
        };
        let decoded = Zeroizing::new(decoded.ok_or_else(|| {
            "expected 32 random bytes written as 64 hex characters or as base64 \
             (for example the output of `openssl rand -hex 32`)"
                .to_string()
        })?);
        let key: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            format!(
                "the key decodes to {} bytes; it must be exactly 32 random bytes",
                decoded.len()
            )
        })?;
        Ok(Kek::from_bytes(key))
    }
}

impl Drop for Kek {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A private key as stored in a record. Hex rather than base64 so it reads the same in JSON, logs of
/// the record shape, and RocksDB dumps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// [`SEALED_KEY_VERSION`]; readers refuse versions they do not know.
    pub v: u16,
    pub algorithm: String,
    /// Which KEK wrapped the data key, so a node with the wrong KEK says so instead of "tampered".
    pub kek_id: String,
    /// hex(nonce || ciphertext+tag) of the per-record data key under the KEK.
    pub wrapped_data_key: String,
    /// hex(nonce || ciphertext+tag) of the private key DER under the data key.
    pub sealed_key: String,
}

/// Seal `plaintext_der` under a fresh data key. `aad` binds the result to its record (pass the
/// certificate fingerprint): opening it with another record's `aad` fails.
pub fn seal(kek: &Kek, plaintext_der: &[u8], aad: &[u8]) -> Result<SealedKey, PkiError> {
    let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(&mut data_key[..])?;
    let wrapped = encrypt(&kek.key, &data_key[..], &wrap_aad(&kek.id))?;
    let sealed = encrypt(&data_key, plaintext_der, &seal_aad(aad))?;
    Ok(SealedKey {
        v: SEALED_KEY_VERSION,
        algorithm: SEAL_ALGORITHM.to_string(),
        kek_id: kek.id.clone(),
        wrapped_data_key: hex::encode(wrapped),
        sealed_key: hex::encode(sealed),
    })
}

/// Open a [`SealedKey`]. Fails on an unknown version, the wrong KEK, another record's `aad`, or any
/// modified byte.
pub fn open(kek: &Kek, sealed: &SealedKey, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let unseal = |reason: &str| PkiError::Unseal {
        reason: reason.to_string(),
    };
    if sealed.v != SEALED_KEY_VERSION {
        return Err(PkiError::Unseal {
            reason: format!(
                "format version {} is not supported (this build reads version {SEALED_KEY_VERSION})",
                sealed.v
            ),
        });
    }
    if sealed.algorithm != SEAL_ALGORITHM {
        return Err(PkiError::Unseal {
            reason: format!("algorithm \"{}\" is not supported", sealed.algorithm),
        });
    }
    if sealed.kek_id != kek.id {
        return Err(PkiError::WrongKek {
            expected: kek.id.clone(),
            found: sealed.kek_id.clone(),
        });
    }
    let wrapped = hex::decode(&sealed.wrapped_data_key)
        .map_err(|_| unseal("the wrapped data key is not hex"))?;
    let ciphertext =
        hex::decode(&sealed.sealed_key).map_err(|_| unseal("the sealed key is not hex"))?;

    let data_key = decrypt(&kek.key, &wrapped, &wrap_aad(&kek.id)).ok_or_else(|| {
        unseal("the wrapped data key failed authentication; the record was modified")
    })?;
    let data_key: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(
        data_key
            .as_slice()
            .try_into()
            .map_err(|_| unseal("the wrapped data key has the wrong length"))?,
    );
    decrypt(&data_key, &ciphertext, &seal_aad(aad)).ok_or_else(|| {
        unseal("the sealed key failed authentication; it was modified or belongs to another record")
    })
}

fn wrap_aad(kek_id: &str) -> Vec<u8> {
    [WRAP_AAD_PREFIX, kek_id.as_bytes()].concat()
}

fn seal_aad(record_aad: &[u8]) -> Vec<u8> {
    [SEAL_AAD_PREFIX, record_aad].concat()
}

/// nonce || ciphertext+tag
fn encrypt(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, PkiError> {
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| PkiError::Encrypt)?;
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| PkiError::Encrypt)?;
    Ok([nonce.as_slice(), &ciphertext].concat())
}

/// `None` for every failure: callers word the error, and AEAD failures carry no detail anyway.
fn decrypt(key: &[u8; KEY_LEN], blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new_from_slice(key).ok()?;
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), PkiError> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|_| PkiError::Random)
}

#[cfg(test)]
#[path = "seal_tests.rs"]
mod tests;

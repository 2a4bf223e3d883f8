//! The one error type of this crate.
//!
//! Messages are written for the person who sent the input (an API client or an operator), so they say
//! what is wrong and, where it helps, what to send instead. Positions are 1-based ("certificate 2") because
//! that is how people count the blocks in a PEM file. No message ever contains key material.

use std::path::PathBuf;

/// Everything that can go wrong in `certplane-pki`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The input is larger than we are willing to parse (a chain or key is a few KiB at most).
    #[error("the input is {size} bytes; at most {limit} bytes are accepted")]
    TooLarge { size: usize, limit: usize },

    /// Empty input, or text without any `-----BEGIN ...-----` block.
    #[error("no certificate found: expected one or more -----BEGIN CERTIFICATE----- blocks")]
    NoCertificate,

    /// A block whose framing or base64 body is broken.
    #[error("certificate {index} in the chain is not valid PEM: {reason}")]
    NotPem { index: usize, reason: String },

    /// A well-formed PEM block that is not a certificate (most often a private key pasted into the chain).
    #[error("block {index} in the chain is a {label}, not a CERTIFICATE{hint}")]
    UnexpectedBlock {
        index: usize,
        label: String,
        hint: &'static str,
    },

    /// The DER inside a CERTIFICATE block is not an X.509 certificate.
    #[error("certificate {index} in the chain is not a valid X.509 certificate: {reason}")]
    InvalidCertificate { index: usize, reason: String },

    #[error("the chain has {count} certificates; at most {limit} are accepted")]
    TooManyCertificates { count: usize, limit: usize },

    /// Certificate `child` does not chain to the next certificate in the file.
    #[error(
        "the chain is broken: certificate {child} is not signed by certificate {parent} ({reason})"
    )]
    BrokenChain {
        child: usize,
        parent: usize,
        reason: String,
    },

    /// The link could not be checked because ring does not implement the signature algorithm.
    #[error(
        "certificate {index} is signed with {algorithm}, which certplane cannot verify; \
         supported: RSA PKCS#1 v1.5 and PSS with SHA-2, ECDSA P-256/P-384 with SHA-256/SHA-384, Ed25519"
    )]
    UnverifiableSignature { index: usize, algorithm: String },

    #[error("no private key found: expected a -----BEGIN PRIVATE KEY----- block (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey,

    #[error("encrypted private keys are not accepted; supply the key unencrypted over TLS")]
    EncryptedPrivateKey,

    #[error("the private key is not valid: {reason}")]
    InvalidPrivateKey { reason: String },

    /// A well-formed key of a type that cannot be checked or used (for example P-521 with ring).
    #[error("the private key is not supported: {reason}")]
    UnsupportedKey { reason: String },

    /// The key-encryption key file or bytes are unusable.
    #[error("the key-encryption key is not valid: {reason}")]
    InvalidKek { reason: String },

    /// The record was sealed under another KEK; the node was started with the wrong KEK file.
    #[error(
        "this key was sealed with key-encryption key {found}, but key-encryption key {expected} is loaded"
    )]
    WrongKek { expected: String, found: String },

    /// Authentication failed or the sealed record is malformed.
    #[error("the sealed key could not be opened: {reason}")]
    Unseal { reason: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} already exists; pass --force to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },

    /// A caller-supplied parameter is out of range (node count, empty name, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// rcgen refused to build a certificate; with our own parameters this means a name it cannot encode.
    #[error("could not generate the certificate: {0}")]
    Generate(String),

    /// The input is not a usable PKCS#10 certificate request (framing, DER, version, extensions).
    #[error("the certificate request (CSR) is not valid: {reason}")]
    InvalidCsr { reason: String },

    /// The CSR's self-signature does not verify: it was edited after signing, or is corrupt.
    #[error(
        "the certificate request's signature does not verify with its own public key; it was \
         altered after it was signed or is corrupt, so create it again"
    )]
    CsrSignatureInvalid,

    /// MD5, SHA-1 and other broken digests: a signature anyone can forge proves nothing.
    #[error(
        "the certificate request is signed with {algorithm}, which is no longer secure; sign it \
         with SHA-256 or stronger (for example `openssl req -sha256`)"
    )]
    WeakSignatureAlgorithm { algorithm: String },

    /// A signature algorithm ring cannot verify (ECDSA with SHA-512, DSA, GOST, ...).
    #[error(
        "the certificate request is signed with {algorithm}, which certplane cannot verify; \
         supported: RSA PKCS#1 v1.5 and PSS with SHA-256/384/512, ECDSA with SHA-256/384, Ed25519"
    )]
    UnsupportedSignatureAlgorithm { algorithm: String },

    /// A public key that is too weak or of a type certplane does not issue for or sign with.
    #[error("the public key is not accepted: {reason}")]
    UnacceptablePublicKey { reason: String },

    /// An imported CA certificate that may not sign certificates.
    #[error("the certificate cannot be used as a CA: {reason}")]
    NotACa { reason: String },

    #[error("the CA certificate expired on {not_after}; import a CA that is still valid")]
    CaExpired { not_after: String },

    /// Key generation failed; with valid parameters this means the RNG or the platform failed.
    #[error("could not generate the key: {reason}")]
    KeyGeneration { reason: String },

    /// rcgen refused to build a CRL; our own checks run first, so this is unexpected.
    #[error("could not generate the certificate revocation list: {0}")]
    GenerateCrl(String),

    #[error("the operating system's random number generator failed")]
    Random,

    /// An AEAD operation failed while sealing; this does not happen with valid key and nonce sizes.
    #[error("encryption failed")]
    Encrypt,
}

/// Coarse classes, so the HTTP layer can pick a status in one place without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiErrorKind {
    /// The caller sent something we reject (400/422).
    InvalidInput,
    /// The caller sent too much (413).
    TooLarge,
    /// The operation would overwrite existing state (409).
    Conflict,
    /// Local configuration or environment problem: KEK file, disk, RNG (500/503, logged loudly).
    Internal,
}

impl PkiError {
    pub fn kind(&self) -> PkiErrorKind {
        match self {
            PkiError::TooLarge { .. } | PkiError::TooManyCertificates { .. } => {
                PkiErrorKind::TooLarge
            }
            PkiError::AlreadyExists { .. } => PkiErrorKind::Conflict,
            PkiError::InvalidKek { .. }
            | PkiError::WrongKek { .. }
            | PkiError::Unseal { .. }
            | PkiError::Io { .. }
            | PkiError::Random
            | PkiError::Encrypt
            | PkiError::KeyGeneration { .. }
            | PkiError::GenerateCrl(_) => PkiErrorKind::Internal,
            PkiError::NoCertificate
            | PkiError::NotPem { .. }
            | PkiError::UnexpectedBlock { .. }
            | PkiError::InvalidCertificate { .. }
            | PkiError::BrokenChain { .. }
            | PkiError::UnverifiableSignature { .. }
            | PkiError::NoPrivateKey
            | PkiError::EncryptedPrivateKey
            | PkiError::InvalidPrivateKey { .. }
            | PkiError::UnsupportedKey { .. }
            | PkiError::InvalidArgument(_)
            | PkiError::Generate(_)
            | PkiError::InvalidCsr { .. }
            | PkiError::CsrSignatureInvalid
            | PkiError::WeakSignatureAlgorithm { .. }
            | PkiError::UnsupportedSignatureAlgorithm { .. }
            | PkiError::UnacceptablePublicKey { .. }
            | PkiError::NotACa { .. }
            | PkiError::CaExpired { .. } => PkiErrorKind::InvalidInput,
        }
    }

    /// Only I/O and the RNG can succeed on a second try; everything else is decided by the input.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PkiError::Io { .. } | PkiError::Random)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PkiError::Io {
            path: path.into(),
            source,
        }
    }
}

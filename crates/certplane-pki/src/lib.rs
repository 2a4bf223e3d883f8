//! X.509 inspection, private-key sealing and cluster TLS material for certplane.
//!
//! ```text
//!  upload (chain PEM, key PEM) ──► inspect::parse_chain_pem ──► CertificateInfo (inventory fields)
//!                                  inspect::parse_private_key_pem ─► key_matches_certificate
//!                                                                 └► seal::seal(kek, der, fingerprint)
//!  operator: certplane tls ...  ──► cluster_tls (CA + node certificates for node-to-node mTLS)
//!  tests / benchmarks           ──► testing (fast realistic chains)
//! ```
//!
//! The crate stands alone (no `certplane-core` types): the server maps [`CertificateInfo`] and
//! [`PkiError`] into its domain and API types. Everything here is synchronous and CPU-bound; callers on an
//! async runtime should run large batches on a blocking thread.

pub mod cluster_tls;
mod error;
pub mod inspect;
mod pem_blocks;
pub mod seal;
pub mod testing;

pub use error::{PkiError, PkiErrorKind};
pub use inspect::{
    inspect_certificate_der, key_matches_certificate, parse_chain_pem, parse_private_key_pem,
    CertificateInfo, ParsedChain, PrivateKeyDer, PrivateKeyFormat,
};
pub use seal::{open, seal, Kek, SealedKey};

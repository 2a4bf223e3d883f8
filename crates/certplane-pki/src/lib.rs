//! X.509 inspection, private-key sealing and cluster TLS material for certplane.
//!
//! ```text
//!  upload (chain PEM, key PEM) ──► inspect::parse_chain_pem ──► CertificateInfo (inventory fields)
//!                                  inspect::parse_private_key_pem ─► key_matches_certificate
//!                                                                 └► seal::seal(kek, der, fingerprint)
//!  CSR PEM ──► csr::parse_csr ──► CsrInfo (verified self-signature, accepted key; names informational)
//!  KeySpec ──► keys::generate_key ──► GeneratedKey (PKCS#8 wiped on drop, SPKI, KeyFacts)
//!  built-in CA: ca::create_root_and_intermediate | ca::import_ca ──► CaCertificate
//!               ca::Signer::new ──► issue(LeafProfile) ──► IssuedCertificate;  crl(...) ──► CRL DER
//!  operator: certplane tls ...  ──► cluster_tls (CA + node certificates for node-to-node mTLS)
//!  tests / benchmarks           ──► testing (fast realistic chains)
//! ```
//!
//! The crate stands alone (no `certplane-core` types): the server maps [`CertificateInfo`] and
//! [`PkiError`] into its domain and API types. Everything here is synchronous and CPU-bound; callers on an
//! async runtime should run large batches on a blocking thread.

pub mod ca;
pub mod cluster_tls;
pub mod csr;
mod error;
pub mod inspect;
pub mod keys;
mod pem_blocks;
pub mod seal;
#[cfg(test)]
mod test_support;
pub mod testing;

pub use ca::{
    chain_pem, create_root_and_intermediate, crl_pem, import_ca, new_serial, CaCertificate,
    IssuedCertificate, LeafProfile, RevocationReason, RevokedEntry, Signer,
};
pub use csr::{parse_csr, parse_csr_der, CsrInfo};
pub use error::{PkiError, PkiErrorKind};
pub use inspect::{
    inspect_certificate_der, key_matches_certificate, parse_chain_pem, parse_private_key_pem,
    CertificateInfo, ParsedChain, PrivateKeyDer, PrivateKeyFormat,
};
pub use keys::{generate_key, key_facts_from_spki, GeneratedKey, KeyAlgorithm, KeyFacts, KeySpec};
pub use seal::{open, seal, Kek, SealedKey};

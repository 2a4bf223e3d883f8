//! Acceptance tests for the built-in CA. Issued certificates and CRLs are checked with x509-parser
//! field by field, and validated by rustls-webpki and (when installed) the `openssl` command line.

mod create;
mod crl;
mod csr_profile;
mod import;
mod issue;

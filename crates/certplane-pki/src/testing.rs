//! Realistic certificates for tests and benchmarks across the project. Not for production use.
//!
//! ```text
//!  TestCa::new()   root CA ──► intermediate CA      (made once: two key generations)
//!  ca.issue_leaf()                  └──► leaf        (per call: one P-256 key, one signature)
//! ```
//!
//! Reuse one [`TestCa`] to make thousands of distinct leaves quickly; every leaf has its own key,
//! serial and fingerprint. These helpers panic on failure (with a message), because their inputs are
//! written by test authors and a failure is a bug in the test.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use crate::cluster_tls::random_serial;
use crate::pem_blocks;

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A root and an intermediate CA that issue leaf certificates.
pub struct TestCa {
    intermediate: Issuer<'static, KeyPair>,
    root_pem: String,
    intermediate_pem: String,
}

/// One leaf with its full chain, all PEM.
#[derive(Debug, Clone)]
pub struct TestChain {
    pub leaf_pem: String,
    pub leaf_key_pem: String,
    pub intermediate_pem: String,
    pub root_pem: String,
    /// Leaf then intermediate, as a server would present it (the root is left out, as usual).
    pub chain_pem: String,
}

impl TestCa {
    /// # Panics
    /// If key generation or signing fails (never with ring on a supported platform).
    pub fn new() -> TestCa {
        let root_key = new_key();
        let mut root_params = ca_params("certplane test root CA");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root_cert = root_params
            .self_signed(&root_key)
            .expect("self-sign the test root CA");
        let root = Issuer::new(root_params, root_key);

        let intermediate_key = new_key();
        let mut intermediate_params = ca_params("certplane test intermediate CA");
        intermediate_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate_cert = intermediate_params
            .signed_by(&intermediate_key, &root)
            .expect("sign the test intermediate CA");

        TestCa {
            intermediate: Issuer::new(intermediate_params, intermediate_key),
            root_pem: pem_blocks::encode("CERTIFICATE", root_cert.der()),
            intermediate_pem: pem_blocks::encode("CERTIFICATE", intermediate_cert.der()),
        }
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Issue an ECDSA P-256 server certificate and return `(chain_pem, key_pem)`, where the chain is
    /// leaf then intermediate. `sans` entries that parse as IP addresses become IP SANs, the rest DNS
    /// SANs. Times are Unix epoch milliseconds (the certificate keeps whole seconds).
    ///
    /// # Panics
    /// If a SAN is not ASCII, a time is outside what X.509 can encode, or signing fails.
    pub fn issue_leaf(
        &self,
        cn: &str,
        sans: &[&str],
        not_before_ms: i64,
        not_after_ms: i64,
    ) -> (String, String) {
        let (leaf_pem, key_pem) = self.issue(cn, sans, not_before_ms, not_after_ms);
        (format!("{leaf_pem}{}", self.intermediate_pem), key_pem)
    }

    fn issue(
        &self,
        cn: &str,
        sans: &[&str],
        not_before_ms: i64,
        not_after_ms: i64,
    ) -> (String, String) {
        let key = new_key();
        let params = leaf_params(cn, sans, not_before_ms, not_after_ms);
        let cert = params
            .signed_by(&key, &self.intermediate)
            .expect("sign a test leaf certificate");
        (
            pem_blocks::encode("CERTIFICATE", cert.der()),
            pem_blocks::encode("PRIVATE KEY", key.serialized_der()),
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// A fresh root -> intermediate -> leaf chain. The leaf is valid from an hour ago for `days_valid`
/// days; a negative `days_valid` gives a certificate that expired that many days ago (valid for the
/// 90 days before that).
///
/// # Panics
/// As [`TestCa::issue_leaf`].
pub fn make_chain(cn: &str, sans: &[&str], days_valid: i64) -> TestChain {
    let ca = TestCa::new();
    let now = now_ms();
    let (not_before_ms, not_after_ms) = if days_valid >= 0 {
        (now - 60 * 60 * 1000, now + days_valid * DAY_MS)
    } else {
        let not_after = now + days_valid * DAY_MS;
        (not_after - 90 * DAY_MS, not_after)
    };
    let (leaf_pem, leaf_key_pem) = ca.issue(cn, sans, not_before_ms, not_after_ms);
    TestChain {
        chain_pem: format!("{leaf_pem}{}", ca.intermediate_pem),
        leaf_pem,
        leaf_key_pem,
        intermediate_pem: ca.intermediate_pem,
        root_pem: ca.root_pem,
    }
}

/// A self-signed ECDSA P-256 leaf (not a CA), returned as `(cert_pem, key_pem)`.
///
/// # Panics
/// As [`TestCa::issue_leaf`].
pub fn self_signed(
    cn: &str,
    sans: &[&str],
    not_before_ms: i64,
    not_after_ms: i64,
) -> (String, String) {
    let key = new_key();
    let cert = leaf_params(cn, sans, not_before_ms, not_after_ms)
        .self_signed(&key)
        .expect("self-sign a test certificate");
    (
        pem_blocks::encode("CERTIFICATE", cert.der()),
        pem_blocks::encode("PRIVATE KEY", key.serialized_der()),
    )
}

/// The current time in Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate an ECDSA P-256 test key")
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "certplane tests");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = now_ms();
    params.not_before = datetime_from_ms(now - DAY_MS);
    params.not_after = datetime_from_ms(now + 3650 * DAY_MS);
    params.serial_number = Some(random_serial().expect("random serial"));
    params
}

fn leaf_params(
    cn: &str,
    sans: &[&str],
    not_before_ms: i64,
    not_after_ms: i64,
) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("test SANs must be ASCII");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = datetime_from_ms(not_before_ms);
    params.not_after = datetime_from_ms(not_after_ms);
    params.serial_number = Some(random_serial().expect("random serial"));
    params
}

fn datetime_from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).expect("time within X.509's range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::parse_chain_pem;

    #[test]
    fn a_shared_ca_issues_distinct_valid_leaves() {
        let ca = TestCa::new();
        let now = now_ms();
        let (a, _) = ca.issue_leaf("a.example.test", &["a.example.test"], now, now + DAY_MS);
        let (b, _) = ca.issue_leaf("b.example.test", &["b.example.test"], now, now + DAY_MS);
        let a = parse_chain_pem(&a).expect("chain a");
        let b = parse_chain_pem(&b).expect("chain b");
        assert_ne!(a.leaf.fingerprint_sha256, b.leaf.fingerprint_sha256);
        assert_ne!(a.leaf.serial, b.leaf.serial);
        assert_eq!(a.certificate_count, 2);
        let full = format!("{}{}", a.chain_pem, ca.root_pem());
        assert_eq!(
            parse_chain_pem(&full)
                .expect("full chain")
                .certificate_count,
            3
        );
    }

    #[test]
    fn make_chain_parts_fit_together() {
        let chain = make_chain("www.example.test", &["www.example.test", "10.0.0.1"], 30);
        let full = format!(
            "{}{}{}",
            chain.leaf_pem, chain.intermediate_pem, chain.root_pem
        );
        let parsed = parse_chain_pem(&full).expect("root, intermediate and leaf chain");
        assert_eq!(parsed.leaf.sans, vec!["www.example.test", "10.0.0.1"]);
        assert!(parsed.leaf.not_after_ms > now_ms() + 29 * DAY_MS);
        assert_eq!(
            parse_chain_pem(&chain.chain_pem)
                .expect("chain")
                .certificate_count,
            2
        );
    }

    #[test]
    fn self_signed_is_reported_as_self_signed() {
        let now = now_ms();
        let (cert, _) = self_signed("self.example.test", &[], now, now + DAY_MS);
        let parsed = parse_chain_pem(&cert).expect("self-signed cert");
        assert!(parsed.leaf.self_signed);
        assert!(!parsed.leaf.is_ca);
        assert_eq!(parsed.leaf.not_before_ms, now.div_euclid(1000) * 1000);
    }
}

//! CSR acceptance and refusal. Every input is a committed fixture (see `testdata/README.md`) or
//! derived from one in the test, so these tests need no OpenSSL.

use std::net::IpAddr;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};

use super::*;
use crate::keys::KeyAlgorithm;
use crate::PkiErrorKind;

const P256: &str = include_str!("testdata/csr/ec-p256.csr");
const P384: &str = include_str!("testdata/csr/ec-p384.csr");
const ED25519: &str = include_str!("testdata/csr/ed25519.csr");
const RSA2048: &str = include_str!("testdata/csr/rsa2048.csr");
const RSA_PSS: &str = include_str!("testdata/csr/rsa2048-pss-sha256.csr");
const REQUESTS_CA: &str = include_str!("testdata/csr/requests-ca.csr");
const EXTRA_SANS: &str = include_str!("testdata/csr/extra-sans.csr");
const RSA1024: &str = include_str!("testdata/csr/rsa1024.csr");
const P192: &str = include_str!("testdata/csr/ec-p192.csr");
const SECP256K1: &str = include_str!("testdata/csr/ec-secp256k1.csr");
const P521: &str = include_str!("testdata/csr/ec-p521.csr");
const DSA: &str = include_str!("testdata/csr/dsa2048.csr");
const RSA_SHA1: &str = include_str!("testdata/csr/rsa2048-sha1.csr");
const RSA_MD5: &str = include_str!("testdata/csr/rsa2048-md5.csr");
const ECDSA_SHA1: &str = include_str!("testdata/csr/ec-p256-sha1.csr");
const ECDSA_SHA512: &str = include_str!("testdata/csr/ec-p256-sha512.csr");

fn der_of(pem: &str) -> Vec<u8> {
    ::pem::parse(pem).expect("fixture PEM").into_contents()
}

fn csr_pem(der: &[u8]) -> String {
    crate::pem_blocks::encode("CERTIFICATE REQUEST", der)
}

fn refused(input: &str) -> PkiError {
    let e = parse_csr(input).expect_err("the CSR must be refused");
    assert_eq!(e.kind(), PkiErrorKind::InvalidInput, "{e:?}");
    e
}

#[test]
fn a_p256_csr_reports_its_names_key_and_algorithm() {
    let info = parse_csr(P256).expect("valid CSR");
    assert_eq!(info.common_name.as_deref(), Some("app.example.test"));
    assert!(
        info.subject.contains("CN=app.example.test"),
        "{}",
        info.subject
    );
    assert!(
        info.subject.contains("O=certplane tests"),
        "{}",
        info.subject
    );
    assert_eq!(info.dns_names, vec!["app.example.test", "www.example.test"]);
    assert_eq!(
        info.ip_addresses,
        vec![
            "192.0.2.10".parse::<IpAddr>().expect("ip"),
            "2001:db8::10".parse::<IpAddr>().expect("ip")
        ]
    );
    assert!(info.other_names.is_empty());
    assert_eq!(info.requested_extensions, vec!["subjectAltName"]);
    assert!(!info.requests_ca);
    assert_eq!(info.key.algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(info.key.bits, 256);
    assert_eq!(info.signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(
        crate::keys::key_facts_from_spki(&info.spki_der).expect("spki"),
        info.key
    );
}

#[test]
fn every_accepted_key_and_signature_type_parses() {
    let cases = [
        (P384, KeyAlgorithm::EcdsaP384, 384, "ecdsa-with-SHA384"),
        (ED25519, KeyAlgorithm::Ed25519, 256, "Ed25519"),
        (RSA2048, KeyAlgorithm::Rsa, 2048, "sha256WithRSAEncryption"),
        (RSA_PSS, KeyAlgorithm::Rsa, 2048, "rsassaPss with SHA-256"),
    ];
    for (pem, algorithm, bits, signature) in cases {
        let info = parse_csr(pem).unwrap_or_else(|e| panic!("{signature}: {e}"));
        assert_eq!(info.key.algorithm, algorithm);
        assert_eq!(info.key.bits, bits);
        assert_eq!(info.signature_algorithm, signature);
    }
}

#[test]
fn a_csr_made_by_rcgen_is_accepted_too() {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(vec!["rcgen.example.test".to_string()]).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rcgen.example.test");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).expect("CSR");
    let info = parse_csr_der(csr.der()).expect("rcgen CSR");
    assert_eq!(info.dns_names, vec!["rcgen.example.test"]);
    assert_eq!(info.spki_der, key.subject_public_key_info());
}

#[test]
fn a_csr_asking_to_be_a_ca_is_parsed_and_flagged() {
    let info = parse_csr(REQUESTS_CA).expect("parsing is fine; issuing ignores the wish");
    assert!(info.requests_ca);
    for name in ["basicConstraints", "keyUsage", "subjectAltName"] {
        assert!(
            info.requested_extensions.iter().any(|e| e == name),
            "{name} in {:?}",
            info.requested_extensions
        );
    }
}

#[test]
fn extra_requested_names_are_reported_by_type() {
    let info = parse_csr(EXTRA_SANS).expect("valid CSR");
    assert_eq!(
        info.dns_names,
        vec!["app.example.test", "bank.example.com", "*.example.org"]
    );
    assert_eq!(
        info.ip_addresses,
        vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(
        info.other_names,
        vec!["email:admin@example.com", "uri:https://evil.example/"]
    );
    assert!(info
        .requested_extensions
        .iter()
        .any(|e| e == "extendedKeyUsage"));
    assert!(!info.requests_ca);
}

#[test]
fn the_older_new_certificate_request_label_is_accepted() {
    let relabelled = P256.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
    assert!(relabelled.contains("BEGIN NEW CERTIFICATE REQUEST"));
    assert_eq!(
        parse_csr(&relabelled).expect("old label"),
        parse_csr(P256).expect("new label")
    );
}

#[test]
fn text_around_the_block_is_ignored() {
    let wrapped = format!("Here is my CSR:\n\n{P256}\nthanks\n");
    assert!(parse_csr(&wrapped).is_ok());
}

#[test]
fn weak_keys_are_refused_naming_the_problem() {
    let cases = [
        (
            RSA1024,
            "RSA keys must have at least 2048 bits; this one has 1024",
        ),
        (P192, "P-192 (prime192v1)"),
        (SECP256K1, "secp256k1"),
        (P521, "P-521"),
        (DSA, "DSA keys are not accepted"),
    ];
    for (pem, expected) in cases {
        let e = refused(pem);
        assert!(
            matches!(e, PkiError::UnacceptablePublicKey { .. }),
            "{expected}: {e:?}"
        );
        assert!(e.to_string().contains(expected), "{e}");
    }
}

#[test]
fn md5_and_sha1_signatures_are_refused_naming_the_algorithm() {
    let cases = [
        (RSA_SHA1, "sha1WithRSAEncryption"),
        (RSA_MD5, "md5WithRSAEncryption"),
        (ECDSA_SHA1, "ecdsa-with-SHA1"),
    ];
    for (pem, algorithm) in cases {
        match refused(pem) {
            e @ PkiError::WeakSignatureAlgorithm { .. } => {
                let message = e.to_string();
                assert!(message.contains(algorithm), "{message}");
                assert!(message.contains("SHA-256"), "{message}");
            }
            other => panic!("{algorithm}: expected WeakSignatureAlgorithm, got {other:?}"),
        }
    }
}

#[test]
fn signature_algorithms_ring_cannot_verify_are_refused() {
    match refused(ECDSA_SHA512) {
        PkiError::UnsupportedSignatureAlgorithm { algorithm } => {
            assert_eq!(algorithm, "ecdsa-with-SHA512");
        }
        other => panic!("expected UnsupportedSignatureAlgorithm, got {other:?}"),
    }
}

#[test]
fn a_flipped_signature_byte_is_refused() {
    let mut der = der_of(P256);
    // The signature BIT STRING is the last element; its last byte is part of the ECDSA `s` value.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    assert!(matches!(
        refused(&csr_pem(&der)),
        PkiError::CsrSignatureInvalid
    ));
    // Same for RSA, where every signature byte matters.
    let mut der = der_of(RSA2048);
    let last = der.len() - 1;
    der[last] ^= 0x80;
    assert!(matches!(
        refused(&csr_pem(&der)),
        PkiError::CsrSignatureInvalid
    ));
}

#[test]
fn an_edited_request_body_is_refused() {
    // Change one letter of the requested SAN: the DER stays well-formed, the signature no longer
    // covers what is written.
    let mut der = der_of(P256);
    let needle = b"www.example.test";
    let at = der
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the SAN is in the DER");
    der[at] = b'x';
    let e = refused(&csr_pem(&der));
    assert!(matches!(e, PkiError::CsrSignatureInvalid), "{e:?}");
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[test]
fn garbage_is_refused_without_panicking() {
    let inputs = [
        String::new(),
        "   \n".to_string(),
        "just some text".to_string(),
        "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"
            .to_string(),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .to_string(),
        csr_pem(b"\x30\x03\x02\x01\x00"),
        csr_pem(&der_of(P256)[..100]),
        csr_pem(&[0x30, 0x82, 0xff, 0xff, 0x00]),
        csr_pem(&(0..=255).collect::<Vec<u8>>()),
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n".to_string(),
    ];
    for input in &inputs {
        let e = refused(input);
        assert!(matches!(e, PkiError::InvalidCsr { .. }), "{input:?}: {e:?}");
        assert!(e
            .to_string()
            .starts_with("the certificate request (CSR) is not valid"));
    }
}

#[test]
fn trailing_bytes_after_the_request_are_refused() {
    let mut der = der_of(P256);
    der.extend_from_slice(&[0, 0]);
    let e = refused(&csr_pem(&der));
    assert!(e.to_string().contains("2 unexpected bytes"), "{e}");
}

#[test]
fn the_wrong_kind_of_pem_block_gets_a_pointed_message() {
    let (cert, key) = crate::testing::self_signed("x.example.test", &[], 0, 86_400_000);
    let e = refused(&cert);
    assert!(
        e.to_string()
            .contains("is a CERTIFICATE, not a certificate request"),
        "{e}"
    );
    let e = refused(&key);
    assert!(e.to_string().contains("never send a private key"), "{e}");
    let e = refused(&format!("{P256}{P384}"));
    assert!(e.to_string().contains("2 PEM blocks"), "{e}");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let huge = format!("{P256}{}", " ".repeat(MAX_CSR_BYTES));
    assert!(matches!(parse_csr(&huge), Err(PkiError::TooLarge { .. })));
    assert!(matches!(
        parse_csr_der(&vec![0u8; MAX_CSR_BYTES + 1]),
        Err(PkiError::TooLarge { .. })
    ));
}

#[test]
fn der_and_pem_entry_points_agree() {
    for pem in [P256, P384, ED25519, RSA2048, REQUESTS_CA, EXTRA_SANS] {
        assert_eq!(
            parse_csr(pem).expect("pem"),
            parse_csr_der(&der_of(pem)).expect("der")
        );
    }
}

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType, SerialNumber};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::fields::{serial_hex, unsigned_bits};
use super::*;
use crate::testing::{self, now_ms, TestCa, DAY_MS};
use crate::PkiErrorKind;

const RSA_CERT: &str = include_str!("../testdata/rsa2048.pem");
const P521_CA: &str = include_str!("../testdata/ec-p521-ca.pem");
const LEAF_SIGNED_BY_P521: &str = include_str!("../testdata/ec-p256-signed-by-p521.pem");

fn leaf_and_key() -> (String, String) {
    let now = now_ms();
    testing::self_signed(
        "leaf.example.test",
        &["leaf.example.test"],
        now,
        now + DAY_MS,
    )
}

fn err(input: &str) -> PkiError {
    parse_chain_pem(input).expect_err("input must be rejected")
}

#[test]
fn empty_and_blank_input_have_no_certificate() {
    for input in ["", "   \n\t\n"] {
        assert!(matches!(err(input), PkiError::NoCertificate), "{input:?}");
    }
    assert_eq!(
        err("").to_string(),
        "no certificate found: expected one or more -----BEGIN CERTIFICATE----- blocks"
    );
}

#[test]
fn text_without_pem_blocks_has_no_certificate() {
    assert!(matches!(
        err("MIIB this is just some text a user pasted"),
        PkiError::NoCertificate
    ));
}

#[test]
fn broken_base64_names_the_block() {
    let (leaf, _) = leaf_and_key();
    let input =
        format!("{leaf}-----BEGIN CERTIFICATE-----\n!!!not*base64\n-----END CERTIFICATE-----\n");
    let e = err(&input);
    assert!(matches!(e, PkiError::NotPem { index: 2, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("certificate 2 in the chain is not valid PEM"),
        "{e}"
    );
}

#[test]
fn missing_end_line_is_not_pem() {
    let (leaf, _) = leaf_and_key();
    let truncated = &leaf[..leaf.find("-----END").expect("END line")];
    let e = err(truncated);
    assert!(matches!(e, PkiError::NotPem { index: 1, .. }), "{e:?}");
    assert!(e.to_string().contains("no matching -----END"), "{e}");
}

#[test]
fn mismatched_labels_are_not_pem() {
    let e = err("-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert!(matches!(e, PkiError::NotPem { index: 1, .. }), "{e:?}");
}

#[test]
fn garbage_der_is_not_a_certificate() {
    let input = pem_blocks::encode("CERTIFICATE", b"definitely not DER");
    let e = err(&input);
    assert!(
        matches!(e, PkiError::InvalidCertificate { index: 1, .. }),
        "{e:?}"
    );
    assert!(e
        .to_string()
        .starts_with("certificate 1 in the chain is not a valid X.509"));
}

#[test]
fn truncated_and_padded_der_are_rejected() {
    let (leaf, _) = leaf_and_key();
    let der = pem::parse(&leaf).expect("leaf pem").into_contents();
    let truncated = pem_blocks::encode("CERTIFICATE", &der[..der.len() - 10]);
    assert!(matches!(
        err(&truncated),
        PkiError::InvalidCertificate { index: 1, .. }
    ));
    let padded = pem_blocks::encode("CERTIFICATE", &[der.as_slice(), &[0, 0, 0]].concat());
    let e = err(&padded);
    assert!(e.to_string().contains("3 unexpected bytes"), "{e}");
}

#[test]
fn private_key_inside_the_chain_is_refused_with_a_hint() {
    let (leaf, key) = leaf_and_key();
    let e = err(&format!("{leaf}{key}"));
    match &e {
        PkiError::UnexpectedBlock { index, label, .. } => {
            assert_eq!(*index, 2);
            assert_eq!(label, "PRIVATE KEY");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "block 2 in the chain is a PRIVATE KEY, not a CERTIFICATE; send the private key in its own \
         field, never inside the chain"
    );
    assert_eq!(e.kind(), PkiErrorKind::InvalidInput);
}

#[test]
fn leaf_followed_by_an_unrelated_ca_is_a_broken_chain() {
    let chain = testing::make_chain("shop.example.test", &["shop.example.test"], 30);
    let unrelated = TestCa::new();
    // Same subject names as the real intermediate, different key: only the signature check catches it.
    let same_name = format!("{}{}", chain.leaf_pem, unrelated.intermediate_pem());
    let e = err(&same_name);
    assert!(
        matches!(
            e,
            PkiError::BrokenChain {
                child: 1,
                parent: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("signature does not verify"), "{e}");

    // A CA with another name: the issuer check catches it first.
    let now = now_ms();
    let (other_root, _) = testing::self_signed("Other Root", &[], now, now + DAY_MS);
    let e = err(&format!("{}{other_root}", chain.leaf_pem));
    assert!(
        e.to_string()
            .starts_with("the chain is broken: certificate 1 is not signed by certificate 2"),
        "{e}"
    );
}

#[test]
fn reversed_order_is_a_broken_chain() {
    let chain = testing::make_chain("rev.example.test", &[], 30);
    let e = err(&format!("{}{}", chain.intermediate_pem, chain.leaf_pem));
    assert!(
        matches!(
            e,
            PkiError::BrokenChain {
                child: 1,
                parent: 2,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_link_signed_with_an_algorithm_ring_lacks_is_reported_as_such() {
    let e = err(&format!("{LEAF_SIGNED_BY_P521}{P521_CA}"));
    match &e {
        PkiError::UnverifiableSignature { index, algorithm } => {
            assert_eq!(*index, 1);
            assert_eq!(algorithm, "ecdsa-with-SHA512");
        }
        other => panic!("unexpected error {other:?}"),
    }
    // Alone, the P-521 CA still parses: nothing needs verifying.
    let ca = parse_chain_pem(P521_CA).expect("P-521 CA");
    assert_eq!(
        (ca.leaf.key_algorithm.as_str(), ca.leaf.key_bits),
        ("EC", 521)
    );
    assert!(ca.leaf.self_signed);
}

#[test]
fn expired_certificates_still_parse() {
    let chain = testing::make_chain("old.example.test", &["old.example.test"], -30);
    let parsed = parse_chain_pem(&chain.chain_pem).expect("expired chain parses");
    assert!(parsed.leaf.not_after_ms < now_ms() - 29 * DAY_MS);
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let (leaf, _) = leaf_and_key();
    let input = format!("{leaf}{}", " ".repeat(MAX_CHAIN_PEM_BYTES));
    let e = err(&input);
    assert!(
        matches!(
            e,
            PkiError::TooLarge {
                limit: MAX_CHAIN_PEM_BYTES,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), PkiErrorKind::TooLarge);
}

#[test]
fn more_than_ten_certificates_are_rejected() {
    let (leaf, _) = leaf_and_key();
    let e = err(&leaf.repeat(MAX_CHAIN_CERTIFICATES + 1));
    assert!(
        matches!(
            e,
            PkiError::TooManyCertificates {
                count: 11,
                limit: 10
            }
        ),
        "{e:?}"
    );
}

#[test]
fn full_chain_with_openssl_noise_is_normalised() {
    let chain = testing::make_chain("www.example.test", &["www.example.test"], 90);
    let noisy = format!(
        "subject=CN = www.example.test\r\n{}\r\nissuer=...\r\n{}\n\n{}",
        chain.leaf_pem.replace('\n', "\r\n"),
        chain.intermediate_pem,
        chain.root_pem
    );
    let parsed = parse_chain_pem(&noisy).expect("noisy chain");
    assert_eq!(parsed.certificate_count, 3);
    let clean = format!(
        "{}{}{}",
        chain.leaf_pem, chain.intermediate_pem, chain.root_pem
    );
    assert_eq!(parsed.chain_pem, clean);
    let again = parse_chain_pem(&parsed.chain_pem).expect("normalised chain parses");
    assert_eq!(again, parsed);
    assert_eq!(
        parsed.leaf.fingerprint_sha256,
        hex::encode(Sha256::digest(&parsed.leaf_der))
    );
}

fn self_signed_with(
    algorithm: &'static rcgen::SignatureAlgorithm,
    params: &CertificateParams,
) -> String {
    let key = KeyPair::generate_for(algorithm).expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    pem_blocks::encode("CERTIFICATE", cert.der())
}

#[test]
fn fields_are_extracted() {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Example Org");
    dn.push(DnType::CommonName, "api.example.test");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::DnsName("api.example.test".try_into().expect("dns")),
        SanType::DnsName("*.api.example.test".try_into().expect("dns")),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        SanType::Rfc822Name("ops@example.test".try_into().expect("email")),
        SanType::URI("spiffe://example.test/api".try_into().expect("uri")),
    ];
    // The high bit forces a sign-padding zero byte in DER, which must not appear in the text form.
    params.serial_number = Some(SerialNumber::from_slice(&[0x80, 0x01, 0xab]));
    params.not_before = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    params.not_after = OffsetDateTime::from_unix_timestamp(1_731_536_000).expect("time");
    params.is_ca = IsCa::ExplicitNoCa;
    let pem = self_signed_with(&rcgen::PKCS_ECDSA_P256_SHA256, &params);

    let info = parse_chain_pem(&pem).expect("cert").leaf;
    assert_eq!(info.common_name.as_deref(), Some("api.example.test"));
    assert_eq!(info.subject, "O=Example Org, CN=api.example.test");
    assert_eq!(info.issuer, info.subject);
    assert_eq!(
        info.sans,
        vec![
            "api.example.test",
            "*.api.example.test",
            "192.0.2.7",
            "::1",
            "email:ops@example.test",
            "uri:spiffe://example.test/api",
        ]
    );
    assert_eq!(info.serial, "8001ab");
    assert_eq!(info.not_before_ms, 1_700_000_000_000);
    assert_eq!(info.not_after_ms, 1_731_536_000_000);
    assert_eq!((info.key_algorithm.as_str(), info.key_bits), ("EC", 256));
    assert_eq!(info.signature_algorithm, "ecdsa-with-SHA256");
    assert!(!info.is_ca);
    assert!(info.self_signed);
    assert_eq!(info.fingerprint_sha256.len(), 64);
    assert!(info
        .fingerprint_sha256
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[test]
fn key_types_and_signature_names() {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cases = [
        (
            &rcgen::PKCS_ECDSA_P384_SHA384,
            "EC",
            384,
            "ecdsa-with-SHA384",
        ),
        (&rcgen::PKCS_ED25519, "Ed25519", 256, "Ed25519"),
    ];
    for (algorithm, key_algorithm, bits, signature) in cases {
        let info = parse_chain_pem(&self_signed_with(algorithm, &params))
            .expect("cert")
            .leaf;
        assert_eq!(info.key_algorithm, key_algorithm);
        assert_eq!(info.key_bits, bits);
        assert_eq!(info.signature_algorithm, signature);
        assert!(info.is_ca);
        assert!(info.self_signed);
        assert_eq!(info.common_name.as_deref(), Some("rcgen self signed cert"));
    }
}

#[test]
fn rsa_fixture_from_openssl() {
    let info = parse_chain_pem(RSA_CERT).expect("rsa cert").leaf;
    assert_eq!((info.key_algorithm.as_str(), info.key_bits), ("RSA", 2048));
    assert_eq!(info.signature_algorithm, "sha256WithRSAEncryption");
    assert_eq!(info.serial, "6af2b29257791f499752ba9071a9da128dd1ee02");
    assert_eq!(
        info.fingerprint_sha256,
        "2a20c173292963a33d2e01346cad193fdeaac4e1c5e9ce080d1e923bf620b159"
    );
    assert_eq!(info.subject, "CN=rsa.example.test, O=certplane tests");
    assert_eq!(info.sans, vec!["rsa.example.test"]);
    assert!(info.self_signed);
}

#[test]
fn inspect_certificate_der_matches_the_chain_parser() {
    let chain = testing::make_chain("der.example.test", &["der.example.test"], 10);
    let parsed = parse_chain_pem(&chain.chain_pem).expect("chain");
    let info = inspect_certificate_der(&parsed.leaf_der).expect("der");
    assert_eq!(info, parsed.leaf);
    assert!(!info.self_signed);
    assert_eq!(
        info.issuer,
        "O=certplane tests, CN=certplane test intermediate CA"
    );
    assert!(matches!(
        inspect_certificate_der(b"junk"),
        Err(PkiError::InvalidCertificate { index: 1, .. })
    ));
}

#[test]
fn serial_and_bit_helpers() {
    assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
    assert_eq!(serial_hex(&[0x0a]), "0a");
    assert_eq!(serial_hex(&[0x00]), "00");
    assert_eq!(unsigned_bits(&[0x00, 0x80, 0x00]), 16);
    assert_eq!(unsigned_bits(&[0x01, 0x00]), 9);
    assert_eq!(unsigned_bits(&[0x00]), 0);
}

#[test]
fn certificate_info_serialises_to_json() {
    let chain = testing::make_chain("json.example.test", &["json.example.test"], 10);
    let info = parse_chain_pem(&chain.chain_pem).expect("chain").leaf;
    let json = serde_json::to_string(&info).expect("serialise");
    let back: CertificateInfo = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, info);
}

use std::net::IpAddr;

use crate::ca::*;
use crate::inspect::inspect_certificate_der;
use crate::keys::{KeyAlgorithm, KeySpec};
use crate::test_support::{
    authority_key_identifier, ca_pair, expected_signature_oid, key, leaf_facts, openssl_available,
    openssl_verify, parse_cert, profile, subject_key_identifier, webpki_verify, ALL_KEY_SPECS,
    CA_SPECS,
};
use crate::testing::{now_ms, DAY_MS};
use crate::PkiError;

const SAN_OID: &str = "2.5.29.17";
const KEY_USAGE_OID: &str = "2.5.29.15";
const EKU_OID: &str = "2.5.29.37";
const SKI_OID: &str = "2.5.29.14";
const AKI_OID: &str = "2.5.29.35";
const BASIC_CONSTRAINTS_OID: &str = "2.5.29.19";

fn ips() -> Vec<IpAddr> {
    vec![
        "192.0.2.7".parse().expect("ip"),
        "2001:db8::7".parse().expect("ip"),
    ]
}

/// Every CA key type issues for every leaf key type, and each certificate carries exactly the
/// profile, validates with rustls-webpki for its DNS name, and passes `openssl verify -x509_strict`.
#[test]
fn every_ca_key_issues_the_exact_profile_for_every_leaf_key() {
    let openssl = openssl_available("every_ca_key_issues_the_exact_profile_for_every_leaf_key");
    let dir = tempfile::tempdir().expect("tempdir");
    for ca_spec in CA_SPECS {
        let (root, intermediate) = ca_pair(ca_spec);
        let signer = Signer::new(intermediate).expect("signer");
        assert_eq!(signer.algorithm(), ca_spec.facts().algorithm);
        let intermediate_cert = parse_cert(&intermediate.cert_der);
        for leaf_spec in ALL_KEY_SPECS {
            let case = format!("CA {ca_spec:?}, leaf {leaf_spec:?}");
            let leaf_key = key(leaf_spec);
            let dns = ["svc.example.test", "*.svc.example.test"];
            let profile = profile(&leaf_key.spki_der, &dns, &ips());
            let issued = signer
                .issue(&profile)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let cert = parse_cert(&issued.cert_der);

            // Identity: serial, validity, subject, issuer, key, signature algorithm.
            assert_eq!(
                strip_zeros(cert.raw_serial()),
                strip_zeros(&profile.serial),
                "{case}"
            );
            assert_eq!(issued.serial_hex, hex::encode(strip_zeros(&profile.serial)));
            let validity = cert.validity();
            assert_eq!(
                validity.not_before.timestamp() * 1000,
                profile.not_before_ms
            );
            assert_eq!(validity.not_after.timestamp() * 1000, profile.not_after_ms);
            assert_eq!(cert.subject().to_string(), "CN=svc.example.test", "{case}");
            assert_eq!(cert.issuer().as_raw(), intermediate_cert.subject().as_raw());
            assert_eq!(cert.public_key().raw, &leaf_key.spki_der[..], "{case}");
            assert_eq!(
                cert.signature_algorithm.algorithm.to_id_string(),
                expected_signature_oid(ca_spec.facts().algorithm),
                "{case}"
            );
            assert_eq!(cert.version().0, 2, "X.509 v3");

            // Extensions: exactly the profile's, nothing else.
            let facts = leaf_facts(&cert);
            assert_eq!(facts.dns_names, dns, "{case}");
            assert_eq!(facts.ip_addresses, ips(), "{case}");
            assert_eq!(facts.other_names, 0);
            assert!(!facts.is_ca && facts.basic_constraints_critical, "{case}");
            assert!(facts.digital_signature && !facts.key_cert_sign && !facts.crl_sign);
            assert_eq!(
                facts.key_encipherment,
                leaf_spec.facts().algorithm == KeyAlgorithm::Rsa,
                "{case}: keyEncipherment only for RSA keys"
            );
            assert!(facts.server_auth && facts.client_auth && facts.other_ekus == 0);
            let mut oids = facts.extension_oids.clone();
            oids.sort();
            let mut expected = vec![
                AKI_OID,
                SAN_OID,
                KEY_USAGE_OID,
                EKU_OID,
                SKI_OID,
                BASIC_CONSTRAINTS_OID,
            ];
            expected.sort();
            assert_eq!(oids, expected, "{case}");
            assert_eq!(
                authority_key_identifier(&cert),
                subject_key_identifier(&intermediate_cert),
                "{case}"
            );
            assert!(subject_key_identifier(&cert).is_some());
            cert.verify_signature(Some(intermediate_cert.public_key()))
                .unwrap_or_else(|e| panic!("{case}: {e}"));

            // The inventory reads the same serial the signer reported.
            let info = inspect_certificate_der(&issued.cert_der).expect("inspect");
            assert_eq!(info.serial, issued.serial_hex);
            assert!(!info.is_ca);

            // Independent validators.
            webpki_verify(
                &root.cert_der,
                &[&intermediate.cert_der],
                &issued.cert_der,
                now_ms(),
                Some("svc.example.test"),
                &[],
            )
            .unwrap_or_else(|e| panic!("{case}: webpki: {e:?}"));
            webpki_verify(
                &root.cert_der,
                &[&intermediate.cert_der],
                &issued.cert_der,
                now_ms(),
                Some("a.svc.example.test"),
                &[],
            )
            .unwrap_or_else(|e| panic!("{case}: webpki wildcard: {e:?}"));
            if openssl {
                openssl_verify(
                    dir.path(),
                    &root.cert_pem,
                    &intermediate.cert_pem,
                    &issued.cert_pem,
                    now_ms(),
                )
                .unwrap_or_else(|out| panic!("{case}: openssl verify: {out}"));
            }
        }
    }
}

fn strip_zeros(serial: &[u8]) -> &[u8] {
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    &serial[first..]
}

#[test]
fn the_validators_really_check_name_time_and_issuer() {
    let (root, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let (other_root, _) = ca_pair(KeySpec::EcdsaP384);
    let signer = Signer::new(intermediate).expect("signer");
    let p = profile(
        &key(KeySpec::EcdsaP256).spki_der,
        &["only.example.test"],
        &[],
    );
    let issued = signer.issue(&p).expect("issue");
    let verify = |root_der: &[u8], at_ms: i64, name: &str| {
        webpki_verify(
            root_der,
            &[&intermediate.cert_der],
            &issued.cert_der,
            at_ms,
            Some(name),
            &[],
        )
    };
    verify(&root.cert_der, now_ms(), "only.example.test").expect("valid");
    assert!(matches!(
        verify(&root.cert_der, now_ms(), "other.example.test"),
        Err(webpki::Error::CertNotValidForName(_))
    ));
    assert!(matches!(
        verify(&root.cert_der, p.not_after_ms + 1000, "only.example.test"),
        Err(webpki::Error::CertExpired { .. })
    ));
    assert!(matches!(
        verify(&root.cert_der, p.not_before_ms - 1000, "only.example.test"),
        Err(webpki::Error::CertNotValidYet { .. })
    ));
    assert!(matches!(
        verify(&other_root.cert_der, now_ms(), "only.example.test"),
        Err(webpki::Error::UnknownIssuer)
    ));
}

#[test]
fn root_can_issue_directly_and_ip_only_certificates_work() {
    let (root, _) = ca_pair(KeySpec::Ed25519);
    let signer = Signer::new(root).expect("root signer");
    let mut p = profile(&key(KeySpec::EcdsaP384).spki_der, &[], &ips());
    p.common_name = None;
    let issued = signer.issue(&p).expect("issue");
    let cert = parse_cert(&issued.cert_der);
    assert_eq!(cert.subject().as_raw(), &[0x30, 0x00], "empty subject");
    let san = cert
        .subject_alternative_name()
        .expect("valid")
        .expect("SAN present");
    assert!(
        san.critical,
        "RFC 5280: SAN is critical when the subject is empty"
    );
    webpki_verify(
        &root.cert_der,
        &[],
        &issued.cert_der,
        now_ms(),
        Some("192.0.2.7"),
        &[],
    )
    .expect("IP SAN validates");
    webpki_verify(
        &root.cert_der,
        &[],
        &issued.cert_der,
        now_ms(),
        Some("2001:db8::7"),
        &[],
    )
    .expect("IPv6 SAN validates");
}

/// Times and serials come from the caller and nothing reads the clock: with a deterministic
/// signature scheme (Ed25519, RSA PKCS#1 v1.5) the same profile gives the same bytes.
#[test]
fn the_same_profile_signs_to_the_same_certificate() {
    for spec in [KeySpec::Ed25519, KeySpec::Rsa { bits: 2048 }] {
        let (_, intermediate) = ca_pair(spec);
        let p = LeafProfile {
            serial: [0x11; 16],
            common_name: Some("fixed.example.test".to_string()),
            dns_names: vec!["fixed.example.test".to_string()],
            ip_addresses: vec![],
            not_before_ms: 1_700_000_000_000,
            not_after_ms: 1_700_000_000_000 + 90 * DAY_MS,
            spki_der: key(KeySpec::EcdsaP256).spki_der.clone(),
        };
        let first = Signer::new(intermediate)
            .expect("signer")
            .issue(&p)
            .expect("issue");
        let second = Signer::new(intermediate)
            .expect("signer")
            .issue(&p)
            .expect("issue");
        assert_eq!(first, second, "{spec:?}");
    }
}

/// Serials are 16 random bytes; when the first is zero the DER INTEGER is shorter, and when the
/// first significant byte is 0x80 or more it gains a sign byte. The reported hex always matches
/// what the inventory reads from the certificate.
#[test]
fn serial_hex_matches_the_inventory_for_every_leading_byte_shape() {
    let (_, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let signer = Signer::new(intermediate).expect("signer");
    let base = profile(
        &key(KeySpec::EcdsaP256).spki_der,
        &["serial.example.test"],
        &[],
    );
    let mut shapes = [[0x5a; 16], [0x5a; 16], [0x5a; 16], [0x5a; 16]];
    shapes[1][0] = 0x00; // shorter integer
    shapes[2][..2].copy_from_slice(&[0x00, 0xf1]); // shorter, then a sign byte
    shapes[3][0] = 0x80; // top bit set by a caller: still encoded as a positive integer
    let expected = [
        "5a".repeat(16),
        "5a".repeat(15),
        format!("f1{}", "5a".repeat(14)),
        format!("80{}", "5a".repeat(15)),
    ];
    for (serial, expected) in shapes.into_iter().zip(expected) {
        let issued = signer
            .issue(&LeafProfile {
                serial,
                ..base.clone()
            })
            .expect("issue");
        assert_eq!(issued.serial_hex, expected);
        let info = inspect_certificate_der(&issued.cert_der).expect("inspect");
        assert_eq!(info.serial, issued.serial_hex);
        let raw = parse_cert(&issued.cert_der).raw_serial().to_vec();
        assert!(raw[0] < 0x80, "DER serial is positive: {raw:02x?}");
    }
}

#[test]
fn validity_is_rounded_down_to_whole_seconds() {
    let (_, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let signer = Signer::new(intermediate).expect("signer");
    let mut p = profile(&key(KeySpec::EcdsaP256).spki_der, &["ms.example.test"], &[]);
    p.not_before_ms += 999;
    p.not_after_ms += 1;
    let cert_der = signer.issue(&p).expect("issue").cert_der;
    let validity = parse_cert(&cert_der).validity().clone();
    assert_eq!(
        validity.not_before.timestamp() * 1000,
        p.not_before_ms - 999
    );
    assert_eq!(validity.not_after.timestamp() * 1000, p.not_after_ms - 1);
}

#[test]
fn bad_profiles_are_refused_with_a_reason() {
    let (_, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let signer = Signer::new(intermediate).expect("signer");
    let base = profile(&key(KeySpec::EcdsaP256).spki_der, &["ok.example.test"], &[]);
    type Edit = fn(&mut LeafProfile);
    let cases: [(Edit, &str); 11] = [
        (|p| p.serial = [0; 16], "serial number is zero"),
        (
            |p| p.not_after_ms = p.not_before_ms,
            "at least one second after",
        ),
        (
            |p| p.not_before_ms = -1000,
            "outside 1970-01-01..9999-12-31",
        ),
        (
            |p| p.not_after_ms = i64::MAX,
            "outside 1970-01-01..9999-12-31",
        ),
        (
            |p| p.not_after_ms = now_ms() + 20 * 365 * DAY_MS,
            "after its issuing CA expires",
        ),
        (
            |p| {
                p.common_name = None;
                p.dns_names.clear();
            },
            "give a common name or at least one SAN",
        ),
        (|p| p.common_name = Some("x".repeat(65)), "at most 64"),
        (
            |p| p.common_name = Some(" ".to_string()),
            "common name is empty",
        ),
        (
            |p| p.dns_names = vec!["bücher.example".to_string()],
            "A-labels",
        ),
        (|p| p.dns_names = vec![String::new()], "is not a DNS name"),
        (
            |p| p.dns_names = vec!["a b.example".to_string()],
            "is not a DNS name",
        ),
    ];
    for (edit, expected) in cases {
        let mut p = base.clone();
        edit(&mut p);
        let e = signer.issue(&p).expect_err(expected);
        assert!(
            matches!(e, PkiError::InvalidArgument(_)),
            "{expected}: {e:?}"
        );
        assert!(e.to_string().contains(expected), "{expected}: {e}");
    }
}

#[test]
fn weak_or_malformed_leaf_keys_are_refused_at_issuance() {
    let (_, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let signer = Signer::new(intermediate).expect("signer");
    let weak_spki =
        crate::test_support::csr_fixture_spki(include_str!("../../testdata/csr/rsa1024.csr"));
    let p = profile(&weak_spki, &["weak.example.test"], &[]);
    let e = signer.issue(&p).expect_err("RSA-1024 refused");
    assert!(matches!(e, PkiError::UnacceptablePublicKey { .. }), "{e:?}");
    let p = profile(b"garbage", &["weak.example.test"], &[]);
    assert!(matches!(
        signer.issue(&p),
        Err(PkiError::UnacceptablePublicKey { .. })
    ));
}

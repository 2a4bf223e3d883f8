use std::collections::HashSet;

use crate::ca::*;
use crate::inspect::parse_chain_pem;
use crate::keys::{KeyAlgorithm, KeySpec};
use crate::test_support::{
    authority_key_identifier, ca_pair, parse_cert, subject_key_identifier, CA_SPECS,
};
use crate::testing::{now_ms, DAY_MS};
use crate::PkiError;

#[test]
fn root_and_intermediate_have_the_ca_profile() {
    let now = now_ms();
    let (root, intermediate) =
        create_root_and_intermediate("Example Corp", &KeySpec::EcdsaP256, now, 3650, 1825)
            .expect("create CAs");
    assert_eq!(root.subject, "CN=Example Corp Root CA");
    assert_eq!(intermediate.subject, "CN=Example Corp Intermediate CA");
    assert_eq!(root.key.algorithm, KeyAlgorithm::EcdsaP256);

    let expected_not_before = (now - CA_BACKDATE_MS).div_euclid(1000) * 1000;
    for (ca, days) in [(&root, 3650), (&intermediate, 1825)] {
        assert_eq!(ca.not_before_ms, expected_not_before);
        assert_eq!(
            ca.not_after_ms,
            (now + days * DAY_MS).div_euclid(1000) * 1000
        );
    }

    let root_cert = parse_cert(&root.cert_der);
    let intermediate_cert = parse_cert(&intermediate.cert_der);
    for (cert, path_len) in [(&root_cert, None), (&intermediate_cert, Some(0))] {
        let constraints = cert
            .basic_constraints()
            .expect("valid")
            .expect("basicConstraints present");
        assert!(constraints.critical);
        assert!(constraints.value.ca);
        assert_eq!(constraints.value.path_len_constraint, path_len);
        let usage = cert.key_usage().expect("valid").expect("keyUsage present");
        assert!(usage.critical);
        assert!(usage.value.key_cert_sign() && usage.value.crl_sign());
        assert!(!usage.value.digital_signature());
        // 128-bit serial with the top bit clear: positive, at most 16 bytes.
        let serial = cert.raw_serial();
        assert!(serial.len() <= 16 && !serial.is_empty());
        assert!(serial[0] < 0x80);
        assert!(subject_key_identifier(cert).is_some());
    }
    assert_eq!(
        authority_key_identifier(&intermediate_cert),
        subject_key_identifier(&root_cert),
        "the intermediate points at the root's key"
    );
    assert_eq!(
        intermediate_cert.issuer().as_raw(),
        root_cert.subject().as_raw()
    );
    root_cert
        .verify_signature(None)
        .expect("the root is self-signed");
    intermediate_cert
        .verify_signature(Some(root_cert.public_key()))
        .expect("the root signed the intermediate");

    // The upload parser accepts the pair as a chain, and the files are plain PEM.
    let chain = parse_chain_pem(&chain_pem(&intermediate.cert_pem, &[&root])).expect("chain");
    assert_eq!(chain.certificate_count, 2);
    assert!(chain.leaf.is_ca);
    assert!(root.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
}

#[test]
fn every_ca_key_type_makes_a_working_pair() {
    for spec in CA_SPECS {
        let (root, intermediate) = ca_pair(spec);
        assert_eq!(root.key, spec.facts());
        assert_eq!(intermediate.key, spec.facts());
        assert_ne!(
            *root.key_pkcs8, *intermediate.key_pkcs8,
            "{spec:?}: two keys"
        );
        parse_chain_pem(&chain_pem(&intermediate.cert_pem, &[root]))
            .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        Signer::new(root).expect("root signs");
        Signer::new(intermediate).expect("intermediate signs");
    }
}

#[test]
fn bad_ca_arguments_are_refused_before_any_key_is_made() {
    let now = now_ms();
    let spec = KeySpec::EcdsaP256;
    let cases: [(&str, u32, u32, &str); 7] = [
        ("", 10, 5, "empty"),
        ("   ", 10, 5, "empty"),
        ("bad\nname", 10, 5, "control characters"),
        (&"x".repeat(49), 10, 5, "at most 48 characters"),
        ("ok", 0, 0, "root CA validity"),
        ("ok", MAX_CA_VALIDITY_DAYS + 1, 5, "root CA validity"),
        ("ok", 10, 11, "intermediate CA validity"),
    ];
    for (name, root_days, intermediate_days, expected) in cases {
        let e = create_root_and_intermediate(name, &spec, now, root_days, intermediate_days)
            .expect_err("refused");
        assert!(matches!(e, PkiError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains(expected), "{expected}: {e}");
    }
    let e = create_root_and_intermediate("ok", &KeySpec::Rsa { bits: 1024 }, now, 10, 5)
        .expect_err("weak spec");
    assert!(e.to_string().contains("2048, 3072 or 4096"), "{e}");
    let e = create_root_and_intermediate("ok", &spec, i64::MAX - 1, 10, 5).expect_err("time");
    assert!(
        e.to_string().contains("outside 1970-01-01..9999-12-31"),
        "{e}"
    );
    // The longest allowed name still fits the 64-character common-name limit.
    let (_, intermediate) =
        create_root_and_intermediate(&"x".repeat(48), &spec, now, 10, 5).expect("48 chars");
    assert_eq!(intermediate.subject.len(), "CN=".len() + 64);
}

#[test]
fn new_serials_are_positive_random_and_distinct() {
    let mut seen = HashSet::new();
    for _ in 0..2000 {
        let serial = new_serial().expect("serial");
        assert!(serial[0] < 0x80, "top bit must be clear");
        assert!(serial.iter().any(|b| *b != 0));
        assert!(seen.insert(serial), "duplicate serial");
    }
    // Over 2000 draws every bit position below the top one is set at least once.
    let mut union = [0u8; 16];
    for serial in &seen {
        for (u, b) in union.iter_mut().zip(serial) {
            *u |= b;
        }
    }
    assert_eq!(union[0], 0x7f);
    assert!(union[1..].iter().all(|b| *b == 0xff));
}

#[test]
fn serial_hex_has_no_separators_or_leading_zero_bytes() {
    assert_eq!(serial_hex(&[0x00, 0x00, 0x0a, 0xbc]), "0abc");
    assert_eq!(serial_hex(&[0x7f, 0x01]), "7f01");
    assert_eq!(serial_hex(&[0, 0]), "00");
}

#[test]
fn chain_pem_joins_blocks_with_single_newlines() {
    let (root, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let leaf = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\n\n";
    let chain = chain_pem(leaf, &[intermediate, root]);
    assert_eq!(chain.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    assert!(!chain.contains("\n\n"));
    assert!(chain.ends_with("-----END CERTIFICATE-----\n"));
    let root_at = chain.find(root.cert_pem.trim_end()).expect("root present");
    let intermediate_at = chain
        .find(intermediate.cert_pem.trim_end())
        .expect("intermediate present");
    assert!(intermediate_at < root_at, "order as given");
}

#[test]
fn debug_output_redacts_ca_keys() {
    let (root, _) = ca_pair(KeySpec::Ed25519);
    let debug = format!("{root:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(&hex::encode(&root.key_pkcs8[16..48])));
    let signer = Signer::new(root).expect("signer");
    let debug = format!("{signer:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(&hex::encode(&root.key_pkcs8[16..48])));
}

#[test]
fn a_signer_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Signer>();
    assert_send_sync::<CaCertificate>();
}

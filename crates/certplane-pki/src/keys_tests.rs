use rcgen::{PublicKeyData, PKCS_ECDSA_P256_SHA256};

use super::*;
use crate::inspect::{parse_private_key_pem, PrivateKeyFormat};
use crate::pem_blocks;
use crate::test_support::{csr_fixture_spki, key, ALL_KEY_SPECS};
use crate::PkiErrorKind;

fn refusal(spki_der: &[u8]) -> String {
    match key_facts_from_spki(spki_der) {
        Err(e @ PkiError::UnacceptablePublicKey { .. }) => {
            assert_eq!(e.kind(), PkiErrorKind::InvalidInput);
            e.to_string()
        }
        other => panic!("expected UnacceptablePublicKey, got {other:?}"),
    }
}

#[test]
fn every_key_spec_round_trips_through_rcgen_and_back() {
    for spec in ALL_KEY_SPECS {
        let generated = key(spec);
        assert_eq!(generated.facts, spec.facts(), "{spec:?}");
        assert_eq!(
            key_facts_from_spki(&generated.spki_der).expect("own key accepted"),
            generated.facts,
            "{spec:?}"
        );
        // The PKCS#8 loads into rcgen (ring) for signing, as the right algorithm, with the same
        // public key.
        let loaded = signing_key_from_pkcs8(&generated.pkcs8_der, generated.facts.algorithm)
            .expect("PKCS#8 loads into rcgen");
        assert_eq!(
            loaded.subject_public_key_info(),
            generated.spki_der,
            "{spec:?}"
        );
        assert!(std::ptr::eq(
            loaded.algorithm(),
            signature_algorithm_for(spec.facts().algorithm)
        ));
        // ... and is what the upload path accepts as a PKCS#8 key.
        let pem = pem_blocks::encode("PRIVATE KEY", &generated.pkcs8_der);
        let parsed = parse_private_key_pem(&pem).expect("upload parser accepts it");
        assert_eq!(parsed.format(), PrivateKeyFormat::Pkcs8);
    }
}

#[test]
fn generated_keys_are_distinct() {
    let a = generate_key(&KeySpec::EcdsaP256).expect("key a");
    let b = generate_key(&KeySpec::EcdsaP256).expect("key b");
    assert_ne!(a.spki_der, b.spki_der);
    assert_ne!(*a.pkcs8_der, *b.pkcs8_der);
}

#[test]
fn debug_output_never_shows_the_private_key() {
    let generated = key(KeySpec::Ed25519);
    let debug = format!("{generated:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(&hex::encode(&generated.pkcs8_der[..])));
    // ring's Ed25519 PKCS#8 v2: a 16-byte header, then the 32-byte secret seed (the public key that
    // follows is printed, as part of the SPKI, and that is fine).
    let seed = hex::encode(&generated.pkcs8_der[16..48]);
    assert!(!debug.contains(&seed));
}

#[test]
fn rsa_sizes_outside_the_generated_set_are_refused_before_any_work() {
    for bits in [0, 1024, 2047, 2049, 8192, 16384] {
        let e = generate_key(&KeySpec::Rsa { bits }).expect_err("refused");
        assert!(matches!(e, PkiError::InvalidArgument(_)), "{bits}: {e:?}");
        assert!(e.to_string().contains("2048, 3072 or 4096"), "{e}");
    }
}

#[test]
fn key_spec_json_is_tagged_snake_case() {
    let cases = [
        (KeySpec::Rsa { bits: 3072 }, r#"{"type":"rsa","bits":3072}"#),
        (KeySpec::EcdsaP256, r#"{"type":"ecdsa_p256"}"#),
        (KeySpec::EcdsaP384, r#"{"type":"ecdsa_p384"}"#),
        (KeySpec::Ed25519, r#"{"type":"ed25519"}"#),
    ];
    for (spec, json) in cases {
        assert_eq!(serde_json::to_string(&spec).expect("serialize"), json);
        assert_eq!(
            serde_json::from_str::<KeySpec>(json).expect("deserialize"),
            spec
        );
    }
    assert!(serde_json::from_str::<KeySpec>(r#"{"type":"rsa"}"#).is_err());
    assert!(serde_json::from_str::<KeySpec>(r#"{"type":"dsa"}"#).is_err());
    let facts = KeyFacts {
        algorithm: KeyAlgorithm::EcdsaP384,
        bits: 384,
    };
    assert_eq!(
        serde_json::to_string(&facts).expect("serialize"),
        r#"{"algorithm":"ecdsa_p384","bits":384}"#
    );
}

#[test]
fn weak_and_unsupported_keys_are_refused_with_a_reason() {
    let cases = [
        (
            include_str!("testdata/csr/rsa1024.csr"),
            "at least 2048 bits; this one has 1024",
        ),
        (include_str!("testdata/csr/ec-p192.csr"), "P-192"),
        (include_str!("testdata/csr/ec-secp256k1.csr"), "secp256k1"),
        (include_str!("testdata/csr/ec-p521.csr"), "P-521"),
        (
            include_str!("testdata/csr/dsa2048.csr"),
            "DSA keys are not accepted",
        ),
    ];
    for (pem, expected) in cases {
        let message = refusal(&csr_fixture_spki(pem));
        assert!(message.contains(expected), "{message}");
        assert!(
            message.starts_with("the public key is not accepted: "),
            "{message}"
        );
    }
}

#[test]
fn accepted_fixture_keys_report_their_facts() {
    let cases = [
        (
            include_str!("testdata/csr/rsa2048.csr"),
            KeyAlgorithm::Rsa,
            2048,
        ),
        (
            include_str!("testdata/csr/ec-p256.csr"),
            KeyAlgorithm::EcdsaP256,
            256,
        ),
        (
            include_str!("testdata/csr/ec-p384.csr"),
            KeyAlgorithm::EcdsaP384,
            384,
        ),
        (
            include_str!("testdata/csr/ed25519.csr"),
            KeyAlgorithm::Ed25519,
            256,
        ),
    ];
    for (pem, algorithm, bits) in cases {
        assert_eq!(
            key_facts_from_spki(&csr_fixture_spki(pem)).expect("accepted"),
            KeyFacts { algorithm, bits }
        );
    }
}

#[test]
fn malformed_spki_is_refused() {
    let good = key(KeySpec::EcdsaP256).spki_der.clone();
    assert!(refusal(&[]).contains("not a DER SubjectPublicKeyInfo"));
    assert!(refusal(b"not der at all").contains("not a DER SubjectPublicKeyInfo"));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(refusal(&trailing).contains("unexpected bytes"));
    // Compressed point (0x02 prefix, 33 bytes) built by hand from the real key's X coordinate.
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&good).expect("spki");
    let point: &[u8] = &spki.subject_public_key.data;
    let mut compressed = vec![0x02];
    compressed.extend_from_slice(&point[1..33]);
    let compressed_spki = rewrite_ec_point(&good, &compressed);
    assert!(refusal(&compressed_spki).contains("compressed"));
}

/// Replace the BIT STRING of a P-256 SPKI (fixed 91-byte layout: 26-byte header, 65-byte point).
fn rewrite_ec_point(spki: &[u8], point: &[u8]) -> Vec<u8> {
    assert_eq!(spki.len(), 91, "P-256 SPKI layout");
    let algorithm = &spki[2..23]; // SEQUENCE { ecPublicKey, prime256v1 }
    let mut bit_string = vec![0x03, u8::try_from(point.len() + 1).expect("short"), 0x00];
    bit_string.extend_from_slice(point);
    let mut body = algorithm.to_vec();
    body.extend_from_slice(&bit_string);
    let mut out = vec![0x30, u8::try_from(body.len()).expect("short")];
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_key_of_another_type_is_not_loaded_as_the_expected_one() {
    let p384 = key(KeySpec::EcdsaP384);
    let e = signing_key_from_pkcs8(&p384.pkcs8_der, KeyAlgorithm::EcdsaP256)
        .expect_err("P-384 is not P-256");
    assert!(e.to_string().contains("not an ECDSA P-256 key"), "{e}");
    let e = signing_key_from_pkcs8(b"garbage", KeyAlgorithm::Rsa).expect_err("garbage");
    assert!(matches!(e, PkiError::InvalidPrivateKey { .. }), "{e:?}");
    // The signature algorithm table matches rcgen's own choice for a P-256 key.
    assert!(std::ptr::eq(
        signature_algorithm_for(KeyAlgorithm::EcdsaP256),
        &PKCS_ECDSA_P256_SHA256
    ));
}

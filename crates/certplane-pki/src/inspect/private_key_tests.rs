use rcgen::{CertificateParams, KeyPair};

use super::*;
use crate::testing::{self, now_ms, DAY_MS};

const RSA_CERT: &str = include_str!("../testdata/rsa2048.pem");
const RSA_PKCS1: &str = include_str!("../testdata/rsa2048-pkcs1.key");
const RSA_PKCS8: &str = include_str!("../testdata/rsa2048-pkcs8.key");
const EC_CERT: &str = include_str!("../testdata/ec-p256.pem");
const EC_SEC1_WITH_PARAMS: &str = include_str!("../testdata/ec-p256-sec1.key");
const EC_ENCRYPTED_PKCS8: &str = include_str!("../testdata/ec-p256-encrypted.key");
const EC_LEGACY_ENCRYPTED: &str = include_str!("../testdata/ec-p256-legacy-encrypted.key");
const P521_CA: &str = include_str!("../testdata/ec-p521-ca.pem");
const P521_KEY: &str = include_str!("../testdata/ec-p521-pkcs8.key");

fn leaf_der(pem: &str) -> Vec<u8> {
    parse_chain_pem(pem).expect("certificate").leaf_der
}

fn p256_pair() -> (Vec<u8>, PrivateKeyDer) {
    let now = now_ms();
    let (cert, key) = testing::self_signed("k.example.test", &[], now, now + DAY_MS);
    (leaf_der(&cert), parse_private_key_pem(&key).expect("key"))
}

fn matches(key: &PrivateKeyDer, der: &[u8]) -> bool {
    key_matches_certificate(key, der).expect("key can be checked")
}

#[test]
fn pkcs8_ecdsa_key_matches_only_its_certificate() {
    let (cert_a, key_a) = p256_pair();
    let (cert_b, key_b) = p256_pair();
    assert_eq!(key_a.format(), PrivateKeyFormat::Pkcs8);
    assert_eq!(key_a.label(), "PRIVATE KEY");
    assert!(matches(&key_a, &cert_a));
    assert!(matches(&key_b, &cert_b));
    assert!(!matches(&key_a, &cert_b));
    assert!(!matches(&key_b, &cert_a));
}

#[test]
fn ed25519_and_p384_keys_match() {
    for algorithm in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
        let key = KeyPair::generate_for(algorithm).expect("key");
        let cert = CertificateParams::default()
            .self_signed(&key)
            .expect("cert");
        let parsed = parse_private_key_pem(&key.serialize_pem()).expect("key pem");
        assert!(matches(&parsed, cert.der()));
        let (other_cert, _) = p256_pair();
        assert!(!matches(&parsed, &other_cert));
    }
}

#[test]
fn rsa_keys_in_pkcs1_and_pkcs8_match_the_openssl_certificate() {
    let cert = leaf_der(RSA_CERT);
    let pkcs1 = parse_private_key_pem(RSA_PKCS1).expect("pkcs1");
    assert_eq!(pkcs1.format(), PrivateKeyFormat::Pkcs1);
    assert_eq!(pkcs1.label(), "RSA PRIVATE KEY");
    assert!(matches(&pkcs1, &cert));
    let pkcs8 = parse_private_key_pem(RSA_PKCS8).expect("pkcs8");
    assert_eq!(pkcs8.format(), PrivateKeyFormat::Pkcs8);
    assert!(matches(&pkcs8, &cert));

    let (ec_cert, ec_key) = p256_pair();
    assert!(!matches(&pkcs1, &ec_cert));
    assert!(!matches(&pkcs8, &ec_cert));
    assert!(!matches(&ec_key, &cert));
}

#[test]
fn sec1_key_after_ec_parameters_matches() {
    let key = parse_private_key_pem(EC_SEC1_WITH_PARAMS).expect("sec1 key");
    assert_eq!(key.format(), PrivateKeyFormat::Sec1);
    assert_eq!(key.label(), "EC PRIVATE KEY");
    assert!(matches(&key, &leaf_der(EC_CERT)));
    let (other_cert, _) = p256_pair();
    assert!(!matches(&key, &other_cert));
    assert!(!matches(&key, &leaf_der(RSA_CERT)));
}

#[test]
fn encrypted_keys_are_refused() {
    for input in [EC_ENCRYPTED_PKCS8, EC_LEGACY_ENCRYPTED] {
        let e = parse_private_key_pem(input).expect_err("encrypted key");
        assert!(matches!(e, PkiError::EncryptedPrivateKey), "{e:?}");
        assert_eq!(
            e.to_string(),
            "encrypted private keys are not accepted; supply the key unencrypted over TLS"
        );
    }
}

#[test]
fn unsupported_curve_is_reported_not_mismatched() {
    let key = parse_private_key_pem(P521_KEY).expect("P-521 PKCS#8 parses");
    let e = key_matches_certificate(&key, &leaf_der(P521_CA)).expect_err("ring has no P-521");
    assert!(matches!(e, PkiError::UnsupportedKey { .. }), "{e:?}");
    assert!(e.to_string().contains("1.3.132.0.35"), "{e}");
}

#[test]
fn malformed_inputs_are_rejected() {
    assert!(matches!(
        parse_private_key_pem(""),
        Err(PkiError::NoPrivateKey)
    ));
    assert!(matches!(
        parse_private_key_pem("just text"),
        Err(PkiError::NoPrivateKey)
    ));

    let e = parse_private_key_pem(EC_CERT).expect_err("a certificate is not a key");
    assert!(e.to_string().contains("found a CERTIFICATE block"), "{e}");

    for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"] {
        let garbage = crate::pem_blocks::encode(label, b"not a key at all");
        let e = parse_private_key_pem(&garbage).expect_err("garbage DER");
        assert!(
            matches!(e, PkiError::InvalidPrivateKey { .. }),
            "{label}: {e:?}"
        );
    }

    let two = format!("{RSA_PKCS8}{RSA_PKCS8}");
    let e = parse_private_key_pem(&two).expect_err("two keys");
    assert!(e.to_string().contains("more than one private key"), "{e}");

    let huge = format!("{RSA_PKCS8}{}", " ".repeat(MAX_PRIVATE_KEY_PEM_BYTES));
    assert!(matches!(
        parse_private_key_pem(&huge),
        Err(PkiError::TooLarge { .. })
    ));

    let (_, key) = p256_pair();
    assert!(matches!(
        key_matches_certificate(&key, b"not a certificate"),
        Err(PkiError::InvalidCertificate { index: 1, .. })
    ));
}

#[test]
fn key_material_is_never_printed_and_round_trips() {
    let key = parse_private_key_pem(RSA_PKCS1).expect("key");
    let debug = format!("{key:?}");
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains("MII"));
    let again = parse_private_key_pem(&key.to_pem()).expect("re-encoded key");
    assert_eq!(again.der(), key.der());
    assert_eq!(again.format(), PrivateKeyFormat::Pkcs1);
}

use crate::ca::*;
use crate::keys::{KeyAlgorithm, KeySpec};
use crate::pem_blocks;
use crate::test_support::{
    authority_key_identifier, ca_pair, key, openssl_available, openssl_verify_with, parse_cert,
    profile, subject_key_identifier, webpki_verify,
};
use crate::testing::{make_chain, now_ms, DAY_MS};
use crate::{PkiError, PkiErrorKind};

const RSA_CA: &str = include_str!("../../testdata/ca/openssl-rsa3072-ca.pem");
const RSA_CA_KEY_PKCS1: &str = include_str!("../../testdata/ca/openssl-rsa3072-ca-pkcs1.key");
const P384_CA: &str = include_str!("../../testdata/ca/openssl-p384-ca.pem");
const P384_CA_KEY_SEC1: &str = include_str!("../../testdata/ca/openssl-p384-ca-sec1.key");
const ED25519_CA: &str = include_str!("../../testdata/ca/openssl-ed25519-ca.pem");
const ED25519_CA_KEY: &str = include_str!("../../testdata/ca/openssl-ed25519-ca.key");
const DC_CA: &str = include_str!("../../testdata/ca/dc-repeated-ca.pem");
const DC_CA_KEY: &str = include_str!("../../testdata/ca/dc-repeated-ca.key");

fn key_pem(ca: &CaCertificate) -> String {
    pem_blocks::encode("PRIVATE KEY", &ca.key_pkcs8)
}

#[test]
fn a_generated_ca_imports_back_unchanged() {
    for spec in [
        KeySpec::EcdsaP256,
        KeySpec::Rsa { bits: 2048 },
        KeySpec::Ed25519,
    ] {
        let (root, intermediate) = ca_pair(spec);
        for ca in [root, intermediate] {
            let imported = import_ca(&ca.cert_pem, &key_pem(ca), now_ms()).expect("import");
            assert_eq!(imported.cert_der, ca.cert_der);
            assert_eq!(imported.cert_pem, ca.cert_pem);
            assert_eq!(*imported.key_pkcs8, *ca.key_pkcs8);
            assert_eq!(imported.key, ca.key);
            assert_eq!(imported.subject, ca.subject);
            assert_eq!(imported.not_before_ms, ca.not_before_ms);
            assert_eq!(imported.not_after_ms, ca.not_after_ms);
        }
        // The intermediate may come with its root after it; only the intermediate is kept.
        let with_parent = chain_pem(&intermediate.cert_pem, &[root]);
        let imported = import_ca(&with_parent, &key_pem(intermediate), now_ms()).expect("import");
        assert_eq!(imported.cert_der, intermediate.cert_der);
        // ... but not in the wrong order: the chain links are checked.
        let reversed = chain_pem(&root.cert_pem, &[intermediate]);
        assert!(matches!(
            import_ca(&reversed, &key_pem(intermediate), now_ms()),
            Err(PkiError::BrokenChain { .. })
        ));
    }
}

/// CAs and key files as OpenSSL makes them (PKCS#1 RSA, SEC1 EC with an `EC PRIVATE KEY` label,
/// PKCS#8 Ed25519, SHA-1 key identifiers) import, issue, and validate.
#[test]
fn openssl_made_cas_in_every_key_format_import_and_issue() {
    let openssl = openssl_available("openssl_made_cas_in_every_key_format_import_and_issue");
    let dir = tempfile::tempdir().expect("tempdir");
    // The Ed25519 fixture has no keyUsage at all, which RFC 5280 tolerates and we accept; OpenSSL's
    // -x509_strict does not, so that one is checked without it.
    let cases = [
        (RSA_CA, RSA_CA_KEY_PKCS1, KeyAlgorithm::Rsa, 3072, true),
        (
            P384_CA,
            P384_CA_KEY_SEC1,
            KeyAlgorithm::EcdsaP384,
            384,
            true,
        ),
        (
            ED25519_CA,
            ED25519_CA_KEY,
            KeyAlgorithm::Ed25519,
            256,
            false,
        ),
    ];
    for (cert_pem, key_pem, algorithm, bits, strict) in cases {
        let ca = import_ca(cert_pem, key_pem, now_ms()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ca.key.algorithm, algorithm);
        assert_eq!(ca.key.bits, bits);
        // The stored key is PKCS#8 whatever the upload was, and loads for signing.
        assert!(crate::keys::signing_key_from_pkcs8(&ca.key_pkcs8, algorithm).is_ok());

        let signer = Signer::new(&ca).expect("signer");
        let p = profile(
            &key(KeySpec::EcdsaP256).spki_der,
            &["imported.example.test"],
            &[],
        );
        let issued = signer.issue(&p).expect("issue");
        let cert = parse_cert(&issued.cert_der);
        let ca_cert = parse_cert(&ca.cert_der);
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        assert_eq!(
            authority_key_identifier(&cert),
            subject_key_identifier(&ca_cert),
            "the AKI is the CA's own (OpenSSL: SHA-1) key identifier"
        );
        webpki_verify(
            &ca.cert_der,
            &[],
            &issued.cert_der,
            now_ms(),
            Some("imported.example.test"),
            &[],
        )
        .unwrap_or_else(|e| panic!("{algorithm}: webpki: {e:?}"));
        if openssl {
            openssl_verify_with(
                dir.path(),
                &ca.cert_pem,
                "",
                &issued.cert_pem,
                now_ms(),
                strict,
            )
            .unwrap_or_else(|out| panic!("{algorithm}: openssl verify: {out}"));
        }
    }
}

#[test]
fn a_leaf_certificate_is_not_a_ca() {
    let chain = make_chain("leaf.example.test", &["leaf.example.test"], 30);
    let e = import_ca(&chain.leaf_pem, &chain.leaf_key_pem, now_ms()).expect_err("not a CA");
    assert!(matches!(e, PkiError::NotACa { .. }), "{e:?}");
    assert!(e.to_string().contains("end-entity certificate"), "{e}");
    assert_eq!(e.kind(), PkiErrorKind::InvalidInput);

    // Also when the leaf arrives as a CaCertificate rebuilt from storage.
    let leaf_der = pem::parse(&chain.leaf_pem).expect("pem").into_contents();
    let key_der = pem::parse(&chain.leaf_key_pem)
        .expect("pem")
        .into_contents();
    let fake = CaCertificate {
        cert_der: leaf_der,
        cert_pem: chain.leaf_pem.clone(),
        key_pkcs8: zeroize::Zeroizing::new(key_der),
        key: KeySpec::EcdsaP256.facts(),
        subject: "CN=leaf.example.test".to_string(),
        not_before_ms: 0,
        not_after_ms: now_ms() + DAY_MS,
    };
    assert!(matches!(Signer::new(&fake), Err(PkiError::NotACa { .. })));
}

#[test]
fn a_key_that_does_not_belong_to_the_ca_is_refused() {
    let (root, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let e = import_ca(&intermediate.cert_pem, &key_pem(root), now_ms()).expect_err("mismatch");
    assert!(matches!(e, PkiError::InvalidPrivateKey { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("does not belong to the CA certificate"),
        "{e}"
    );

    // Signer::new checks again, for CaCertificates rebuilt from storage.
    let mut swapped = intermediate.clone();
    swapped.key_pkcs8 = root.key_pkcs8.clone();
    let e = Signer::new(&swapped).expect_err("mismatch");
    assert!(
        e.to_string()
            .contains("does not belong to the CA certificate"),
        "{e}"
    );

    // A key of another type is refused before any comparison.
    let (other, _) = ca_pair(KeySpec::Ed25519);
    let mut other_type = intermediate.clone();
    other_type.key_pkcs8 = other.key_pkcs8.clone();
    assert!(matches!(
        Signer::new(&other_type),
        Err(PkiError::InvalidPrivateKey { .. })
    ));
}

#[test]
fn an_expired_ca_is_refused() {
    let long_ago = now_ms() - 400 * DAY_MS;
    let (root, _) = create_root_and_intermediate("Expired", &KeySpec::EcdsaP256, long_ago, 365, 30)
        .expect("create an old CA");
    let e = import_ca(&root.cert_pem, &key_pem(&root), now_ms()).expect_err("expired");
    match &e {
        PkiError::CaExpired { not_after } => {
            assert!(
                not_after.ends_with('Z') && not_after.contains('T'),
                "{not_after}"
            )
        }
        other => panic!("expected CaExpired, got {other:?}"),
    }
    assert!(e.to_string().contains("expired on"), "{e}");
    // The same CA was fine while it was valid.
    import_ca(&root.cert_pem, &key_pem(&root), long_ago + DAY_MS).expect("valid then");
}

#[test]
fn a_ca_whose_name_the_signer_cannot_reproduce_is_refused() {
    // `DC=test, DC=example, CN=...`, as Active Directory CAs are named: rcgen's name model holds one
    // value per attribute type (rustls/rcgen#81), so leaves would name a different issuer.
    let e = import_ca(DC_CA, DC_CA_KEY, now_ms()).expect_err("refused");
    assert!(matches!(e, PkiError::NotACa { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("repeats the 0.9.2342.19200300.100.1.25 attribute"),
        "{message}"
    );
    assert!(message.contains("would not chain"), "{message}");
}

#[test]
fn encrypted_or_missing_keys_are_refused() {
    let (root, _) = ca_pair(KeySpec::EcdsaP256);
    let encrypted = include_str!("../../testdata/ec-p256-encrypted.key");
    assert!(matches!(
        import_ca(&root.cert_pem, encrypted, now_ms()),
        Err(PkiError::EncryptedPrivateKey)
    ));
    assert!(matches!(
        import_ca(&root.cert_pem, "", now_ms()),
        Err(PkiError::NoPrivateKey)
    ));
    assert!(matches!(
        import_ca("", &key_pem(root), now_ms()),
        Err(PkiError::NoCertificate)
    ));
}

#[test]
fn a_ca_without_crl_sign_issues_but_cannot_sign_crls() {
    // The OpenSSL P-384 fixture has keyUsage keyCertSign only.
    let ca = import_ca(P384_CA, P384_CA_KEY_SEC1, now_ms()).expect("import");
    let signer = Signer::new(&ca).expect("signer");
    let now = now_ms();
    let e = signer
        .crl(&[], 1, now, now + DAY_MS)
        .expect_err("no cRLSign");
    assert!(matches!(e, PkiError::NotACa { .. }), "{e:?}");
    assert!(e.to_string().contains("cRLSign"), "{e}");
}

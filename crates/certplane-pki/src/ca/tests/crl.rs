use std::process::Command;
use std::str::FromStr;

use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::X509Version;

use crate::ca::*;
use crate::keys::KeySpec;
use crate::test_support::{
    ca_pair, key, openssl_available, parse_cert, profile, run, subject_key_identifier,
    webpki_verify, CA_SPECS,
};
use crate::testing::{now_ms, DAY_MS};
use crate::PkiError;

fn parse_crl(der: &[u8]) -> CertificateRevocationList<'_> {
    let (rest, crl) = CertificateRevocationList::from_der(der).expect("a DER CRL");
    assert!(rest.is_empty());
    crl
}

fn whole_seconds(ms: i64) -> i64 {
    ms.div_euclid(1000) * 1000
}

/// Two revoked leaves, read back field by field with x509-parser, signature checked against the
/// issuer's key, and cross-checked by webpki (revocation during path validation) and OpenSSL.
#[test]
fn a_crl_lists_the_revoked_serials_with_reasons_and_verifies() {
    let openssl = openssl_available("a_crl_lists_the_revoked_serials_with_reasons_and_verifies");
    let dir = tempfile::tempdir().expect("tempdir");
    for spec in CA_SPECS {
        let (root, intermediate) = ca_pair(spec);
        let signer = Signer::new(intermediate).expect("signer");
        let leaf_key = &key(KeySpec::EcdsaP256).spki_der;
        let compromised = signer
            .issue(&profile(leaf_key, &["a.example.test"], &[]))
            .expect("issue");
        let replaced = signer
            .issue(&profile(leaf_key, &["b.example.test"], &[]))
            .expect("issue");
        let still_good = signer
            .issue(&profile(leaf_key, &["c.example.test"], &[]))
            .expect("issue");
        let now = now_ms();
        let revoked = [
            RevokedEntry {
                serial_hex: compromised.serial_hex.clone(),
                revoked_at_ms: now - 120_000,
                reason: RevocationReason::KeyCompromise,
            },
            RevokedEntry {
                // Upper case with colons, as people paste serials from `openssl x509 -text`.
                serial_hex: colons_upper(&replaced.serial_hex),
                revoked_at_ms: now - 60_000,
                reason: RevocationReason::Superseded,
            },
        ];
        let crl_number = 42;
        let this_update = now - 1000;
        let next_update = now + 7 * DAY_MS;
        let der = signer
            .crl(&revoked, crl_number, this_update, next_update)
            .expect("CRL");

        let crl = parse_crl(&der);
        let intermediate_cert = parse_cert(&intermediate.cert_der);
        assert_eq!(crl.version(), Some(X509Version::V2));
        assert_eq!(crl.issuer().as_raw(), intermediate_cert.subject().as_raw());
        assert_eq!(
            crl.last_update().timestamp() * 1000,
            whole_seconds(this_update)
        );
        assert_eq!(
            crl.next_update().expect("nextUpdate").timestamp() * 1000,
            whole_seconds(next_update)
        );
        assert_eq!(
            crl.crl_number().expect("CRL number").to_u64_digits(),
            vec![crl_number]
        );
        let aki = crl
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            });
        assert_eq!(aki, subject_key_identifier(&intermediate_cert), "{spec:?}");
        let entries: Vec<_> = crl.iter_revoked_certificates().collect();
        assert_eq!(entries.len(), 2);
        for (entry, (issued, expected)) in entries
            .iter()
            .zip([(&compromised, &revoked[0]), (&replaced, &revoked[1])])
        {
            assert_eq!(
                entry.raw_serial(),
                parse_cert(&issued.cert_der).raw_serial(),
                "{spec:?}: the CRL names the certificate's serial"
            );
            assert_eq!(
                entry.revocation_date.timestamp() * 1000,
                whole_seconds(expected.revoked_at_ms)
            );
            let (_, reason) = entry.reason_code().expect("reason code present");
            assert_eq!(reason.0, expected.reason.code());
        }
        crl.verify_signature(intermediate_cert.public_key())
            .unwrap_or_else(|e| panic!("{spec:?}: CRL signature: {e}"));
        assert!(
            crl.verify_signature(parse_cert(&root.cert_der).public_key())
                .is_err(),
            "the root did not sign it"
        );

        // webpki: the revoked leaves fail, the other passes, with revocation checking enforced.
        let check = |leaf: &IssuedCertificate, name: &str| {
            webpki_verify(
                &root.cert_der,
                &[&intermediate.cert_der],
                &leaf.cert_der,
                now_ms(),
                Some(name),
                &[&der],
            )
        };
        assert!(matches!(
            check(&compromised, "a.example.test"),
            Err(webpki::Error::CertRevoked)
        ));
        assert!(matches!(
            check(&replaced, "b.example.test"),
            Err(webpki::Error::CertRevoked)
        ));
        check(&still_good, "c.example.test").expect("not revoked");

        if openssl {
            let crl_path = dir.path().join("crl.pem");
            let ca_path = dir.path().join("ca.pem");
            std::fs::write(&crl_path, crl_pem(&der)).expect("write CRL");
            std::fs::write(&ca_path, &intermediate.cert_pem).expect("write CA");
            run(Command::new("openssl")
                .args(["crl", "-noout", "-verify", "-in"])
                .arg(&crl_path)
                .arg("-CAfile")
                .arg(&ca_path))
            .unwrap_or_else(|out| panic!("{spec:?}: openssl crl -verify: {out}"));
            let der_path = dir.path().join("crl.der");
            std::fs::write(&der_path, &der).expect("write DER CRL");
            run(Command::new("openssl")
                .args(["crl", "-inform", "DER", "-noout", "-verify", "-in"])
                .arg(&der_path)
                .arg("-CAfile")
                .arg(&ca_path))
            .unwrap_or_else(|out| panic!("{spec:?}: openssl crl -inform DER: {out}"));
            let chain_path = dir.path().join("chain.pem");
            std::fs::write(
                &chain_path,
                format!("{}{}", intermediate.cert_pem, root.cert_pem),
            )
            .expect("write chain");
            let verify = |leaf: &IssuedCertificate| {
                let leaf_path = dir.path().join("leaf.pem");
                std::fs::write(&leaf_path, &leaf.cert_pem).expect("write leaf");
                run(Command::new("openssl")
                    .args(["verify", "-crl_check", "-CAfile"])
                    .arg(&chain_path)
                    .arg("-CRLfile")
                    .arg(&crl_path)
                    .arg(&leaf_path))
            };
            let out = verify(&compromised).expect_err("revoked");
            assert!(out.contains("certificate revoked"), "{out}");
            verify(&still_good).unwrap_or_else(|out| panic!("{spec:?}: {out}"));
        }
    }
}

fn colons_upper(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn an_empty_crl_and_an_unspecified_reason_follow_rfc_5280() {
    let (_, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let signer = Signer::new(intermediate).expect("signer");
    let now = now_ms();
    let empty = signer.crl(&[], 1, now, now + DAY_MS).expect("empty CRL");
    let crl = parse_crl(&empty);
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
    assert_eq!(crl.crl_number().expect("number").to_u64_digits(), vec![1]);

    let one = signer
        .crl(
            &[RevokedEntry {
                serial_hex: "7f".to_string(),
                revoked_at_ms: now,
                reason: RevocationReason::Unspecified,
            }],
            2,
            now,
            now + DAY_MS,
        )
        .expect("CRL");
    let crl = parse_crl(&one);
    let entry = crl.iter_revoked_certificates().next().expect("entry");
    assert_eq!(entry.raw_serial(), &[0x7f]);
    assert!(
        entry.reason_code().is_none(),
        "RFC 5280 5.3.1: unspecified is written as no reasonCode"
    );
}

#[test]
fn bad_crl_arguments_are_refused() {
    let (_, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let signer = Signer::new(intermediate).expect("signer");
    let now = now_ms();
    let entry = |serial: &str| RevokedEntry {
        serial_hex: serial.to_string(),
        revoked_at_ms: now,
        reason: RevocationReason::KeyCompromise,
    };
    let cases: [(Vec<RevokedEntry>, i64, i64, &str); 6] = [
        (vec![], now, now, "at least one second after"),
        (vec![], now, now - DAY_MS, "at least one second after"),
        (
            vec![entry("zz")],
            now,
            now + DAY_MS,
            "not a certificate serial number",
        ),
        (
            vec![entry("")],
            now,
            now + DAY_MS,
            "not a certificate serial number",
        ),
        (vec![entry(&"ab".repeat(21))], now, now + DAY_MS, "20 bytes"),
        (
            vec![entry("0abc"), entry("ABC")],
            now,
            now + DAY_MS,
            "listed twice",
        ),
    ];
    for (revoked, this_update, next_update, expected) in cases {
        let e = signer
            .crl(&revoked, 1, this_update, next_update)
            .expect_err(expected);
        assert!(matches!(e, PkiError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains(expected), "{expected}: {e}");
    }
    let e = signer.crl(&[], 1, -5000, now).expect_err("time");
    assert!(e.to_string().contains("thisUpdate"), "{e}");
}

#[test]
fn crl_numbers_use_the_full_u64_range() {
    let (_, intermediate) = ca_pair(KeySpec::Ed25519);
    let signer = Signer::new(intermediate).expect("signer");
    let now = now_ms();
    for number in [0, 1, 255, 256, u64::MAX] {
        let der = signer.crl(&[], number, now, now + DAY_MS).expect("CRL");
        let parsed = parse_crl(&der);
        let digits = parsed.crl_number().expect("number").to_u64_digits();
        assert_eq!(digits.first().copied().unwrap_or(0), number);
    }
}

#[test]
fn crl_pem_uses_the_x509_crl_label() {
    let pem = crl_pem(&[0x30, 0x00]);
    assert!(pem.starts_with("-----BEGIN X509 CRL-----\n"));
    assert!(pem.ends_with("-----END X509 CRL-----\n"));
}

#[test]
fn revocation_reasons_parse_from_api_and_rfc_names() {
    let cases = [
        ("unspecified", RevocationReason::Unspecified, 0),
        ("key_compromise", RevocationReason::KeyCompromise, 1),
        ("keyCompromise", RevocationReason::KeyCompromise, 1),
        ("cACompromise", RevocationReason::CaCompromise, 2),
        ("caCompromise", RevocationReason::CaCompromise, 2),
        ("ca_compromise", RevocationReason::CaCompromise, 2),
        (
            "affiliationChanged",
            RevocationReason::AffiliationChanged,
            3,
        ),
        ("superseded", RevocationReason::Superseded, 4),
        (
            "cessation_of_operation",
            RevocationReason::CessationOfOperation,
            5,
        ),
        ("certificateHold", RevocationReason::CertificateHold, 6),
        (
            "privilegeWithdrawn",
            RevocationReason::PrivilegeWithdrawn,
            9,
        ),
        ("aACompromise", RevocationReason::AaCompromise, 10),
        ("aa_compromise", RevocationReason::AaCompromise, 10),
    ];
    for (text, reason, code) in cases {
        assert_eq!(RevocationReason::from_str(text).expect(text), reason);
        assert_eq!(reason.code(), code);
    }
    for reason in RevocationReason::ALL {
        assert_eq!(
            RevocationReason::from_str(&reason.to_string()).expect("round trip"),
            reason
        );
        let json = serde_json::to_string(&reason).expect("serialize");
        assert_eq!(
            serde_json::from_str::<RevocationReason>(&json).expect("deserialize"),
            reason
        );
    }
    assert_eq!(
        serde_json::to_string(&RevocationReason::KeyCompromise).expect("json"),
        "\"key_compromise\""
    );
    let e = RevocationReason::from_str("removeFromCRL").expect_err("not a reason");
    assert!(e.to_string().contains("delta CRLs"), "{e}");
    let e = RevocationReason::from_str("stolen").expect_err("unknown");
    assert!(e.to_string().contains("keyCompromise"), "{e}");
}

//! The issued certificate follows certplane's profile, never the CSR's wishes.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::ca::*;
use crate::csr::{parse_csr, parse_csr_der, CsrInfo};
use crate::keys::KeySpec;
use crate::test_support::{ca_pair, leaf_facts, parse_cert, webpki_verify};
use crate::testing::{now_ms, DAY_MS};

/// What the server does after policy approved the request: names from the (approved) request, key
/// from the CSR, everything else from the profile.
fn profile_from(info: &CsrInfo, dns_names: &[&str]) -> LeafProfile {
    let now = now_ms();
    LeafProfile {
        serial: new_serial().expect("serial"),
        common_name: dns_names.first().map(|s| (*s).to_string()),
        dns_names: dns_names.iter().map(|s| (*s).to_string()).collect(),
        ip_addresses: Vec::new(),
        not_before_ms: now - 60_000,
        not_after_ms: now + 30 * DAY_MS,
        spki_der: info.spki_der.clone(),
    }
}

#[test]
fn a_csr_requesting_ca_true_gets_an_end_entity_certificate() {
    let info = parse_csr(include_str!("../../testdata/csr/requests-ca.csr")).expect("parse");
    assert!(info.requests_ca);
    let (root, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let signer = Signer::new(intermediate).expect("signer");
    let issued = signer
        .issue(&profile_from(&info, &["evil-ca.example.test"]))
        .expect("issue");
    let cert = parse_cert(&issued.cert_der);
    let facts = leaf_facts(&cert);
    assert!(!facts.is_ca, "CA:FALSE whatever the CSR asked");
    assert!(facts.basic_constraints_critical);
    assert!(!facts.key_cert_sign && !facts.crl_sign);
    assert!(facts.digital_signature);
    assert_eq!(cert.public_key().raw, &info.spki_der[..], "the CSR's key");
    webpki_verify(
        &root.cert_der,
        &[&intermediate.cert_der],
        &issued.cert_der,
        now_ms(),
        Some("evil-ca.example.test"),
        &[],
    )
    .expect("a valid end-entity certificate");
}

/// End to end with a key we hold: the CSR asks for CA:TRUE + keyCertSign, the certificate we issue
/// from it is then used to sign a grandchild, and the validator refuses that path.
#[test]
fn a_certificate_issued_from_a_ca_request_cannot_sign_certificates() {
    let requester_key = KeyPair::generate().expect("key");
    let mut wish = CertificateParams::new(vec!["sneaky.example.test".to_string()]).expect("p");
    wish.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    wish.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let csr = wish.serialize_request(&requester_key).expect("CSR");
    let info = parse_csr_der(csr.der()).expect("parse");
    assert!(info.requests_ca);

    let (root, intermediate) = ca_pair(KeySpec::EcdsaP256);
    let issued = Signer::new(intermediate)
        .expect("signer")
        .issue(&profile_from(&info, &["sneaky.example.test"]))
        .expect("issue");

    // The requester now tries to act as a CA with the certificate it got.
    let mut wished_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "sneaky.example.test");
    wished_params.distinguished_name = dn;
    let as_issuer = Issuer::new(wished_params, &requester_key);
    let victim_key = KeyPair::generate().expect("victim key");
    let mut victim = CertificateParams::new(vec!["bank.example.test".to_string()]).expect("p");
    victim.use_authority_key_identifier_extension = false;
    let forged = victim.signed_by(&victim_key, &as_issuer).expect("forge");

    let result = webpki_verify(
        &root.cert_der,
        &[&intermediate.cert_der, &issued.cert_der],
        forged.der(),
        now_ms(),
        Some("bank.example.test"),
        &[],
    );
    assert!(
        matches!(result, Err(webpki::Error::EndEntityUsedAsCa)),
        "a path through an end-entity certificate must not validate: {result:?}"
    );

    // Control: had the requester really been given a CA certificate for the same key and name, the
    // same forgery would validate. So the refusal above is due to CA:FALSE and nothing else.
    let root_key = KeyPair::try_from(&root.key_pkcs8[..]).expect("root key");
    let root_issuer = Issuer::from_ca_cert_der(
        &rustls_pki_types::CertificateDer::from(root.cert_der.clone()),
        &root_key,
    )
    .expect("root issuer");
    let mut real_ca = CertificateParams::new(vec!["sneaky.example.test".to_string()]).expect("p");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "sneaky.example.test");
    real_ca.distinguished_name = dn;
    real_ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    real_ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let real_ca = real_ca
        .signed_by(&requester_key, &root_issuer)
        .expect("control CA");
    webpki_verify(
        &root.cert_der,
        &[real_ca.der()],
        forged.der(),
        now_ms(),
        Some("bank.example.test"),
        &[],
    )
    .expect("the control path validates");
}

#[test]
fn extra_sans_and_extensions_in_the_csr_are_not_copied() {
    let info = parse_csr(include_str!("../../testdata/csr/extra-sans.csr")).expect("parse");
    assert!(info.dns_names.len() > 1 && !info.other_names.is_empty());
    let (root, intermediate) = ca_pair(KeySpec::Rsa { bits: 2048 });
    let issued = Signer::new(intermediate)
        .expect("signer")
        .issue(&profile_from(&info, &["app.example.test"]))
        .expect("issue");
    let cert = parse_cert(&issued.cert_der);
    let facts = leaf_facts(&cert);
    assert_eq!(facts.dns_names, vec!["app.example.test"]);
    assert!(facts.ip_addresses.is_empty());
    assert_eq!(facts.other_names, 0, "no email or URI SANs");
    assert!(facts.server_auth && facts.client_auth);
    assert_eq!(facts.other_ekus, 0, "no codeSigning");
    assert_eq!(cert.subject().to_string(), "CN=app.example.test");
    webpki_verify(
        &root.cert_der,
        &[&intermediate.cert_der],
        &issued.cert_der,
        now_ms(),
        Some("app.example.test"),
        &[],
    )
    .expect("valid for the approved name");
    assert!(webpki_verify(
        &root.cert_der,
        &[&intermediate.cert_der],
        &issued.cert_der,
        now_ms(),
        Some("bank.example.com"),
        &[],
    )
    .is_err());
}

#[test]
fn every_accepted_csr_fixture_can_be_issued_for() {
    let fixtures = [
        include_str!("../../testdata/csr/ec-p256.csr"),
        include_str!("../../testdata/csr/ec-p384.csr"),
        include_str!("../../testdata/csr/ed25519.csr"),
        include_str!("../../testdata/csr/rsa2048.csr"),
        include_str!("../../testdata/csr/rsa2048-pss-sha256.csr"),
    ];
    let (root, intermediate) = ca_pair(KeySpec::EcdsaP384);
    let signer = Signer::new(intermediate).expect("signer");
    for pem in fixtures {
        let info = parse_csr(pem).expect("parse");
        let issued = signer
            .issue(&profile_from(&info, &["fixture.example.test"]))
            .expect("issue");
        assert_eq!(
            parse_cert(&issued.cert_der).public_key().raw,
            &info.spki_der[..]
        );
        webpki_verify(
            &root.cert_der,
            &[&intermediate.cert_der],
            &issued.cert_der,
            now_ms(),
            Some("fixture.example.test"),
            &[],
        )
        .unwrap_or_else(|e| panic!("{}: {e:?}", info.subject));
    }
}

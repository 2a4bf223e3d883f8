use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::inspect::parse_chain_pem;
use crate::testing::{now_ms, DAY_MS};

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("pem").into_contents()
}

/// The properties a peer checks during the mTLS handshake.
fn assert_node_cert(cert_pem: &str, ca_pem: &str, dns: &[&str], ips: &[&str]) {
    let chain =
        parse_chain_pem(&format!("{cert_pem}{ca_pem}")).expect("node cert chains to the CA");
    let leaf = &chain.leaf;
    assert_eq!((leaf.key_algorithm.as_str(), leaf.key_bits), ("EC", 256));
    assert!(!leaf.is_ca);
    let expected: Vec<String> = dns.iter().chain(ips).map(|s| (*s).to_string()).collect();
    assert_eq!(leaf.sans, expected);
    let lifetime_days = (leaf.not_after_ms - leaf.not_before_ms) / DAY_MS;
    assert_eq!(lifetime_days, NODE_VALIDITY_DAYS);

    let der = der_of(cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    let eku = cert
        .extended_key_usage()
        .expect("eku parses")
        .expect("eku present");
    assert!(eku.value.server_auth && eku.value.client_auth);
    let ca_der = der_of(ca_pem);
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("ca x509");
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");
}

#[test]
fn generated_ca_is_a_ten_year_p256_ca() {
    let ca = generate_cluster_ca("test cluster CA").expect("ca");
    let info = parse_chain_pem(&ca.cert_pem).expect("ca cert").leaf;
    assert!(info.is_ca && info.self_signed);
    assert_eq!(info.common_name.as_deref(), Some("test cluster CA"));
    assert_eq!((info.key_algorithm.as_str(), info.key_bits), ("EC", 256));
    assert_eq!(info.signature_algorithm, "ecdsa-with-SHA256");
    assert!(info.not_after_ms > now_ms() + (CA_VALIDITY_DAYS - 1) * DAY_MS);
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    assert!(matches!(
        generate_cluster_ca("  "),
        Err(PkiError::InvalidArgument(_))
    ));
}

#[test]
fn node_certificate_has_both_ekus_and_all_sans() {
    let ca = generate_cluster_ca("test cluster CA").expect("ca");
    let node = issue_node_certificate(
        &ca,
        "node-a",
        &["node-a.internal".to_string(), "localhost".to_string()],
        &[
            "10.1.2.3".parse().expect("ip"),
            "fd00::1".parse().expect("ip"),
        ],
    )
    .expect("node cert");
    assert_node_cert(
        &node.cert_pem,
        &ca.cert_pem,
        &["node-a", "localhost", "node-a.internal"],
        &["10.1.2.3", "fd00::1"],
    );
    let key = crate::inspect::parse_private_key_pem(&node.key_pem).expect("node key");
    assert!(crate::inspect::key_matches_certificate(&key, &der_of(&node.cert_pem)).expect("match"));
}

#[test]
fn bad_node_names_are_rejected() {
    let ca = generate_cluster_ca("test cluster CA").expect("ca");
    assert!(matches!(
        issue_node_certificate(&ca, "", &[], &[]),
        Err(PkiError::InvalidArgument(_))
    ));
    let e = issue_node_certificate(&ca, "node-1", &["nöde.example".to_string()], &[])
        .expect_err("non-ASCII DNS name");
    assert!(e.to_string().contains("is not a valid DNS name"), "{e}");
}

#[test]
fn a_ca_loaded_from_pem_keeps_issuing() {
    let ca = generate_cluster_ca("reloaded CA").expect("ca");
    let loaded = GeneratedCa::from_pem(&ca.cert_pem, &ca.key_pem).expect("load");
    assert_eq!(loaded.cert_pem, ca.cert_pem);
    let node = issue_node_certificate(&loaded, "node-9", &[], &[]).expect("node cert");
    assert_node_cert(&node.cert_pem, &ca.cert_pem, &["node-9", "localhost"], &[]);
}

#[test]
fn loading_a_ca_checks_the_pair() {
    let ca = generate_cluster_ca("one").expect("ca");
    let other = generate_cluster_ca("two").expect("ca");
    let e = GeneratedCa::from_pem(&ca.cert_pem, &other.key_pem).expect_err("mismatched key");
    assert!(
        e.to_string()
            .contains("does not belong to the CA certificate"),
        "{e}"
    );

    let node = issue_node_certificate(&ca, "node-1", &[], &[]).expect("node");
    let e = GeneratedCa::from_pem(&node.cert_pem, &node.key_pem).expect_err("not a CA");
    assert!(e.to_string().contains("not a CA"), "{e}");

    let sec1 = include_str!("testdata/ec-p256-sec1.key");
    let e = GeneratedCa::from_pem(&ca.cert_pem, sec1).expect_err("SEC1 key");
    assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");
}

#[test]
fn write_cluster_tls_writes_a_usable_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("tls");
    let extra_ip: IpAddr = "192.0.2.10".parse().expect("ip");
    let written = write_cluster_tls(
        &out,
        3,
        &["certplane.internal".to_string()],
        &[extra_ip],
        false,
    )
    .expect("write");
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "ca.pem",
            "ca-key.pem",
            "node-1.pem",
            "node-1-key.pem",
            "node-2.pem",
            "node-2-key.pem",
            "node-3.pem",
            "node-3-key.pem"
        ]
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect(name);
    let ca_pem = read("ca.pem");
    for i in 1..=3 {
        let node_name = format!("node-{i}");
        assert_node_cert(
            &read(&format!("node-{i}.pem")),
            &ca_pem,
            &[&node_name, "localhost", "certplane.internal"],
            &["127.0.0.1", "::1", "192.0.2.10"],
        );
        let key = crate::inspect::parse_private_key_pem(&read(&format!("node-{i}-key.pem")))
            .expect("node key");
        let cert_der = der_of(&read(&format!("node-{i}.pem")));
        assert!(crate::inspect::key_matches_certificate(&key, &cert_der).expect("match"));
    }
    GeneratedCa::from_pem(&ca_pem, &read("ca-key.pem")).expect("CA files load back");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["ca-key.pem", "node-1-key.pem", "node-3-key.pem"] {
            let mode = std::fs::metadata(out.join(name))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn write_cluster_tls_refuses_to_replace_a_ca_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_tls(dir.path(), 1, &[], &[], false).expect("first run");
    let first_ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");

    let e = write_cluster_tls(dir.path(), 1, &[], &[], false).expect_err("second run");
    assert!(matches!(e, PkiError::AlreadyExists { .. }), "{e:?}");
    assert_eq!(e.kind(), crate::PkiErrorKind::Conflict);
    assert!(
        e.to_string()
            .ends_with("ca.pem already exists; pass --force to overwrite it"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca"),
        first_ca
    );

    write_cluster_tls(dir.path(), 2, &[], &[], true).expect("forced run");
    assert_ne!(
        std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca"),
        first_ca
    );
    assert!(dir.path().join("node-2-key.pem").exists());
}

#[test]
fn write_cluster_tls_validates_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("tls");
    let e =
        write_cluster_tls(&out, 1, &["bad name ü".to_string()], &[], false).expect_err("bad SAN");
    assert!(matches!(e, PkiError::InvalidArgument(_)), "{e:?}");
    assert!(!out.join("ca.pem").exists());
    assert!(matches!(
        write_cluster_tls(&out, MAX_NODES + 1, &[], &[], false),
        Err(PkiError::InvalidArgument(_))
    ));
}

//! Governed issuance end to end on a 3-node in-process cluster with a key-encryption key: zones with
//! inherited and locked policy, CEL rules, requests through followers, the built-in CA, independent
//! path validation of what it issues (rustls-webpki), the security cases a CSR or a name can try,
//! idempotent retries, renew, revoke and the CRL, audited key export, and a scan for plaintext keys.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_for, TestCluster};
use x509_parser::prelude::FromDer;

const CSR_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../certplane-pki/src/testdata/csr"
);

fn csr(name: &str) -> String {
    std::fs::read_to_string(format!("{CSR_DIR}/{name}")).expect("test CSR")
}

struct Issuing {
    cluster: TestCluster,
    _kek_dir: tempfile::TempDir,
}

async fn start() -> Issuing {
    let kek_dir = tempfile::tempdir().expect("tempdir");
    let kek = kek_dir.path().join("kek");
    certplane_pki::Kek::generate_file(&kek).expect("kek");
    let cluster = TestCluster::start(3, |c| c.kek_file = Some(kek.clone())).await;
    Issuing {
        cluster,
        _kek_dir: kek_dir,
    }
}

async fn send(
    cluster: &TestCluster,
    node: u64,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    idem: Option<&str>,
) -> (u16, Value) {
    let mut req = cluster
        .http
        .request(method, format!("{}{path}", cluster.node(node).url()))
        .bearer_auth(&cluster.token);
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put_zone(cluster: &TestCluster, path: &str, policy: Value) -> (u16, Value) {
    let url = if path == "/" {
        "/v1/zones/%2F".to_string()
    } else {
        format!("/v1/zones{path}")
    };
    send(
        cluster,
        1,
        reqwest::Method::PUT,
        &url,
        Some(&json!({ "policy": policy })),
        None,
    )
    .await
}

/// Root: names under .example.test, 90 days at most. /prod locks 30 days and adds a CEL rule.
/// /prod/payments narrows the domains (a default may be overridden).
async fn standard_zones(cluster: &TestCluster) {
    let (s, v) = put_zone(
        cluster,
        "/",
        json!({
            "allowed_domains": { "value": [".example.test"] },
            "max_validity": { "value": "90d" },
            "allow_ip_sans": { "value": true }
        }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = put_zone(
        cluster,
        "/prod",
        json!({
            "max_validity": { "value": "30d", "locked": true },
            "rules": [{
                "name": "team-tag",
                "expression": "has(request.tags.team) && request.tags.team != \"\"",
                "message": "prod certificates need a team tag"
            }]
        }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = put_zone(
        cluster,
        "/prod/payments",
        json!({ "allowed_domains": { "value": [".payments.example.test"] } }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

fn request(zone: &str, sans: &[&str]) -> Value {
    json!({ "zone": zone, "common_name": sans[0], "sans": sans, "key": { "type": "ecdsa_p256" },
            "owner": "team-payments", "tags": { "team": "payments" } })
}

fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem)
        .expect("PEM")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

/// Validate `chain_pem` (leaf, intermediate, root) with rustls-webpki: the root is the only trust
/// anchor, the intermediate is presented, the leaf must be valid for serverAuth and `name`.
fn verify_chain(chain_pem: &str, name: &str) {
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let blocks = pem_blocks(chain_pem);
    assert_eq!(blocks.len(), 3, "leaf, intermediate, root");
    let root = CertificateDer::from(blocks[2].clone());
    let anchor = webpki::anchor_from_trusted_cert(&root).expect("trust anchor");
    let leaf = CertificateDer::from(blocks[0].clone());
    let ee = webpki::EndEntityCert::try_from(&leaf).expect("end entity");
    let intermediates = [CertificateDer::from(blocks[1].clone())];
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .expect("the chain verifies");
    let server_name = ServerName::try_from(name.to_string()).expect("name");
    ee.verify_is_valid_for_subject_name(&server_name)
        .expect("valid for the name");
}

/// The issued leaf's SANs and basicConstraints, read back with x509-parser.
fn leaf_facts(chain_pem: &str) -> (Vec<String>, bool, i64) {
    use x509_parser::extensions::GeneralName;
    let blocks = pem_blocks(chain_pem);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&blocks[0]).expect("leaf");
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(ip) if ip.len() == 4 => {
                    names.push(format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]))
                }
                other => names.push(format!("{other:?}")),
            }
        }
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    let validity = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    (names, is_ca, validity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_inheritance_and_issuance_through_followers() {
    let Issuing { cluster, _kek_dir } = start().await;
    standard_zones(&cluster).await;

    // The built-in CA exists from initialisation.
    let (s, issuers) = send(&cluster, 2, reqwest::Method::GET, "/v1/issuers", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(issuers[0]["name"], "builtin");
    assert_eq!(issuers[0]["subject"], "CN=certplane Intermediate CA");

    // A lock set by /prod cannot be overridden below it; the refusal names the locking zone.
    let (s, v) = put_zone(
        &cluster,
        "/prod/payments",
        json!({ "max_validity": { "value": "60d" } }),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["rule"], "max_validity");
    assert_eq!(v["error"]["details"][0]["zone"], "/prod");

    // The effective policy explains where each value came from.
    let (s, eff) = send(
        &cluster,
        3,
        reqwest::Method::GET,
        "/v1/zones/prod/payments/effective",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{eff}");
    assert_eq!(eff["policy"]["max_validity"]["value"], "30d");
    assert_eq!(eff["policy"]["max_validity"]["zone"], "/prod");
    assert_eq!(eff["policy"]["allowed_domains"]["zone"], "/prod/payments");
    assert_eq!(eff["policy"]["max_sans"]["zone"], "(built-in)");
    assert_eq!(eff["policy"]["rules"][0]["zone"], "/prod");

    // A dry run refuses with every violation and stores nothing.
    let mut bad = request(
        "/prod/payments",
        &["api.payments.example.test", "evil.example.test"],
    );
    bad["validity"] = json!("45d");
    bad["tags"] = json!({});
    let (s, ev) = send(
        &cluster,
        2,
        reqwest::Method::POST,
        "/v1/zones/prod/payments/evaluate",
        Some(&bad),
        None,
    )
    .await;
    assert_eq!(s, 200, "{ev}");
    assert_eq!(ev["allowed"], false);
    let mut rules: Vec<String> = ev["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}@{}",
                v["rule"].as_str().unwrap(),
                v["zone"].as_str().unwrap()
            )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            "allowed_domains@/prod/payments",
            "max_validity@/prod",
            "rule:team-tag@/prod"
        ]
    );

    // The real submission is refused the same way, with the request id, and is recorded rejected.
    let (s, v) = send(
        &cluster,
        3,
        reqwest::Method::POST,
        "/v1/certificate-requests?wait=30s",
        Some(&bad),
        None,
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "policy_violation");
    assert_eq!(v["error"]["details"].as_array().unwrap().len(), 3);
    let rejected_id = v["error"]["id"].as_str().expect("request id").to_string();
    let (s, r) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        &format!("/v1/certificate-requests/{rejected_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(r["state"], "rejected");
    assert_eq!(r["violations"].as_array().unwrap().len(), 3);

    // A compliant request through a follower is issued by the leader's worker.
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let mut good = request(
        "/prod/payments",
        &["API.Payments.Example.Test.", "10.1.2.3"],
    );
    good["validity"] = json!("20d");
    let (s, v) = send(
        &cluster,
        follower,
        reqwest::Method::POST,
        "/v1/certificate-requests?wait=30s",
        Some(&good),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["state"], "issued", "{v}");
    assert_eq!(v["sans"], json!(["api.payments.example.test", "10.1.2.3"]));
    let chain = v["certificate"]["chain_pem"]
        .as_str()
        .expect("chain")
        .to_string();
    verify_chain(&chain, "api.payments.example.test");
    let (names, is_ca, validity) = leaf_facts(&chain);
    assert_eq!(names, vec!["api.payments.example.test", "10.1.2.3"]);
    assert!(!is_ca);
    assert!(validity <= 20 * 86_400, "validity {validity}s");
    assert_eq!(v["certificate"]["issued_by"], "builtin");
    assert_eq!(
        v["policy_versions"],
        json!([["/", 2], ["/prod", 1], ["/prod/payments", 1]])
    );

    // Without a validity the zone's maximum applies; listing by state finds both requests.
    let (s, v) = send(
        &cluster,
        1,
        reqwest::Method::POST,
        "/v1/certificate-requests?wait=30s",
        Some(&request("/prod/payments", &["b.payments.example.test"])),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["validity"], "30d");
    let (s, list) = send(
        &cluster,
        2,
        reqwest::Method::GET,
        "/v1/certificate-requests?state=issued",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, list) = send(
        &cluster,
        2,
        reqwest::Method::GET,
        "/v1/certificate-requests?zone=/prod/payments&state=rejected",
        None,
        None,
    )
    .await;
    assert_eq!(list["items"][0]["id"], rejected_id.as_str());

    cluster.wait_converged().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn security_cases_are_refused_or_neutralised() {
    let Issuing { cluster, _kek_dir } = start().await;
    let (s, v) = put_zone(
        &cluster,
        "/",
        json!({ "allowed_domains": { "value": [".example.test", ".example.com"] }, "allow_wildcards": { "value": true } }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let submit = |body: Value| {
        let cluster = &cluster;
        async move {
            send(
                cluster,
                2,
                reqwest::Method::POST,
                "/v1/certificate-requests?wait=30s",
                Some(&body),
                None,
            )
            .await
        }
    };

    // A CSR asking for CA:TRUE and keyCertSign gets a plain leaf.
    let (s, v) = submit(json!({ "zone": "/", "csr_pem": csr("requests-ca.csr") })).await;
    assert_eq!(s, 201, "{v}");
    let chain = v["certificate"]["chain_pem"].as_str().expect("issued");
    let (names, is_ca, _) = leaf_facts(chain);
    assert!(!is_ca, "a CSR must never obtain CA:TRUE");
    assert_eq!(names, vec!["evil-ca.example.test"]);
    assert!(
        v["warnings"][0].as_str().unwrap().contains("CA rights"),
        "{v}"
    );
    verify_chain(chain, "evil-ca.example.test");

    // A CSR listing SANs beyond the request gets only the requested names.
    let (s, v) = submit(
        json!({ "zone": "/", "csr_pem": csr("extra-sans.csr"), "sans": ["app.example.test"] }),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (names, _, _) = leaf_facts(v["certificate"]["chain_pem"].as_str().unwrap());
    assert_eq!(names, vec!["app.example.test"]);
    // ... and when it asks with the CSR's own names, policy sees (and refuses) all of them.
    let (s, v) = submit(json!({ "zone": "/", "csr_pem": csr("extra-sans.csr") })).await;
    assert_eq!(s, 422, "{v}");

    // Wildcards on public suffixes, misplaced wildcards: never issuable.
    for name in ["*.com", "*.co.uk", "www.*.example.test", "f*o.example.test"] {
        let (s, v) = submit(json!({ "zone": "/", "sans": [name] })).await;
        assert_eq!(s, 422, "{name}: {v}");
        assert_eq!(v["error"]["details"][0]["rule"], "names", "{name}: {v}");
    }
    // A look-alike of an allowed domain (Cyrillic 'е') is a different name, outside the rules.
    let (s, v) = submit(json!({ "zone": "/", "sans": ["www.\u{0435}xample.test"] })).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["rule"], "allowed_domains");
    assert!(
        v["error"]["details"][0]["value"]
            .as_str()
            .unwrap()
            .contains("xn--"),
        "{v}"
    );
    // A trailing dot or mixed case does not slip past the suffix check.
    let (s, v) = submit(json!({ "zone": "/", "sans": ["EVILexample.test."] })).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = submit(json!({ "zone": "/", "sans": ["Shop.Example.COM."] })).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["sans"], json!(["shop.example.com"]));

    // Weak keys, weak or broken signatures: the CSR is refused before anything is stored.
    for file in [
        "rsa1024.csr",
        "ec-p192.csr",
        "rsa2048-sha1.csr",
        "ec-p256-sha1.csr",
        "rsa2048-md5.csr",
        "dsa2048.csr",
    ] {
        let (s, v) = submit(json!({ "zone": "/", "csr_pem": csr(file) })).await;
        assert_eq!(s, 400, "{file}: {v}");
        assert_eq!(v["error"]["code"], "invalid_csr", "{file}: {v}");
    }
    let good = csr("ec-p256.csr");
    let mut der = pem_blocks(&good).remove(0);
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let (s, v) = submit(json!({ "zone": "/", "csr_pem": tampered })).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = submit(json!({ "zone": "/", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" })).await;
    assert_eq!(s, 400, "{v}");
    // An RSA-1024 key spec is refused as well.
    let (s, v) = submit(json!({ "zone": "/", "sans": ["rsa.example.test"], "key": { "type": "rsa", "bits": 1024 } })).await;
    assert_eq!(s, 400, "{v}");
    // Unknown zones and malformed bodies are clear 4xx answers.
    let (s, _) = submit(json!({ "zone": "/nowhere", "sans": ["a.example.test"] })).await;
    assert_eq!(s, 404);
    let (s, _) = submit(json!({ "zone": "/", "sans": "not-a-list" })).await;
    assert_eq!(s, 400);
    let (s, _) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        "/v1/certificate-requests/req_0000",
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        "/v1/certificate-requests/../etc",
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_renew_revoke_crl_and_key_export() {
    let Issuing { cluster, _kek_dir } = start().await;
    let (s, _) = put_zone(
        &cluster,
        "/",
        json!({ "allowed_domains": { "value": [".example.test"] } }),
    )
    .await;
    assert_eq!(s, 200);

    // Ten concurrent retries with one Idempotency-Key yield one request and one certificate.
    let body = json!({ "zone": "/", "sans": ["idem.example.test"] });
    let mut tasks = Vec::new();
    for i in 0..10u64 {
        let http = cluster.http.clone();
        let url = format!(
            "{}/v1/certificate-requests?wait=30s",
            cluster.node(i % 3 + 1).url()
        );
        let token = cluster.token.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Idempotency-Key", "idem-test-1")
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.expect("json");
                if status != 503 {
                    return (status, v);
                }
            }
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, v) = t.await.expect("task");
        assert!(status == 201 || status == 202, "{status} {v}");
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one request for ten retries: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let issued: Value = wait_for(
        "the request to be issued",
        Duration::from_secs(20),
        || async {
            let (_, v) = send(
                &cluster,
                1,
                reqwest::Method::GET,
                &format!("/v1/certificate-requests/{id}"),
                None,
                None,
            )
            .await;
            (v["state"] == "issued").then_some(v)
        },
    )
    .await;
    let (_, certs) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        "/v1/certificates?name=idem.example.test",
        None,
        None,
    )
    .await;
    assert_eq!(certs["items"].as_array().unwrap().len(), 1, "{certs}");
    let cert_id = issued["certificate_id"].as_str().unwrap().to_string();

    // Key export: audited, and the key belongs to the certificate.
    let (s, key) = send(
        &cluster,
        2,
        reqwest::Method::GET,
        &format!("/v1/certificates/{cert_id}/private-key"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{key}");
    let key_pem = key["private_key_pem"].as_str().unwrap().to_string();
    let parsed = certplane_pki::parse_private_key_pem(&key_pem).expect("key");
    let leaf_der = pem_blocks(issued["certificate"]["chain_pem"].as_str().unwrap()).remove(0);
    assert!(certplane_pki::key_matches_certificate(&parsed, &leaf_der).unwrap());
    let (_, audit) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        "/v1/audit?action=certificate.export_key",
        None,
        None,
    )
    .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

    // Renew: a successor under the current policy, the old one linked as superseded.
    let (s, renewal) = send(
        &cluster,
        3,
        reqwest::Method::POST,
        &format!("/v1/certificates/{cert_id}/renew?wait=30s"),
        None,
        Some("renew-1"),
    )
    .await;
    assert_eq!(s, 201, "{renewal}");
    assert_eq!(renewal["state"], "issued");
    assert_eq!(renewal["renewal_of"], cert_id.as_str());
    let new_id = renewal["certificate_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, cert_id);
    let (_, old) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        &format!("/v1/certificates/{cert_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(old["superseded_by"], new_id.as_str());
    let (s, again) = send(
        &cluster,
        1,
        reqwest::Method::POST,
        &format!("/v1/certificates/{cert_id}/renew?wait=30s"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 409, "{again}");
    // A renewal may rotate to the requester's own key with a new CSR; names stay the certificate's.
    let (s, rotated) = send(
        &cluster,
        2,
        reqwest::Method::POST,
        &format!("/v1/certificates/{new_id}/renew?wait=30s"),
        Some(&json!({ "csr_pem": csr("ec-p384.csr") })),
        None,
    )
    .await;
    assert_eq!(s, 201, "{rotated}");
    assert_eq!(rotated["key_source"], "csr");
    assert_eq!(rotated["key_type"], "ecdsa_p384");
    assert_eq!(rotated["sans"], json!(["idem.example.test"]));

    // Revoke: listed on the issuer's CRL, which verifies under the intermediate.
    let (s, revoked) = send(
        &cluster,
        2,
        reqwest::Method::POST,
        &format!("/v1/certificates/{cert_id}/revoke"),
        Some(&json!({ "reason": "keyCompromise" })),
        None,
    )
    .await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revocation_reason"], "key_compromise");
    let (s, bad) = send(
        &cluster,
        2,
        reqwest::Method::POST,
        &format!("/v1/certificates/{new_id}/revoke"),
        Some(&json!({ "reason": "because" })),
        None,
    )
    .await;
    assert_eq!(s, 400, "{bad}");
    let crl = cluster
        .http
        .get(format!("{}/v1/issuers/builtin/crl", cluster.node(3).url()))
        .send()
        .await
        .expect("crl");
    assert_eq!(crl.status().as_u16(), 200);
    assert_eq!(crl.headers()["content-type"], "application/pkix-crl");
    let crl_der = crl.bytes().await.unwrap().to_vec();
    webpki::OwnedCertRevocationList::from_der(&crl_der).expect("rustls-webpki parses the CRL");
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der)
        .expect("x509-parser parses the CRL");
    let intermediate_der =
        pem_blocks(issued["certificate"]["chain_pem"].as_str().unwrap()).remove(1);
    let (_, intermediate) =
        x509_parser::certificate::X509Certificate::from_der(&intermediate_der).expect("CA");
    crl.verify_signature(intermediate.public_key())
        .expect("the CRL is signed by the issuing CA");
    let listed: Vec<(Vec<u8>, Option<u8>)> = crl
        .iter_revoked_certificates()
        .map(|r| (r.raw_serial().to_vec(), r.reason_code().map(|(_, c)| c.0)))
        .collect();
    let serial = hex::decode(old["serial"].as_str().unwrap()).unwrap();
    let new_serial = hex::decode(renewal["certificate"]["serial"].as_str().unwrap()).unwrap();
    let strip = |s: &[u8]| {
        s.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(strip(&listed[0].0), strip(&serial));
    assert_eq!(listed[0].1, Some(1), "reason keyCompromise (1)");
    assert!(listed.iter().all(|(s, _)| strip(s) != strip(&new_serial)));

    // Revocation makes the CRL newer (its number is its thisUpdate in seconds).
    let (_, issuer) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        "/v1/issuers/builtin",
        None,
        None,
    )
    .await;
    assert_eq!(issuer["revoked_count"], 1);
    assert_eq!(issuer["issued_count"], 3);

    // Keys are never in the clear: not in any node's files, nor in any state-machine value.
    let key_der = parsed.der().to_vec();
    let mut nodes = Vec::new();
    for n in cluster.running() {
        let report = cluster.get(n.id, "/v1/sys/node").await;
        assert_eq!(report.0, 200);
        nodes.push(n.config.data_dir.clone());
    }
    for n in cluster.running() {
        let view = n.handle.as_ref().unwrap().node.view();
        for ks in certplane_core::Keyspace::ALL {
            use certplane_core::StateRead;
            for (_, value) in view.scan(ks, b"", b"", usize::MAX).expect("scan") {
                assert_no_plaintext_key(&value, &key_der, &format!("{ks:?}"));
            }
        }
    }
    // Stop the nodes (their files stay until the cluster is dropped) and read every file.
    let ids: Vec<u64> = cluster.running().map(|n| n.id).collect();
    let mut cluster = cluster;
    for id in ids {
        cluster.stop(id).await;
    }
    let mut files = 0;
    for dir in nodes {
        for entry in walk(&dir) {
            let bytes = std::fs::read(&entry).expect("read");
            assert_no_plaintext_key(&bytes, &key_der, &entry.display().to_string());
            files += 1;
        }
    }
    assert!(files > 10, "scanned only {files} files");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_imported_internal_ca_issues_where_policy_allows_it() {
    let Issuing { cluster, _kek_dir } = start().await;
    let ca_dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../certplane-pki/src/testdata/ca"
    );
    let cert_pem = std::fs::read_to_string(format!("{ca_dir}/openssl-rsa3072-ca.pem")).unwrap();
    let key_pem =
        std::fs::read_to_string(format!("{ca_dir}/openssl-rsa3072-ca-pkcs1.key")).unwrap();
    let body = json!({ "name": "internal", "cert_pem": cert_pem, "key_pem": key_pem });
    let (s, v) = send(
        &cluster,
        2,
        reqwest::Method::POST,
        "/v1/issuers",
        Some(&body),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["imported"], true);
    assert!(v.get("key").is_none(), "no key material in the answer");
    let (s, v) = send(
        &cluster,
        3,
        reqwest::Method::POST,
        "/v1/issuers",
        Some(&body),
        None,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let bad = json!({ "name": "broken", "cert_pem": cert_pem, "key_pem": csr("ec-p256.csr") });
    let (s, _) = send(
        &cluster,
        1,
        reqwest::Method::POST,
        "/v1/issuers",
        Some(&bad),
        None,
    )
    .await;
    assert_eq!(s, 400);

    // /internal may only use the imported CA (its default); the root zone keeps the built-in one.
    let (s, v) = put_zone(
        &cluster,
        "/internal",
        json!({
            "allowed_issuers": { "value": ["internal"], "locked": true },
            "default_issuer": { "value": "internal" }
        }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&cluster, 1, reqwest::Method::POST, "/v1/certificate-requests?wait=30s",
        Some(&json!({ "zone": "/internal", "sans": ["db.internal.example.test"], "key": { "type": "rsa", "bits": 2048 } })), None).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["issuer"], "internal");
    let chain = v["certificate"]["chain_pem"].as_str().unwrap();
    let blocks = pem_blocks(chain);
    assert_eq!(blocks.len(), 2, "leaf and the imported CA");
    {
        use rustls_pki_types::{CertificateDer, UnixTime};
        let anchor_der = CertificateDer::from(blocks[1].clone());
        let anchor = webpki::anchor_from_trusted_cert(&anchor_der).expect("anchor");
        let leaf = CertificateDer::from(blocks[0].clone());
        webpki::EndEntityCert::try_from(&leaf)
            .expect("leaf")
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                &[],
                UnixTime::now(),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .expect("issued by the imported CA");
    }
    let (s, v) = send(&cluster, 1, reqwest::Method::POST, "/v1/certificate-requests?wait=30s",
        Some(&json!({ "zone": "/internal", "sans": ["x.internal.example.test"], "issuer": "builtin" })), None).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["details"][0]["rule"], "allowed_issuers");
    assert_eq!(v["error"]["details"][0]["zone"], "/internal");
    let (s, v) = send(
        &cluster,
        1,
        reqwest::Method::POST,
        "/v1/certificate-requests?wait=30s",
        Some(&json!({ "zone": "/", "sans": ["y.example.test"] })),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["issuer"], "builtin");

    // Every policy version stays readable.
    let (s, v) = put_zone(
        &cluster,
        "/internal",
        json!({
            "allowed_issuers": { "value": ["internal"], "locked": true },
            "default_issuer": { "value": "internal" },
            "max_validity": { "value": "30d" }
        }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["version"], 2);
    let (s, v1) = send(
        &cluster,
        2,
        reqwest::Method::GET,
        "/v1/zones/internal?version=1",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(v1["policy"].get("max_validity").is_none(), "{v1}");
    let (s, _) = send(
        &cluster,
        2,
        reqwest::Method::GET,
        "/v1/zones/internal?version=9",
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (_, audit) = send(
        &cluster,
        1,
        reqwest::Method::GET,
        "/v1/audit?action=zone.put",
        None,
        None,
    )
    .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_zone_issuer_and_request_input_gets_clear_4xx() {
    let Issuing { cluster, _kek_dir } = start().await;
    let raw = |method: reqwest::Method, path: &str, body: &str| {
        let req = cluster
            .http
            .request(method, format!("{}{path}", cluster.node(2).url()))
            .bearer_auth(&cluster.token)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let cases: Vec<(reqwest::Method, &str, String, u16, &str)> = vec![
        (
            reqwest::Method::PUT,
            "/v1/zones/prod",
            "{not json".into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::PUT,
            "/v1/zones/prod",
            r#"{"policy":{"max_validty":{"value":"1d"}}}"#.into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::PUT,
            "/v1/zones/prod",
            r#"{"policy":{"max_validity":{"value":"soon"}}}"#.into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::PUT,
            "/v1/zones/prod",
            r#"{"policy":{"allowed_domains":{"value":["*.com"]}}}"#.into(),
            400,
            "invalid_policy",
        ),
        (
            reqwest::Method::PUT,
            "/v1/zones/prod",
            format!(
                r#"{{"policy":{{"rules":[{{"name":"x","message":"m","expression":"{}"}}]}}}}"#,
                "1 + ".repeat(700) + "1"
            ),
            400,
            "invalid_policy",
        ),
        (
            reqwest::Method::PUT,
            "/v1/zones/Bad%20Zone",
            r#"{"policy":{}}"#.into(),
            400,
            "invalid_argument",
        ),
        (
            reqwest::Method::PUT,
            "/v1/zones/a/b",
            r#"{"policy":{}}"#.into(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::PUT,
            "/v1/zones/prod/effective",
            r#"{"policy":{}}"#.into(),
            400,
            "invalid_argument",
        ),
        (
            reqwest::Method::GET,
            "/v1/zones/nowhere",
            String::new(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/v1/zones/nowhere/effective",
            String::new(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            "/v1/zones/nowhere/evaluate",
            r#"{"sans":["a.example.test"]}"#.into(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            "/v1/zones/evaluate",
            r#"{"zone":"/other","sans":["a.example.test"]}"#.into(),
            400,
            "invalid_argument",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificate-requests",
            r#"{"sans":["a.example.test"]}"#.into(),
            400,
            "invalid_argument",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificate-requests",
            r#"{"zone":"/","sans":["a.example.test"],"key":{"type":"dsa"}}"#.into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificate-requests",
            r#"{"zone":"/","sans":["a.example.test"],"key":{"type":"rsa","bits":1000}}"#.into(),
            400,
            "invalid_key_spec",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificate-requests",
            r#"{"zone":"/","sans":["a.example.test"],"csr_pem":"x","key":{"type":"ed25519"}}"#
                .into(),
            400,
            "invalid_argument",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificate-requests",
            r#"{"zone":"/","sans":["a.example.test"],"validity":"-5d"}"#.into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificate-requests",
            format!(
                r#"{{"zone":"/","sans":[{}]}}"#,
                vec!["\"a.example.test\""; 1001].join(",")
            ),
            400,
            "invalid_argument",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificate-requests?wait=forever",
            r#"{"zone":"/","sans":["a.example.test"]}"#.into(),
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/certificate-requests?state=done",
            String::new(),
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/certificate-requests?cursor=zz",
            String::new(),
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::POST,
            "/v1/issuers",
            r#"{"name":"Bad Name","cert_pem":"x","key_pem":"y"}"#.into(),
            400,
            "invalid_argument",
        ),
        (
            reqwest::Method::POST,
            "/v1/issuers",
            r#"{"name":"ok","cert_pem":"x","key_pem":"y"}"#.into(),
            400,
            "invalid_certificate",
        ),
        (
            reqwest::Method::GET,
            "/v1/issuers/nobody",
            String::new(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/v1/issuers/nobody/crl",
            String::new(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/v1/issuers/builtin/crl?format=xml",
            String::new(),
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::GET,
            "/v1/issuers/builtin/issued?cursor=..",
            String::new(),
            400,
            "invalid_query",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificates/crt_00/renew",
            String::new(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificates/crt_00/renew",
            r#"{"validity":"1d","extra":1}"#.into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::POST,
            "/v1/certificates/crt_00/revoke",
            r#"{"reason":"keyCompromise"}"#.into(),
            404,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/v1/certificates/crt_00/private-key",
            String::new(),
            404,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (s, v) = raw(method.clone(), path, &body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {v}"
        );
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    // The node still serves, and the root zone is untouched.
    let (s, v) = send(
        &cluster,
        2,
        reqwest::Method::GET,
        "/v1/zones/%2F",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["version"], 1);
    cluster.shutdown().await;
}

/// PKCS#8 `PrivateKeyInfo` prefix of every EC key: version 0, id-ecPublicKey.
const PKCS8_EC_PREFIX: &[u8] = &[
    0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
];

fn assert_no_plaintext_key(bytes: &[u8], key_der: &[u8], place: &str) {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(b"PRIVATE KEY-----"),
        "a PEM private key in {place}"
    );
    assert!(!contains(key_der), "the exported key's DER in {place}");
    assert!(!contains(PKCS8_EC_PREFIX), "a PKCS#8 EC key in {place}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The renewal scheduler runs on a clock the test moves: a certificate valid for 30 days renews
/// once that clock passes its renewal time (`renew_before` 10 days, spread per certificate), through
/// the real path (renewal request, policy, issuance), without waiting 20 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_renewal_scheduler_runs_on_a_clock_the_test_moves() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let kek_dir = tempfile::tempdir().expect("tempdir");
    let kek = kek_dir.path().join("kek");
    certplane_pki::Kek::generate_file(&kek).expect("kek");
    let offset = Arc::new(AtomicI64::new(0));
    let clock = certplane_server::workers::clock::SchedulerClock::with_offset(offset.clone());
    let cluster = TestCluster::start(3, move |c| {
        c.kek_file = Some(kek.clone());
        c.deploy.clock = clock.clone();
    })
    .await;
    let leader = cluster.leader().await;
    let (status, body) = send(
        &cluster,
        leader,
        reqwest::Method::PUT,
        "/v1/zones/short",
        Some(&json!({"policy": {
            "max_validity": {"value": "30d"},
            "notify_before": {"value": "15d"},
            "renew_before": {"value": "10d"},
        }})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &cluster,
        leader,
        reqwest::Method::POST,
        "/v1/certificate-requests?wait=20s",
        Some(&json!({"zone": "/short", "common_name": "a.short.example", "key": {"type": "ecdsa_p256"}})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["certificate_id"].as_str().expect("issued").to_string();
    let (_, cert) = send(
        &cluster,
        leader,
        reqwest::Method::GET,
        &format!("/v1/certificates/{id}"),
        None,
        None,
    )
    .await;
    assert!(cert["superseded_by"].is_null(), "{cert}");
    assert!(cert["renewal"]["due_at"].is_string(), "{cert}");

    // Twenty-five days later, by the scheduler's clock: past the renewal time, before expiry.
    offset.store(25 * 86_400_000, Ordering::Relaxed);
    let successor = wait_for("the renewal", Duration::from_secs(30), || async {
        let leader = cluster.leader().await;
        let (_, c) = send(
            &cluster,
            leader,
            reqwest::Method::GET,
            &format!("/v1/certificates/{id}"),
            None,
            None,
        )
        .await;
        c["superseded_by"].as_str().map(str::to_string)
    })
    .await;
    // Back to the present: the successor (due 20 days from now) is not renewed in turn.
    offset.store(0, Ordering::Relaxed);
    let (status, next) = send(
        &cluster,
        leader,
        reqwest::Method::GET,
        &format!("/v1/certificates/{successor}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["supersedes"], id.as_str());
    assert_eq!(next["sans"], json!(["a.short.example"]));
    let request = next["request_id"].as_str().expect("renewal request");
    assert!(request.starts_with("renew-"), "{request}");
    // The renewal worker signed it ahead: submitted and issued by one entry.
    let trail = request_trail(&cluster, leader, request).await;
    assert_issued_by_one_entry(&trail);
    assert_eq!(trail[0]["actor"], "system:renewal", "{trail:?}");
    cluster.shutdown().await;
}

/// Decision 0015 on the real path: a request approved at once, sent to a follower, is signed by
/// that follower and issued by its own log entry. The answer is 201 with a certificate that
/// verifies, and the audit export shows the requester's submission and the issuance worker's
/// outcome at one log index (the worker's queue would have put the outcome in a later entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_approved_at_once_is_issued_by_its_own_log_entry() {
    let Issuing { cluster, _kek_dir } = start().await;
    let (s, v) = put_zone(
        &cluster,
        "/",
        json!({ "allowed_domains": { "value": [".example.test"] } }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let (s, v) = send(
        &cluster,
        follower,
        reqwest::Method::POST,
        "/v1/certificate-requests",
        Some(&json!({ "zone": "/", "sans": ["fast.example.test"] })),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["state"], "issued", "{v}");
    verify_chain(
        v["certificate"]["chain_pem"]
            .as_str()
            .expect("the answer carries the chain"),
        "fast.example.test",
    );
    let trail = request_trail(&cluster, leader, v["id"].as_str().expect("id")).await;
    assert_ne!(trail[0]["actor"], "system:issuance");
    assert_issued_by_one_entry(&trail);
    cluster.shutdown().await;
}

/// The audit records of request `id`, in chain order, from node `node`'s export.
async fn request_trail(cluster: &TestCluster, node: u64, id: &str) -> Vec<Value> {
    let export = cluster
        .http
        .get(format!("{}/v1/audit/export", cluster.node(node).url()))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let object = format!("request/{id}");
    export
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|r| r["object"] == object.as_str())
        .collect()
}

/// The trail of a request signed ahead (decision 0015): its submission, then the issuance worker's
/// outcome, both accepted at one log index (through the queue the outcome lands in a later entry).
fn assert_issued_by_one_entry(trail: &[Value]) {
    let actions: Vec<&str> = trail.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        vec!["request.submit", "request.issued"],
        "{trail:?}"
    );
    assert_eq!(trail[1]["actor"], "system:issuance", "{trail:?}");
    assert_eq!(trail[0]["log_index"], trail[1]["log_index"], "{trail:?}");
    assert!(trail.iter().all(|r| r["outcome"] == "ok"), "{trail:?}");
}

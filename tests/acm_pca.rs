//! Pattern 2 end to end: certplane governs, AWS Private CA issues. A 3-node cluster talks to moto in
//! server mode (ACM and ACM PCA) through the recording, fault-injecting proxy, with the real AWS SDK;
//! awscli reads back what AWS holds.
//!
//! What these tests show: a `csr` request passes policy and approval, moto's CA signs it, the
//! certificate verifies against the CA's certificate and lands in the inventory with its ARN; an
//! `acm-native` request is requested in ACM with the CA's ARN and certplane never holds its key; a
//! request that fails policy causes no AWS call; a revocation reaches the CA; a lost answer and a
//! leader killed between the AWS call and its recorded outcome still give one certificate per
//! request; the built-in CA with ACM import runs beside both PCA modes in one cluster.
//!
//! moto ignores the IdempotencyToken of IssueCertificate (../shared/reference/moto.md), so the proxy
//! models AWS's documented behaviour (`idempotency`: a repeated token gets the first answer) and
//! counts the calls that reach moto: certplane's part, sending the same token on every try and
//! recording each answer before the next step, is what is tested.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::aws::{aws, aws_env, proxy_config, proxy_log, start_aws};
use support::{wait_for, TestCluster};

/// Each test runs moto, a proxy and a cluster; one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REGION: &str = "eu-west-1";

fn kek(dir: &Path) -> PathBuf {
    let path = dir.join("kek");
    certplane_pki::Kek::generate_file(&path).expect("kek");
    path
}

async fn start_cluster(dir: &Path, proxy: &str) -> TestCluster {
    let kek = kek(dir);
    let proxy = proxy.to_string();
    TestCluster::start(3, move |c| {
        c.kek_file = Some(kek.clone());
        c.deploy.aws_endpoint_url = Some(proxy.clone());
        c.deploy.retry_base_ms = 300;
        c.deploy.acm_check_interval_ms = 500;
    })
    .await
}

/// A root CA in moto, ACTIVE: create, sign its own CSR with the root template, import the
/// certificate. Returns (CA ARN, CA certificate PEM).
fn create_ca(moto: &str, dir: &Path) -> (String, String) {
    let created = aws(
        moto,
        REGION,
        &[
            "acm-pca",
            "create-certificate-authority",
            "--certificate-authority-type",
            "ROOT",
            "--certificate-authority-configuration",
            r#"{"KeyAlgorithm":"RSA_2048","SigningAlgorithm":"SHA256WITHRSA","Subject":{"CommonName":"certplane test PCA root"}}"#,
        ],
    );
    let ca_arn = created["CertificateAuthorityArn"]
        .as_str()
        .expect("CA ARN")
        .to_string();
    let csr = aws(
        moto,
        REGION,
        &[
            "acm-pca",
            "get-certificate-authority-csr",
            "--certificate-authority-arn",
            &ca_arn,
        ],
    )["Csr"]
        .as_str()
        .expect("CA CSR")
        .to_string();
    let csr_file = dir.join("ca.csr");
    std::fs::write(&csr_file, csr).expect("write CSR");
    let issued = aws(
        moto,
        REGION,
        &[
            "acm-pca",
            "issue-certificate",
            "--certificate-authority-arn",
            &ca_arn,
            "--csr",
            &format!("fileb://{}", csr_file.display()),
            "--signing-algorithm",
            "SHA256WITHRSA",
            "--template-arn",
            "arn:aws:acm-pca:::template/RootCACertificate/V1",
            "--validity",
            "Value=3650,Type=DAYS",
        ],
    );
    let cert_arn = issued["CertificateArn"].as_str().expect("root ARN");
    let cert = aws(
        moto,
        REGION,
        &[
            "acm-pca",
            "get-certificate",
            "--certificate-authority-arn",
            &ca_arn,
            "--certificate-arn",
            cert_arn,
        ],
    )["Certificate"]
        .as_str()
        .expect("root certificate")
        .to_string();
    let cert_file = dir.join("ca.pem");
    std::fs::write(&cert_file, &cert).expect("write CA certificate");
    aws(
        moto,
        REGION,
        &[
            "acm-pca",
            "import-certificate-authority-certificate",
            "--certificate-authority-arn",
            &ca_arn,
            "--certificate",
            &format!("fileb://{}", cert_file.display()),
        ],
    );
    (ca_arn, cert)
}

async fn register(cluster: &TestCluster, name: &str, ca_arn: &str, mode: &str) -> Value {
    let leader = cluster.leader().await;
    let (status, body) = cluster
        .post(
            leader,
            "/v1/aws/pca-issuers",
            &json!({"name": name, "ca_arn": ca_arn, "mode": mode}),
        )
        .await;
    assert_eq!(status, 201, "register {name}: {body}");
    body
}

async fn put_zone(cluster: &TestCluster, path: &str, policy: Value) {
    let leader = cluster.leader().await;
    let r = cluster
        .http
        .put(format!("{}/v1/zones{path}", cluster.node(leader).url()))
        .bearer_auth(&cluster.token)
        .json(&json!({ "policy": policy }))
        .send()
        .await
        .expect("put zone");
    assert!(
        r.status().is_success(),
        "zone {path}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// A token through the API as root: (id, secret).
async fn token(cluster: &TestCluster, name: &str, bindings: &[(&str, &str)]) -> (String, String) {
    let leader = cluster.leader().await;
    let (status, v) = cluster
        .post(
            leader,
            "/v1/tokens",
            &json!({
                "name": name,
                "bindings": bindings.iter().map(|(r, z)| json!({"role": r, "zone": z})).collect::<Vec<_>>(),
            }),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    (
        v["token"]["id"].as_str().expect("id").to_string(),
        v["secret"].as_str().expect("secret").to_string(),
    )
}

async fn post_as(cluster: &TestCluster, secret: &str, path: &str, body: &Value) -> (u16, Value) {
    let leader = cluster.leader().await;
    let resp = cluster
        .http
        .post(format!("{}{path}", cluster.node(leader).url()))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A P-256 key and a CSR for exactly `name` (CN and the one SAN), as a requester would make them.
fn csr_for(name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("CSR PEM")
}

async fn request(cluster: &TestCluster, id: &str) -> Value {
    let leader = cluster.leader().await;
    let (status, body) = cluster
        .get(leader, &format!("/v1/certificate-requests/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn issued(cluster: &TestCluster, id: &str, timeout: Duration) -> Value {
    wait_for(&format!("request {id} issued"), timeout, || async {
        let r = request(cluster, id).await;
        assert_ne!(r["state"], "failed", "request {id} failed: {r}");
        (r["state"] == "issued").then_some(r)
    })
    .await
}

async fn certificate(cluster: &TestCluster, id: &str) -> Value {
    let leader = cluster.leader().await;
    let (status, body) = cluster.get(leader, &format!("/v1/certificates/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn pem_blocks(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .expect("PEM")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

/// Path validation with rustls-webpki: the leaf of `chain_pem` must chain to `ca_pem` (the only trust
/// anchor) and be valid for `name`.
fn verify_against(chain_pem: &str, ca_pem: &str, name: &str) {
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let ca = CertificateDer::from(pem_blocks(ca_pem).remove(0));
    let anchor = webpki::anchor_from_trusted_cert(&ca).expect("trust anchor");
    let leaf = CertificateDer::from(pem_blocks(chain_pem).remove(0));
    let ee = webpki::EndEntityCert::try_from(&leaf).expect("end entity");
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .expect("the certificate verifies against the PCA's CA certificate");
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name.to_string()).expect("name"))
        .expect("valid for the name");
}

async fn proxy_stats(proxy: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{proxy}/__proxy/stats"))
        .send()
        .await
        .expect("proxy stats")
        .json()
        .await
        .expect("stats JSON")
}

fn forwarded(stats: &Value, service: &str, op: &str) -> u64 {
    stats["forwarded_by_service"][service][op]
        .as_u64()
        .unwrap_or(0)
}

/// moto's RevokeCertificate matches a serial only as upper-case hex split into pairs from the left
/// without zero padding; certplane sends two digits per byte, as AWS documents. The two agree when
/// the serial's hex has an even number of digits.
fn moto_can_revoke(serial_hex: &str) -> bool {
    serial_hex.trim_start_matches('0').len().is_multiple_of(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csr_and_acm_native_issuance_policy_gate_revocation_and_the_builtin_ca_side_by_side() {
    let _one = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    aws_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, proxy, _procs) = start_aws(dir.path()).await;
    proxy_config(&proxy, json!({"idempotency": true})).await;
    let (ca_arn, ca_pem) = create_ca(&moto, dir.path());
    let cluster = start_cluster(dir.path(), &proxy).await;

    // Two issuers on one CA, one per mode; the built-in CA stays the root zone's default.
    let csr_issuer = register(&cluster, "pca-csr", &ca_arn, "csr").await;
    assert_eq!(csr_issuer["kind"], "acm-pca");
    assert_eq!(csr_issuer["acm_pca"]["mode"], "csr");
    assert_eq!(csr_issuer["acm_pca"]["signing_algorithm"], "SHA256WITHRSA");
    assert_eq!(
        csr_issuer["ca_cert_pem"].as_str().map(str::trim),
        Some(ca_pem.trim())
    );
    register(&cluster, "pca-native", &ca_arn, "acm-native").await;
    // An ARN that is not a CA, and a CA that does not exist, are refused before anything is stored.
    let leader = cluster.leader().await;
    let (status, body) = cluster
        .post(
            leader,
            "/v1/aws/pca-issuers",
            &json!({"name": "bad", "ca_arn": "arn:aws:acm:eu-west-1:123456789012:certificate/x", "mode": "csr"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = cluster
        .post(
            leader,
            "/v1/aws/pca-issuers",
            &json!({"name": "ghost", "ca_arn": format!("{ca_arn}0"), "mode": "csr"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    put_zone(
        &cluster,
        "/pca",
        json!({
            "allowed_domains": {"value": [".pca.example"], "locked": true},
            "allowed_issuers": {"value": ["pca-csr"], "locked": true},
            "default_issuer": {"value": "pca-csr"},
            "approval_required": {"value": true},
        }),
    )
    .await;
    put_zone(
        &cluster,
        "/native",
        json!({
            "allowed_domains": {"value": [".native.example"]},
            "allowed_issuers": {"value": ["pca-native"]},
            "default_issuer": {"value": "pca-native"},
        }),
    )
    .await;
    put_zone(
        &cluster,
        "/shop",
        json!({
            "allowed_issuers": {"value": ["builtin"]},
            "max_validity": {"value": "30d"},
            "destinations": {"value": [{"type": "acm", "region": REGION}]},
        }),
    )
    .await;
    let (_, requester) = token(&cluster, "requester", &[("requester", "/pca")]).await;
    let (_, approver) = token(&cluster, "approver", &[("approver", "/pca")]).await;

    // 3. Requests that fail policy never reach AWS: a name outside the zone, an issuer the zone does
    //    not allow, a key spec where the issuer signs CSRs.
    let (status, body) = post_as(
        &cluster,
        &requester,
        "/v1/certificate-requests",
        &json!({"zone": "/pca", "common_name": "www.elsewhere.example", "csr_pem": csr_for("www.elsewhere.example")}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_as(
        &cluster,
        &requester,
        "/v1/certificate-requests",
        &json!({"zone": "/pca", "common_name": "a.pca.example", "csr_pem": csr_for("a.pca.example"), "issuer": "pca-native"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_as(
        &cluster,
        &requester,
        "/v1/certificate-requests",
        &json!({"zone": "/pca", "common_name": "b.pca.example", "key": {"type": "ecdsa_p256"}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("request")
            || body["error"]["details"]
                .as_array()
                .is_some_and(|d| !d.is_empty()),
        "the refusal explains itself: {body}"
    );
    // A rejection writes no intent, so nothing can call AWS for it later: so far the proxy has seen
    // only the two registrations' reads of the CA.
    let so_far: Vec<String> = proxy_log(&proxy)
        .await
        .iter()
        .filter_map(|c| c["operation"].as_str().map(str::to_string))
        .collect();
    assert!(
        so_far
            .iter()
            .all(|op| op == "DescribeCertificateAuthority"
                || op == "GetCertificateAuthorityCertificate"),
        "a rejected request reached AWS: {so_far:?}"
    );

    // 1. csr mode: policy passes, the request waits for approval, and only then does AWS sign.
    let mut revocable = None;
    let mut csr_certs = Vec::new();
    let mut csr_requests = Vec::new();
    for n in 0..4 {
        let name = format!("app{n}.pca.example");
        let (status, body) = post_as(
            &cluster,
            &requester,
            "/v1/certificate-requests",
            &json!({"zone": "/pca", "common_name": name, "sans": [name], "csr_pem": csr_for(&name), "validity": "397d"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["state"], "pending_approval", "{body}");
        let id = body["id"].as_str().expect("id").to_string();
        let before = forwarded(&proxy_stats(&proxy).await, "acm-pca", "IssueCertificate");
        let (status, body) = post_as(
            &cluster,
            &approver,
            &format!("/v1/certificate-requests/{id}/approve?wait=20"),
            &json!({"comment": "looks right"}),
        )
        .await;
        assert!(
            status == 200 || status == 201 || status == 202,
            "{status} {body}"
        );
        let done = issued(&cluster, &id, Duration::from_secs(60)).await;
        assert_eq!(
            forwarded(&proxy_stats(&proxy).await, "acm-pca", "IssueCertificate"),
            before + 1,
            "one IssueCertificate for request {id}"
        );
        let aws_part = &done["aws"];
        assert_eq!(aws_part["ca_arn"], ca_arn.as_str());
        let cert_id = done["certificate_id"]
            .as_str()
            .expect("certificate")
            .to_string();
        let cert = certificate(&cluster, &cert_id).await;
        let pca_arn = cert["aws"]["certificate_arn"]
            .as_str()
            .expect("ARN")
            .to_string();
        assert!(
            pca_arn.starts_with(&format!("{ca_arn}/certificate/")),
            "{pca_arn}"
        );
        assert_eq!(aws_part["certificate_arn"], pca_arn.as_str());
        assert_eq!(cert["issued_by"], "pca-csr");
        assert_eq!(
            cert["has_private_key"], false,
            "the requester keeps the key"
        );
        assert_eq!(cert["sans"], json!([name]));
        let chain = cert["chain_pem"].as_str().expect("chain");
        verify_against(chain, &ca_pem, &name);
        // What the CA serves at the ARN is exactly the certificate in the inventory.
        let served = aws(
            &moto,
            REGION,
            &[
                "acm-pca",
                "get-certificate",
                "--certificate-authority-arn",
                &ca_arn,
                "--certificate-arn",
                &pca_arn,
            ],
        );
        assert_eq!(
            pem_blocks(served["Certificate"].as_str().expect("served")),
            pem_blocks(chain)[..1].to_vec()
        );
        // The audit trail joins CloudTrail: the AWS request id, the CA ARN, the certificate ARN.
        let (status, audit) = cluster
            .get(leader, &format!("/v1/audit?object=request/{id}&limit=20"))
            .await;
        assert_eq!(status, 200, "{audit}");
        let items = audit["items"].as_array().expect("items");
        let issued_record = items
            .iter()
            .find(|r| r["action"] == "request.aws_issued")
            .unwrap_or_else(|| panic!("an audit record of the AWS answer: {audit}"));
        assert_eq!(issued_record["ca_arn"], ca_arn.as_str(), "{issued_record}");
        assert_eq!(issued_record["arn"], pca_arn.as_str());
        assert!(
            issued_record["aws_request_id"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{issued_record}"
        );
        let approved = items
            .iter()
            .find(|r| r["action"] == "request.issued")
            .expect("an audit record of the issuance");
        assert_eq!(approved["serial"], cert["serial"]);
        assert!(!approved["approvers"]
            .as_array()
            .expect("approvers")
            .is_empty());
        if revocable.is_none() && moto_can_revoke(cert["serial"].as_str().unwrap_or("")) {
            revocable = Some((cert_id.clone(), pca_arn.clone()));
        }
        csr_certs.push(cert_id);
        csr_requests.push(id.clone());
        if revocable.is_some() && csr_certs.len() >= 2 {
            break;
        }
    }

    // `certplane audit show` prints the AWS facts of a request.
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_certplane"))
        .args(["audit", "show", &format!("request/{}", csr_requests[0])])
        .args([
            "--addr",
            &cluster.node(leader).url(),
            "--token",
            &cluster.token,
        ])
        .output()
        .expect("run certplane audit show");
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("request.aws_issued"), "{shown}");
    assert!(shown.contains("aws request id: "), "{shown}");
    assert!(shown.contains(&format!("ca arn: {ca_arn}")), "{shown}");
    assert!(shown.contains("approvers: "), "{shown}");

    // 5. Revocation reaches the CA: moto then refuses to return the certificate.
    let (cert_id, pca_arn) = revocable.expect("a certificate moto can revoke");
    let (status, body) = cluster
        .post(
            leader,
            &format!("/v1/certificates/{cert_id}/revoke"),
            &json!({"reason": "key_compromise"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let revoked = wait_for(
        "the revocation to reach the CA",
        Duration::from_secs(30),
        || async {
            let c = certificate(&cluster, &cert_id).await;
            (c["aws"]["revocation_pending"] == false).then_some(c)
        },
    )
    .await;
    assert_eq!(revoked["status"], "revoked");
    let revoke_calls: Vec<Value> = proxy_log(&proxy)
        .await
        .into_iter()
        .filter(|c| c["operation"] == "RevokeCertificate")
        .collect();
    assert_eq!(revoke_calls.len(), 1, "{revoke_calls:?}");
    assert_eq!(revoke_calls[0]["ca_arn"], ca_arn.as_str());
    let out = std::process::Command::new(support::aws::venv_bin("aws"))
        .args(["--endpoint-url", &moto, "--region", REGION])
        .args([
            "acm-pca",
            "get-certificate",
            "--certificate-authority-arn",
            &ca_arn,
        ])
        .args(["--certificate-arn", &pca_arn])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("run aws");
    assert!(
        !out.status.success(),
        "moto still returns the revoked certificate"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A built-in CA's CRL is certplane's; a PCA's is AWS's.
    let (status, _) = cluster.get(leader, "/v1/issuers/pca-csr/crl").await;
    assert_eq!(status, 409);

    // 2. acm-native: ACM requests the certificate from the CA; certplane never holds the key.
    let name = "api.native.example";
    let (status, body) = cluster
        .post(
            leader,
            "/v1/certificate-requests?wait=20s",
            &json!({"zone": "/native", "common_name": name, "sans": [name], "key": {"type": "rsa", "bits": 2048}, "validity": "396d", "tags": {"app": "api"}}),
        )
        .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    let id = body["id"].as_str().expect("id").to_string();
    let done = issued(&cluster, &id, Duration::from_secs(60)).await;
    let cert_id = done["certificate_id"]
        .as_str()
        .expect("certificate")
        .to_string();
    let cert = certificate(&cluster, &cert_id).await;
    assert_eq!(cert["has_private_key"], false);
    assert_eq!(cert["aws"]["key_in_acm"], true);
    let acm_arn = cert["aws"]["certificate_arn"]
        .as_str()
        .expect("ACM ARN")
        .to_string();
    assert!(
        acm_arn.starts_with(&format!("arn:aws:acm:{REGION}:")),
        "{acm_arn}"
    );
    let (status, _) = cluster
        .get(leader, &format!("/v1/certificates/{cert_id}/private-key"))
        .await;
    assert_eq!(status, 404, "no key to export");
    let described = aws(
        &moto,
        REGION,
        &["acm", "describe-certificate", "--certificate-arn", &acm_arn],
    );
    assert_eq!(
        described["Certificate"]["CertificateAuthorityArn"],
        ca_arn.as_str()
    );
    assert_eq!(described["Certificate"]["Type"], "PRIVATE");
    assert_eq!(described["Certificate"]["Status"], "ISSUED");
    let requests: Vec<Value> = proxy_log(&proxy)
        .await
        .into_iter()
        .filter(|c| c["operation"] == "RequestCertificate")
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["ca_arn"], ca_arn.as_str());
    assert_eq!(requests[0]["token"], done["aws"]["token"]);
    // The inventory follows it: the leader's checks record ACM's status, and when ACM serves another
    // certificate at the ARN (ACM renewed it by itself) the renewal becomes the successor. moto does
    // not renew, so the test stands in for ACM by putting a new certificate at the same ARN.
    let checked = wait_for("the first ACM check", Duration::from_secs(30), || async {
        let c = certificate(&cluster, &cert_id).await;
        (c["aws"]["acm_status"] == "ISSUED").then_some(c)
    })
    .await;
    assert!(checked["aws"]["checked_at"].is_string(), "{checked}");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let renewal = params.self_signed(&key).expect("renewal");
    std::fs::write(dir.path().join("renewal.pem"), renewal.pem()).expect("write");
    std::fs::write(dir.path().join("renewal.key"), key.serialize_pem()).expect("write");
    aws(
        &moto,
        REGION,
        &[
            "acm",
            "import-certificate",
            "--certificate-arn",
            &acm_arn,
            "--certificate",
            &format!("fileb://{}", dir.path().join("renewal.pem").display()),
            "--private-key",
            &format!("fileb://{}", dir.path().join("renewal.key").display()),
        ],
    );
    let successor_id = wait_for("ACM's renewal noticed", Duration::from_secs(30), || async {
        certificate(&cluster, &cert_id).await["superseded_by"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    let successor = certificate(&cluster, &successor_id).await;
    assert_eq!(successor["supersedes"], cert_id.as_str());
    assert_eq!(
        successor["aws"]["certificate_arn"],
        acm_arn.as_str(),
        "same ARN"
    );
    assert_eq!(
        pem_blocks(successor["chain_pem"].as_str().expect("chain"))[0],
        pem_blocks(&renewal.pem())[0],
        "the successor is what ACM now serves"
    );
    assert_ne!(successor["serial"], cert["serial"]);
    assert_eq!(successor["has_private_key"], false);

    // Nothing ever imported a key into ACM for it, and no call exported one.
    let log = proxy_log(&proxy).await;
    assert!(
        log.iter().all(|c| c["operation"] != "ExportCertificate"),
        "certplane never exports a key from ACM"
    );

    // 6. Pattern 1 beside both Pattern 2 modes: the built-in CA issues and ACM import deploys.
    let (status, body) = cluster
        .post(
            leader,
            "/v1/certificate-requests?wait=20s",
            &json!({"zone": "/shop", "common_name": "www.shop.example", "sans": ["www.shop.example"], "key": {"type": "ecdsa_p256"}, "validity": "20d"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let shop_id = body["certificate_id"].as_str().expect("issued").to_string();
    let shop = wait_for(
        "the shop certificate deployed",
        Duration::from_secs(60),
        || async {
            let c = certificate(&cluster, &shop_id).await;
            (c["deployments"][0]["state"] == "deployed").then_some(c)
        },
    )
    .await;
    assert_eq!(shop["issued_by"], "builtin");
    assert!(shop["aws"].is_null());
    // The calls that reached AWS for issuance carry only the tokens of requests that passed policy.
    let tokens: Vec<String> = log
        .iter()
        .filter(|c| c["operation"] == "IssueCertificate" || c["operation"] == "RequestCertificate")
        .filter_map(|c| c["token"].as_str().map(str::to_string))
        .collect();
    let (status, listed) = cluster
        .get(leader, "/v1/certificate-requests?state=rejected&limit=100")
        .await;
    assert_eq!(status, 200, "{listed}");
    let rejected = listed["items"].as_array().expect("items");
    assert_eq!(rejected.len(), 3, "{listed}");
    for r in rejected {
        assert!(
            r["aws"].is_null(),
            "a rejected request has no AWS call: {r}"
        );
    }
    assert_eq!(
        tokens
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        csr_certs.len() + 1,
        "one token per issued request: {tokens:?}"
    );

    // The IAM policy names the PCA actions on this CA, and the acm-native ACM calls.
    let (status, policy) = cluster.get(leader, "/v1/aws/iam-policy").await;
    assert_eq!(status, 200, "{policy}");
    let granted = certplane_aws::iam::granted_actions(&policy);
    for op in certplane_aws::pca::PCA_OPERATIONS {
        assert!(
            granted.contains(&format!("acm-pca:{op}")),
            "{op} in {granted:?}"
        );
    }
    for op in certplane_aws::pca::NATIVE_ACM_OPERATIONS {
        assert!(
            granted.contains(&format!("acm:{op}")),
            "{op} in {granted:?}"
        );
    }
    let text = policy.to_string();
    assert!(text.contains(&ca_arn), "scoped to the CA: {text}");
    // Every PCA operation the run sent is granted.
    for c in &log {
        if c["service"] == "acm-pca" {
            let op = c["operation"].as_str().unwrap_or("");
            assert!(
                granted.contains(&format!("acm-pca:{op}")),
                "{op} was called but is not granted"
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_answer_and_a_leader_killed_between_the_call_and_its_record_give_one_certificate() {
    let _one = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    aws_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, proxy, _procs) = start_aws(dir.path()).await;
    let (ca_arn, ca_pem) = create_ca(&moto, dir.path());
    let mut cluster = start_cluster(dir.path(), &proxy).await;
    // Registered with the CLI this time.
    let leader = cluster.leader().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certplane"))
        .args([
            "issuer",
            "add-acm-pca",
            "pca",
            "--ca-arn",
            &ca_arn,
            "--mode",
            "csr",
        ])
        .args(["--output", "json", "--addr", &cluster.node(leader).url()])
        .args(["--token", &cluster.token])
        .output()
        .expect("run certplane issuer add-acm-pca");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).expect("JSON issuer");
    assert_eq!(added["kind"], "acm-pca");
    assert_eq!(added["acm_pca"]["ca_arn"], ca_arn.as_str());
    assert_eq!(
        added["acm_pca"]["template_arn"],
        "arn:aws:acm-pca:::template/EndEntityCertificate_APIPassthrough/V1"
    );
    put_zone(
        &cluster,
        "/pca",
        json!({"default_issuer": {"value": "pca"}, "allowed_domains": {"value": [".pca.example"]}}),
    )
    .await;

    // A retry after a lost answer: the first IssueCertificate happens at the CA but certplane never
    // hears back; the retry sends the same token and AWS answers with the same certificate.
    proxy_config(
        &proxy,
        json!({"idempotency": true, "drop_operations": {"IssueCertificate": 1}}),
    )
    .await;
    let leader = cluster.leader().await;
    let name = "lost.pca.example";
    let (status, body) = cluster
        .post(
            leader,
            "/v1/certificate-requests?wait=0s",
            &json!({"zone": "/pca", "common_name": name, "sans": [name], "csr_pem": csr_for(name), "validity": "397d"}),
        )
        .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    let lost_id = body["id"].as_str().expect("id").to_string();
    let done = issued(&cluster, &lost_id, Duration::from_secs(60)).await;
    let calls: Vec<Value> = proxy_log(&proxy)
        .await
        .into_iter()
        .filter(|c| c["operation"] == "IssueCertificate")
        .collect();
    assert!(calls.len() >= 2, "the lost answer was retried: {calls:?}");
    assert_eq!(calls[0]["injected"], "drop_response");
    assert!(
        calls.iter().all(|c| c["token"] == done["aws"]["token"]),
        "one token for every try"
    );
    assert_eq!(
        forwarded(&proxy_stats(&proxy).await, "acm-pca", "IssueCertificate"),
        1,
        "the CA issued once"
    );

    // A leader killed while AWS has signed but before its answer is recorded: the held answers
    // never reach it; the new leader repeats each call with the request's token.
    proxy_config(&proxy, json!({"hold_operations": {"IssueCertificate": 15}})).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let name = format!("held{n}.pca.example");
        let (status, body) = cluster
            .post(
                leader,
                "/v1/certificate-requests?wait=0s",
                &json!({"zone": "/pca", "common_name": name, "sans": [name], "csr_pem": csr_for(&name), "validity": "397d"}),
            )
            .await;
        assert!(status == 201 || status == 202, "{status} {body}");
        ids.push(body["id"].as_str().expect("id").to_string());
    }
    wait_for(
        "the CA to have signed all five",
        Duration::from_secs(30),
        || async {
            (forwarded(&proxy_stats(&proxy).await, "acm-pca", "IssueCertificate") >= 6)
                .then_some(())
        },
    )
    .await;
    for id in &ids {
        let r = request(&cluster, id).await;
        assert_eq!(r["state"], "issuing", "{r}");
        assert!(
            r["aws"]["certificate_arn"].is_null(),
            "no answer recorded yet: {r}"
        );
    }
    cluster.stop(leader).await;
    let others: Vec<u64> = cluster.running().map(|n| n.id).collect();
    let new_leader = cluster.leader_among(&others).await;
    assert_ne!(new_leader, leader);
    proxy_config(&proxy, json!({"hold_operations": {}})).await;
    let mut serials = std::collections::BTreeSet::new();
    for id in &ids {
        let done = issued(&cluster, id, Duration::from_secs(90)).await;
        let cert = certificate(&cluster, done["certificate_id"].as_str().expect("cert")).await;
        verify_against(
            cert["chain_pem"].as_str().expect("chain"),
            &ca_pem,
            cert["common_name"].as_str().expect("cn"),
        );
        serials.insert(cert["serial"].as_str().expect("serial").to_string());
    }
    assert_eq!(serials.len(), 5);
    assert_eq!(
        forwarded(&proxy_stats(&proxy).await, "acm-pca", "IssueCertificate"),
        6,
        "moto signed exactly one certificate per request"
    );
    let replays = proxy_log(&proxy)
        .await
        .into_iter()
        .filter(|c| c["operation"] == "IssueCertificate" && c["injected"] == "idempotent_replay")
        .count();
    assert!(
        replays >= 5,
        "the new leader repeated each call with its token ({replays} replays)"
    );
    // The issuer's record holds exactly the six certificates, each once.
    let (status, record) = cluster
        .get(new_leader, "/v1/issuers/pca/issued?limit=100")
        .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        record["items"].as_array().map_or(0, Vec::len),
        6,
        "{record}"
    );
    cluster.restart(leader).await;
    cluster.wait_converged().await;
    cluster.shutdown().await;
}

//! The ACM driver against moto in server mode, with the real SDK and awscli: first import, re-import
//! to the same ARN, what `aws acm get-certificate` serves, tags restored after a re-import, a
//! deployment that does not verify, and input ACM refuses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use certplane_aws::acm::{AcmDestination, AcmDriver, AcmError, Deployment};

fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: scripts/setup.sh installs moto and awscli into .venv",
        path.display()
    );
    path
}

struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(venv_bin("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{url}/moto-api/")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto { child, url }
}

struct Leaf {
    chain_pem: String,
    leaf_pem: String,
    key_pem: String,
    serial: String,
    not_after_ms: i64,
}

fn leaf(ca: &certplane_pki::testing::TestCa, cn: &str) -> Leaf {
    let now = certplane_pki::testing::now_ms();
    let (chain_pem, key_pem) = ca.issue_leaf(cn, &[cn], now - 60_000, now + 30 * 86_400_000);
    let parsed = certplane_pki::parse_chain_pem(&chain_pem).expect("chain");
    let end = "-----END CERTIFICATE-----\n";
    let cut = chain_pem.find(end).expect("leaf") + end.len();
    Leaf {
        leaf_pem: chain_pem[..cut].to_string(),
        chain_pem: chain_pem[cut..].to_string(),
        key_pem,
        serial: parsed.leaf.serial,
        not_after_ms: parsed.leaf.not_after_ms,
    }
}

fn deployment<'a>(l: &'a Leaf, arn: Option<&'a str>) -> Deployment<'a> {
    Deployment {
        certificate_pem: &l.leaf_pem,
        private_key_pem: &l.key_pem,
        chain_pem: &l.chain_pem,
        serial_hex: &l.serial,
        not_after_ms: l.not_after_ms,
        arn,
    }
}

fn strip(pem: &str) -> String {
    pem.split_whitespace().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reimport_verify_and_restore_tags_against_moto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = start_moto().await;
    // The standard variables: the SDK's default chain reads them (no static keys in code).
    std::env::set_var("AWS_ENDPOINT_URL", &moto.url);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_MAX_ATTEMPTS", "1");
    let driver = AcmDriver::for_region("eu-west-1").await;
    let destination = AcmDestination {
        region: "eu-west-1".into(),
        tags: BTreeMap::from([
            ("certplane:id".to_string(), "crt_test".to_string()),
            ("team".to_string(), "payments".to_string()),
        ]),
    };
    let ca = certplane_pki::testing::TestCa::new();

    // First deployment: a new ARN, verified, tags set with the import.
    let first = leaf(&ca, "api.payments.example.com");
    let deployed = driver
        .deploy(&destination, &deployment(&first, None))
        .await
        .expect("first import");
    assert!(
        deployed.arn.starts_with("arn:aws:acm:eu-west-1:"),
        "{deployed:?}"
    );
    assert!(!deployed.tags_restored);

    // awscli sees exactly certplane's certificate and chain (moto appends its own CA after it).
    let out = Command::new(venv_bin("aws"))
        .args(["acm", "get-certificate", "--certificate-arn", &deployed.arn])
        .args([
            "--region",
            "eu-west-1",
            "--endpoint-url",
            &moto.url,
            "--output",
            "json",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("aws acm get-certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        strip(served["Certificate"].as_str().unwrap_or("")),
        strip(&first.leaf_pem)
    );
    assert!(
        strip(served["CertificateChain"].as_str().unwrap_or(""))
            .starts_with(&strip(&first.chain_pem)),
        "{served}"
    );

    // Renewal: re-import to the same ARN; the new certificate is served; lost tags come back.
    let second = leaf(&ca, "api.payments.example.com");
    assert_ne!(first.serial, second.serial);
    let renewed = driver
        .deploy(&destination, &deployment(&second, Some(&deployed.arn)))
        .await
        .expect("re-import");
    assert_eq!(renewed.arn, deployed.arn, "the ARN never changes");
    assert!(certplane_aws::serial::same_serial(
        &second.serial,
        &renewed.observed_serial
    ));
    let tags = driver
        .client()
        .list_tags_for_certificate()
        .certificate_arn(&deployed.arn)
        .send()
        .await
        .expect("tags");
    let have: BTreeMap<String, String> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().unwrap_or("").to_string()))
        .collect();
    assert_eq!(have, destination.tags, "tags survive the re-import");

    // A deployment whose serial ACM does not show is reported, never taken for success.
    let third = leaf(&ca, "api.payments.example.com");
    let mut wrong = deployment(&third, Some(&deployed.arn));
    wrong.serial_hex = "0badc0ffee";
    match driver.deploy(&destination, &wrong).await {
        Err(e @ AcmError::NotVerified { .. }) => assert!(e.is_retryable()),
        other => panic!("expected NotVerified, got {other:?}"),
    }

    // Input ACM refuses: a clear, non-retryable error.
    let garbage = Deployment {
        certificate_pem:
            "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
        ..deployment(&first, None)
    };
    match driver.deploy(&destination, &garbage).await {
        Err(e @ AcmError::Refused { .. }) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("expected Refused, got {other:?}"),
    }
}

//! Pattern 1 end to end: a 3-node cluster issues, renews at the zone's threshold and deploys into
//! ACM, against moto in server mode through a fault-injecting, recording proxy, with the real AWS SDK;
//! awscli reads back what ACM serves.
//!
//! What these tests show: the certificate and chain ACM serves are certplane's; renewal re-imports to
//! the same ARN in every region and tags survive; a lost import answer is adopted by its tag instead
//! of imported twice; throttling costs no deployment and the rate holds; a deployment that cannot be
//! verified is failed, counted and retried, never reported deployed; the printed IAM policy lists
//! exactly the operations the driver sent.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::aws::{aws, aws_env, proxy_config, proxy_log, start_aws};
use support::webhooks::{start_receiver, Receiver};
use support::{wait_for, TestCluster};

/// Each test runs moto, a proxy and a cluster; the AWS SDK reads its credentials from the process
/// environment, which these tests set before any node starts. One at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kek(dir: &Path) -> PathBuf {
    let path = dir.join("kek");
    certplane_pki::Kek::generate_file(&path).expect("kek");
    path
}

async fn start_cluster(dir: &Path, proxy: &str, import_rate: f64) -> TestCluster {
    let kek = kek(dir);
    let proxy = proxy.to_string();
    TestCluster::start(3, move |c| {
        c.kek_file = Some(kek.clone());
        c.deploy.aws_endpoint_url = Some(proxy.clone());
        c.deploy.acm_import_rate = import_rate;
        c.deploy.retry_base_ms = 300;
        c.webhooks.retry_base_ms = 50;
        c.audit_verify_interval_ms = 500;
    })
    .await
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

/// Issue through the API and return the certificate id.
async fn issue(cluster: &TestCluster, zone: &str, name: &str, validity: &str) -> String {
    let leader = cluster.leader().await;
    let (status, body) = cluster
        .post(
            leader,
            "/v1/certificate-requests?wait=20s",
            &json!({
                "zone": zone,
                "common_name": name,
                "sans": [name],
                "key": {"type": "ecdsa_p256"},
                "validity": validity,
                "owner": "team-shop",
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["certificate_id"].as_str().expect("issued").to_string()
}

/// The certificate as the leader serves it. A 503 (the cluster is electing, or the leader could
/// not confirm its quorum for the read) is an answer to retry, as the API says, not a failure.
async fn certificate(cluster: &TestCluster, id: &str) -> Value {
    wait_for(
        &format!("certificate {id} readable"),
        Duration::from_secs(30),
        || async {
            let leader = cluster.leader().await;
            let (status, body) = cluster.get(leader, &format!("/v1/certificates/{id}")).await;
            if status == 503 {
                return None;
            }
            assert_eq!(status, 200, "{body}");
            Some(body)
        },
    )
    .await
}

/// Wait until every deployment of `id` is deployed; return the certificate. On timeout the panic
/// shows the certificate as last seen.
async fn deployed(cluster: &TestCluster, id: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let c = certificate(cluster, id).await;
        let all = c["deployments"].as_array().cloned().unwrap_or_default();
        if !all.is_empty() && all.iter().all(|d| d["state"] == "deployed") {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for certificate {id} deployed: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The successor of `id` once the renewal worker renewed it.
async fn renewed(cluster: &TestCluster, id: &str, timeout: Duration) -> String {
    wait_for(&format!("renewal of {id}"), timeout, || async {
        certificate(cluster, id).await["superseded_by"]
            .as_str()
            .map(str::to_string)
    })
    .await
}

fn pem_parts(chain_pem: &str) -> (String, String) {
    let end = "-----END CERTIFICATE-----";
    let cut = chain_pem.find(end).expect("a certificate") + end.len();
    (
        chain_pem[..cut].trim().to_string(),
        chain_pem[cut..].trim().to_string(),
    )
}

/// What ACM serves for the ARN is exactly the certificate (and chain) certplane holds.
fn assert_served(moto: &str, region: &str, arn: &str, cert: &Value) {
    let served = aws(
        moto,
        region,
        &["acm", "get-certificate", "--certificate-arn", arn],
    );
    let (leaf, chain) = pem_parts(cert["chain_pem"].as_str().expect("chain"));
    assert_eq!(
        served["Certificate"].as_str().map(str::trim),
        Some(leaf.as_str()),
        "ACM serves another certificate at {arn}"
    );
    // moto appends one fixed "Amazon Server CA 1B" certificate to every chain it serves
    // (../shared/reference/moto.md); real ACM serves the chain as imported.
    let served_chain = served["CertificateChain"].as_str().unwrap_or("").trim();
    let extra = served_chain
        .strip_prefix(chain.as_str())
        .unwrap_or_else(|| panic!("ACM serves another chain at {arn}: {served_chain}"));
    assert_eq!(
        extra.matches("-----BEGIN CERTIFICATE-----").count(),
        1,
        "only moto's own CA follows certplane's chain at {arn}"
    );
}

fn tags(moto: &str, region: &str, arn: &str) -> Vec<(String, String)> {
    let v = aws(
        moto,
        region,
        &["acm", "list-tags-for-certificate", "--certificate-arn", arn],
    );
    let mut out: Vec<(String, String)> = v["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["Key"].as_str().unwrap_or("").to_string(),
                t["Value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn acm_count(moto: &str, region: &str) -> usize {
    aws(moto, region, &["acm", "list-certificates"])["CertificateSummaryList"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Validity 60 s, renewal 45 s before expiry: the renewal worker renews about 15 s after issue.
fn shop_zone(auto_renew: bool) -> Value {
    json!({
        "max_validity": {"value": "60s"},
        "notify_before": {"value": "50s"},
        "renew_before": {"value": "45s"},
        "auto_renew": {"value": auto_renew},
        "destinations": {"value": [
            {"type": "acm", "region": "eu-west-1", "tags": {"app": "shop", "cost-center": "42"}},
            {"type": "acm", "region": "us-east-1", "tags": {"app": "shop"}}
        ]},
    })
}

/// Validity 120 s, renewal 60 s after issue: the first deployments have time to finish under heavy
/// throttling (a certificate superseded before it deployed has its deployment cancelled, by design),
/// and each successor has two minutes to deploy before it expires, since an unlucky run of
/// throttles can hold a deployment's retries (and the shared import rate) back for most of a minute.
fn one_region_zone(auto_renew: bool) -> Value {
    json!({
        "max_validity": {"value": "120s"},
        "notify_before": {"value": "100s"},
        "renew_before": {"value": "60s"},
        "auto_renew": {"value": auto_renew},
        "destinations": {"value": [{"type": "acm", "region": "eu-west-1"}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_deploy_renew_in_two_regions_and_the_iam_policy_matches_the_calls() {
    let _one = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    aws_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, proxy, _procs) = start_aws(dir.path()).await;
    let cluster = start_cluster(dir.path(), &proxy, 20.0).await;
    put_zone(&cluster, "/shop", shop_zone(true)).await;
    // The first import's answer is lost (the import happens): the next attempt must find the
    // certificate by its tag, not import a second one.
    proxy_config(&proxy, json!({"drop_import_responses": 1})).await;

    let a_id = issue(&cluster, "/shop", "shop.corp.example", "60s").await;
    let a = deployed(&cluster, &a_id, Duration::from_secs(30)).await;
    let arns: Vec<(String, String)> = a["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| {
            (
                d["region"].as_str().expect("region").to_string(),
                d["arn"].as_str().expect("arn").to_string(),
            )
        })
        .collect();
    assert_eq!(arns.len(), 2);
    for (region, arn) in &arns {
        assert!(arn.contains(region.as_str()), "{arn} in {region}");
        assert_served(&moto, region, arn, &a);
        assert_eq!(
            acm_count(&moto, region),
            1,
            "one ACM certificate per region in {region}"
        );
        assert!(tags(&moto, region, arn).contains(&("app".into(), "shop".into())));
    }
    assert!(
        a["deployments"]
            .as_array()
            .expect("d")
            .iter()
            .any(|d| d["attempts"].as_u64() > Some(2)),
        "the lost import answer cost an attempt: {a}"
    );
    // The plan shows the renewal coming, to both regions.
    let (status, plan) = cluster
        .get(cluster.leader().await, "/v1/renewals/plan?within=1h")
        .await;
    assert_eq!(status, 200, "{plan}");
    assert!(
        plan["renewals"]
            .as_array()
            .expect("renewals")
            .iter()
            .any(|r| {
                r["certificate_id"] == a["id"]
                    && r["destinations"].as_array().map(Vec::len) == Some(2)
            }),
        "{plan}"
    );
    // Certificates issued from now on are not renewed again, so the successor stays the one ACM
    // serves while the test reads it (the first certificate keeps its schedule).
    put_zone(&cluster, "/shop", shop_zone(false)).await;
    // Someone strips a tag in ACM: the next deployment puts it back.
    let (eu, eu_arn) = arns
        .iter()
        .find(|(r, _)| r == "eu-west-1")
        .cloned()
        .expect("eu");
    aws(
        &moto,
        &eu,
        &[
            "acm",
            "remove-tags-from-certificate",
            "--certificate-arn",
            &eu_arn,
            "--tags",
            "Key=app,Value=shop",
        ],
    );
    assert!(!tags(&moto, &eu, &eu_arn).contains(&("app".into(), "shop".into())));

    // The renewal worker renews at the threshold; the successor goes to the same ARNs.
    let b_id = renewed(&cluster, &a_id, Duration::from_secs(60)).await;
    let b = deployed(&cluster, &b_id, Duration::from_secs(30)).await;
    assert_ne!(b["serial"], a["serial"]);
    let b_arns: Vec<(String, String)> = b["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| {
            (
                d["region"].as_str().unwrap_or("").to_string(),
                d["arn"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(b_arns, arns, "a renewal keeps every ARN");
    for (region, arn) in &b_arns {
        assert_served(&moto, region, arn, &b);
        assert_eq!(acm_count(&moto, region), 1);
    }
    let eu_tags = tags(&moto, &eu, &eu_arn);
    for want in [("app", "shop"), ("cost-center", "42")] {
        assert!(
            eu_tags.contains(&(want.0.to_string(), want.1.to_string())),
            "tags survive the renewal: {eu_tags:?}"
        );
    }
    assert!(eu_tags
        .iter()
        .any(|(k, v)| k == "certplane:deployment" && v == &format!("{a_id}.0")));
    assert!(
        b["renewal"].is_null(),
        "the zone stopped automatic renewal: {b}"
    );

    // The IAM policy lists exactly the ACM operations the driver sent.
    let (status, policy) = cluster
        .get(
            cluster.leader().await,
            "/v1/aws/iam-policy?account=123456789012",
        )
        .await;
    assert_eq!(status, 200, "{policy}");
    let granted: BTreeSet<String> = policy["policies"][0]["policy"]["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let sent: BTreeSet<String> = proxy_log(&proxy)
        .await
        .iter()
        .filter_map(|c| c["operation"].as_str().map(|o| format!("acm:{o}")))
        .collect();
    assert_eq!(
        granted, sent,
        "the IAM policy and the operations the driver sent differ"
    );
    // The CLI prints the same policy, and the Terraform module grants the same actions.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certplane"))
        .args([
            "aws",
            "iam-policy",
            "--account",
            "123456789012",
            "--output",
            "json",
        ])
        .args(["--addr", &cluster.node(cluster.leader().await).url()])
        .args(["--token", &cluster.token])
        .output()
        .expect("certplane aws iam-policy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON policy");
    assert_eq!(printed, policy, "the CLI prints the API's policy");
    assert_eq!(
        support::aws::terraform_acm_actions(),
        granted,
        "Terraform's iam.tf and the driver's operations differ"
    );
    let resources = policy["policies"][0]["policy"]["Statement"][0]["Resource"].to_string();
    assert!(resources.contains("arn:aws:acm:eu-west-1:123456789012:certificate/*"));
    assert!(resources.contains("arn:aws:acm:us-east-1:123456789012:certificate/*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_costs_no_deployment_and_an_unverifiable_one_is_failed_and_retried() {
    let _one = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    aws_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, proxy, _procs) = start_aws(dir.path()).await;
    let rate = 4.0;
    let cluster = start_cluster(dir.path(), &proxy, rate).await;
    put_zone(&cluster, "/shop", one_region_zone(true)).await;
    // A third of every ACM call is throttled.
    proxy_config(&proxy, json!({"throttle_share": 0.33, "seed": 7})).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(issue(&cluster, "/shop", &format!("s{i}.corp.example"), "120s").await);
    }
    // Successors are not renewed again (the originals keep their schedules).
    put_zone(&cluster, "/shop", one_region_zone(false)).await;
    let mut successors = Vec::new();
    for id in &ids {
        deployed(&cluster, id, Duration::from_secs(120)).await;
        successors.push(renewed(&cluster, id, Duration::from_secs(120)).await);
    }
    for (old, new) in ids.iter().zip(&successors) {
        let a = certificate(&cluster, old).await;
        let b = deployed(&cluster, new, Duration::from_secs(120)).await;
        assert_eq!(a["deployments"][0]["arn"], b["deployments"][0]["arn"]);
        // Importing + deployed for the first; the re-import deploys at once, or (seen on a loaded
        // 2-core CI machine, where an SDK call can time out behind the throttled ones) after one
        // recorded retry. It always ends deployed at the same ARN.
        assert_eq!(a["deployments"][0]["attempts"], 2, "{a}");
        assert!(b["deployments"][0]["attempts"].as_u64() <= Some(2), "{b}");
        assert_served(
            &moto,
            "eu-west-1",
            b["deployments"][0]["arn"].as_str().unwrap_or(""),
            &b,
        );
    }
    let log = proxy_log(&proxy).await;
    assert!(
        log.iter().any(|c| c["injected"] == "throttle"),
        "the proxy throttled something"
    );
    // Every ImportCertificate the driver sent, throttled or not, kept to the configured rate.
    let imports: Vec<f64> = log
        .iter()
        .filter(|c| c["operation"] == "ImportCertificate")
        .filter_map(|c| c["at"].as_f64())
        .collect();
    for (i, start) in imports.iter().enumerate() {
        let in_a_second = imports[i..]
            .iter()
            .take_while(|t| **t < start + 1.0)
            .count();
        assert!(
            in_a_second <= rate as usize + 1,
            "{in_a_second} imports within a second from {start}: faster than {rate}/s"
        );
    }

    // ACM answers with another serial: the deployment is failed, counted, notified and retried,
    // never reported deployed.
    let secret = Arc::new(Mutex::new(String::new()));
    let received = Arc::new(Mutex::new(Receiver::default()));
    let url = start_receiver(secret.clone(), received.clone()).await;
    let (status, hook) = cluster
        .post(
            cluster.leader().await,
            "/v1/webhooks",
            &json!({"zone": "/shop", "url": url, "events": ["certificate.deployment_failed"]}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    *secret.lock().expect("lock") = hook["secret"].as_str().expect("secret").to_string();
    proxy_config(&proxy, json!({"throttle_share": 0.0, "wrong_serial": true})).await;
    let c_id = issue(&cluster, "/shop", "wrong.corp.example", "60s").await;
    let failed = wait_for(
        "a failed, retried deployment",
        Duration::from_secs(30),
        || async {
            let c = certificate(&cluster, &c_id).await;
            let d = &c["deployments"][0];
            assert_ne!(
                d["state"], "deployed",
                "an unverified deployment was reported deployed: {c}"
            );
            (d["state"] == "failed" && d["attempts"].as_u64() >= Some(4)).then_some(c)
        },
    )
    .await;
    let error = failed["deployments"][0]["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(error.contains("serial"), "{error}");
    let metrics = cluster
        .http
        .get(format!(
            "{}/metrics",
            cluster.node(cluster.leader().await).url()
        ))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("certplane_deployment_failed_total{destination=\"acm:eu-west-1\"}")
            && !l.ends_with(" 0")),
        "failed deployments are counted by destination, as the alert groups them"
    );
    wait_for(
        "a deployment_failed notification",
        Duration::from_secs(30),
        || async {
            let r = received.lock().expect("lock");
            (r.bad_signatures == 0
                && r.accepted
                    .values()
                    .any(|e| e == "certificate.deployment_failed"))
            .then_some(())
        },
    )
    .await;
    // Once ACM serves the right certificate, the retry deploys it to the ARN it already has.
    let arn = failed["deployments"][0]["arn"]
        .as_str()
        .expect("arn kept")
        .to_string();
    proxy_config(&proxy, json!({"wrong_serial": false})).await;
    let c = deployed(&cluster, &c_id, Duration::from_secs(30)).await;
    assert_eq!(c["deployments"][0]["arn"].as_str(), Some(arn.as_str()));
    assert_served(&moto, "eu-west-1", &arn, &c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_existing_arn_is_adopted_windows_hold_deployments_cleanup_deletes_and_roles_are_assumed()
{
    let _one = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    aws_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, proxy, _procs) = start_aws(dir.path()).await;
    let cluster = start_cluster(dir.path(), &proxy, 20.0).await;

    // An ACM certificate someone imported by hand, which certplane is to take over.
    let ca = certplane_pki::testing::TestCa::new();
    let now = certplane_pki::testing::now_ms();
    let (chain, key) = ca.issue_leaf(
        "legacy.corp.example",
        &["legacy.corp.example"],
        now - 60_000,
        now + 86_400_000,
    );
    std::fs::write(dir.path().join("legacy.pem"), &chain).expect("write");
    std::fs::write(dir.path().join("legacy-key.pem"), &key).expect("write");
    let cert_arg = format!("fileb://{}", dir.path().join("legacy.pem").display());
    let key_arg = format!("fileb://{}", dir.path().join("legacy-key.pem").display());
    let legacy = aws(
        &moto,
        "eu-west-1",
        &[
            "acm",
            "import-certificate",
            "--certificate",
            &cert_arg,
            "--private-key",
            &key_arg,
        ],
    )["CertificateArn"]
        .as_str()
        .expect("imported")
        .to_string();
    put_zone(&cluster, "/adopt", json!({"auto_renew": {"value": false}})).await;
    let leader = cluster.leader().await;
    let (status, body) = cluster
        .post(
            leader,
            "/v1/certificate-requests?wait=20s",
            &json!({"zone": "/adopt", "sans": ["legacy.corp.example"], "key": {"type": "ecdsa_p256"},
                    "validity": "30d",
                    "destinations": [{"type": "acm", "region": "eu-west-1", "arn": legacy}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let adopted = deployed(
        &cluster,
        body["certificate_id"].as_str().expect("issued"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        adopted["deployments"][0]["arn"].as_str(),
        Some(legacy.as_str())
    );
    assert_served(&moto, "eu-west-1", &legacy, &adopted);
    assert_eq!(
        acm_count(&moto, "eu-west-1"),
        1,
        "adopted, not imported beside it"
    );

    // A maintenance window that is closed now holds the deployment; opening it releases it.
    let minute = (certplane_pki::testing::now_ms() / 60_000) % 1440;
    let closed = |m: i64| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    let window = format!("{}-{}", closed(minute + 120), closed(minute + 180));
    let zone = |windows: Vec<String>| {
        json!({"auto_renew": {"value": false}, "acm_cleanup": {"value": true},
               "deploy_windows": {"value": windows},
               "destinations": {"value": [{"type": "acm", "region": "eu-west-1"}]}})
    };
    put_zone(&cluster, "/cleanup", zone(vec![window.clone()])).await;
    let id = issue(&cluster, "/cleanup", "old.corp.example", "1h").await;
    let (status, plan) = cluster
        .get(cluster.leader().await, "/v1/renewals/plan?within=1d")
        .await;
    assert_eq!(status, 200);
    let held = plan["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .find(|d| d["certificate_id"] == id.as_str())
        .cloned()
        .expect("the held deployment is planned");
    assert!(
        held["deploy_at"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("T{}:", &window[..2])),
        "planned for the window {window}: {held}"
    );
    // A witness in a zone without windows, issued after it, deploys: the worker has passed over
    // the held one, which is still pending.
    let (status, body) = cluster
        .post(
            cluster.leader().await,
            "/v1/certificate-requests?wait=20s",
            &json!({"zone": "/adopt", "sans": ["witness.corp.example"], "key": {"type": "ecdsa_p256"},
                    "validity": "30d", "destinations": [{"type": "acm", "region": "eu-west-1"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    deployed(
        &cluster,
        body["certificate_id"].as_str().expect("issued"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        certificate(&cluster, &id).await["deployments"][0]["state"],
        "pending"
    );
    put_zone(&cluster, "/cleanup", zone(Vec::new())).await;
    let c = deployed(&cluster, &id, Duration::from_secs(30)).await;
    let arn = c["deployments"][0]["arn"]
        .as_str()
        .expect("arn")
        .to_string();
    assert_eq!(acm_count(&moto, "eu-west-1"), 3);

    // Retired in a zone with acm_cleanup: ACM's copy is deleted (nothing uses it in moto).
    let r = cluster
        .http
        .delete(format!(
            "{}/v1/certificates/{id}",
            cluster.node(cluster.leader().await).url()
        ))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("retire");
    assert!(r.status().is_success());
    wait_for("the ACM copy deleted", Duration::from_secs(30), || async {
        (certificate(&cluster, &id).await["deployments"][0]["state"] == "deleted").then_some(())
    })
    .await;
    assert_eq!(
        acm_count(&moto, "eu-west-1"),
        2,
        "{arn} is gone, the others stay"
    );
    // Another account: the destination names a role, the driver assumes it through STS, and the
    // certificate lands in that account (moto keys resources by the assumed role's account).
    let role = "arn:aws:iam::210987654321:role/certplane-deployer";
    put_zone(
        &cluster,
        "/cross",
        json!({"auto_renew": {"value": false},
               "destinations": {"value": [{"type": "acm", "region": "eu-west-1", "role_arn": role}]}}),
    )
    .await;
    let cross = issue(&cluster, "/cross", "cross.corp.example", "30d").await;
    let cross = deployed(&cluster, &cross, Duration::from_secs(30)).await;
    let cross_arn = cross["deployments"][0]["arn"]
        .as_str()
        .expect("arn")
        .to_string();
    assert!(
        cross_arn.starts_with("arn:aws:acm:eu-west-1:210987654321:certificate/"),
        "deployed in the role's account: {cross_arn}"
    );
    assert!(proxy_log(&proxy)
        .await
        .iter()
        .any(|c| c["operation"] == "AssumeRole"));

    let (_, policy) = cluster
        .get(
            cluster.leader().await,
            "/v1/aws/iam-policy?account=123456789012",
        )
        .await;
    assert!(
        policy.to_string().contains("acm:DeleteCertificate"),
        "cleanup is on in a zone, so the policy grants DeleteCertificate: {policy}"
    );
    // Each node verifies its audit chain in the background and reports it for the alert rules.
    let leader_url = cluster.node(cluster.leader().await).url();
    wait_for(
        "the audit chain verified",
        Duration::from_secs(30),
        || async {
            let text = cluster
                .http
                .get(format!("{leader_url}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let value = |name: &str| {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            };
            (value("certplane_audit_chain_broken ") == Some(0.0)
                && value("certplane_audit_last_verified_timestamp_seconds")
                    .is_some_and(|t| t > 1.0e9)
                && value("certplane_audit_verified_records").is_some_and(|n| n > 0.0))
            .then_some(())
        },
    )
    .await;
    let policies = policy["policies"].as_array().expect("policies");
    assert!(
        policies[0]["policy"]["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .any(|s| s["Action"] == json!(["sts:AssumeRole"]) && s["Resource"] == json!([role])),
        "the nodes may assume the role: {policy}"
    );
    assert!(
        policies.iter().any(|p| p["attach_to"] == role
            && p["policy"]
                .to_string()
                .contains("arn:aws:acm:eu-west-1:210987654321:certificate/*")),
        "the role's own policy is scoped to its account: {policy}"
    );
}

//! Three `certplane server` processes with mutual TLS on loopback. 1,000 imports go concurrently
//! through the followers; the leader is SIGKILLed mid-load. Every acknowledged import must be
//! readable from the survivors; the killed node restarts and catches up; all three end with the same
//! state digest and audit chain head, and `certplane audit verify` passes on each.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::webhooks::{start_receiver, Receiver};
use support::{wait_for, Certs};

const BIN: &str = env!("CARGO_BIN_EXE_certplane");

/// The tests here pick free ports and hand them to child processes, which bind them a moment later;
/// run one at a time so that no other test's listener takes a port in between.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const IMPORTS: usize = 1000;
const CONCURRENCY: usize = 32;

/// A port the kernel just handed out for 127.0.0.1:0 (released so the child process can bind it).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Proc {
    id: u64,
    api: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BIN)
            .args(&self.args)
            // moto's test credentials, for the nodes' ACM driver (default provider chain).
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn certplane server");
        self.child = Some(child);
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn cli(args: &[&str], addr: &str, token: &str) -> (i32, Value) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--addr", addr, "--token", token, "--output", "json"])
        .output()
        .expect("run certplane cli");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Option<Value> {
    let resp = http.get(url).bearer_auth(token).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

fn write_tls(dir: &Path) {
    let out = Command::new(BIN)
        .args(["tls", "init", "--nodes", "3", "--out"])
        .arg(dir)
        .output()
        .expect("tls init");
    assert!(
        out.status.success(),
        "tls init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["operator", "generate-kek", "--out"])
        .arg(dir.join("kek"))
        .output()
        .expect("kek");
    assert!(
        out.status.success(),
        "generate-kek: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three `certplane server` processes with mutual TLS and one KEK, started and initialised.
async fn start_three(dir: &Path, extra: &[&str]) -> (Vec<Proc>, reqwest::Client, String) {
    let tls = dir.join("tls");
    write_tls(&tls);
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}=127.0.0.1:{c}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, (api, cluster))| {
            let id = i as u64 + 1;
            let args: Vec<String> = [
                "server".to_string(),
                format!("--node-id={id}"),
                format!("--data-dir={}", dir.join(format!("node-{id}")).display()),
                format!("--api-addr=127.0.0.1:{api}"),
                format!("--cluster-addr=127.0.0.1:{cluster}"),
                format!("--initial-cluster={initial}"),
                format!("--tls-ca={}", tls.join("ca.pem").display()),
                format!(
                    "--tls-cert={}",
                    tls.join(format!("node-{id}.pem")).display()
                ),
                format!(
                    "--tls-key={}",
                    tls.join(format!("node-{id}-key.pem")).display()
                ),
                format!("--kek-file={}", tls.join("kek").display()),
                "--log=warn".to_string(),
            ]
            .into_iter()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect();
            Proc {
                id,
                api: format!("http://127.0.0.1:{api}"),
                args,
                child: None,
                log: dir.join(format!("node-{id}.log")),
            }
        })
        .collect();
    for p in &mut procs {
        p.spawn();
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let token: String = wait_for("init through node 1", Duration::from_secs(60), || async {
        let resp = http
            .post(format!("{}/v1/sys/init", procs[0].api))
            .json(&json!({}))
            .send()
            .await
            .ok()?;
        if resp.status().as_u16() != 201 {
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        v["root_token"].as_str().map(str::to_string)
    })
    .await;
    (procs, http, token)
}

/// Wait until the three nodes report the same applied index, state digest and audit head.
async fn wait_same_state(http: &reqwest::Client, apis: &[String], token: &str) {
    wait_for(
        "three nodes with the same state",
        Duration::from_secs(60),
        || async {
            let mut seen = Vec::new();
            for api in apis {
                let r = get(http, &format!("{api}/v1/sys/node"), token).await?;
                seen.push((
                    r["node"]["applied_index"].as_u64()?,
                    r["state_digest"].as_str()?.to_string(),
                    r["audit_head"]["hash"].as_str()?.to_string(),
                ));
            }
            let first = seen[0].clone();
            seen.iter().all(|s| *s == first).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_under_load_loses_no_acknowledged_import() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut procs, http, token) = start_three(dir.path(), &[]).await;
    let leader: u64 = wait_for("a leader", Duration::from_secs(30), || async {
        get(&http, &format!("{}/v1/sys/cluster", procs[0].api), &token).await?["leader"].as_u64()
    })
    .await;
    let followers: Vec<String> = procs
        .iter()
        .filter(|p| p.id != leader)
        .map(|p| p.api.clone())
        .collect();

    // Prepare 1,000 distinct certificates up front so the load is pure API traffic.
    let certs = Certs::new();
    let bodies: Vec<Value> = (0..IMPORTS)
        .map(|i| {
            certs.import_body(
                &format!("svc-{i}.mp.example.com"),
                10 + (i % 300) as i64,
                "team-mp",
                "mp",
            )
        })
        .collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (bodies, next, done, http, token, followers) = (
            bodies.clone(),
            next.clone(),
            done.clone(),
            http.clone(),
            token.clone(),
            followers.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut acked: Vec<(usize, String)> = Vec::new();
            let mut failed = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= bodies.len() {
                    break;
                }
                // Retry through the followers with the same Idempotency-Key until acknowledged.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let mut attempt = 0usize;
                loop {
                    let target = &followers[(w + attempt) % followers.len()];
                    let resp = http
                        .post(format!("{target}/v1/certificates/import"))
                        .bearer_auth(&token)
                        .header("idempotency-key", format!("mp-{i}"))
                        .json(&bodies[i])
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            acked.push((i, v["id"].as_str().unwrap_or_default().to_string()));
                            break;
                        }
                        Ok(r) if r.status().as_u16() != 503 => {
                            panic!("import {i} refused: {} {:?}", r.status(), r.text().await)
                        }
                        _ if tokio::time::Instant::now() > deadline => {
                            failed += 1;
                            break;
                        }
                        _ => attempt += 1,
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            (acked, failed)
        }));
    }

    // SIGKILL the leader once about a third of the imports are through.
    wait_for(
        "a third of the imports",
        Duration::from_secs(120),
        || async { (done.load(Ordering::SeqCst) >= IMPORTS / 3).then_some(()) },
    )
    .await;
    let killed = procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("leader process");
    killed.sigkill();

    let mut acked = BTreeMap::new();
    let mut failed = 0;
    for w in workers {
        let (a, f) = w.await.expect("worker");
        acked.extend(a);
        failed += f;
    }
    eprintln!(
        "acknowledged {} imports, {failed} not acknowledged within the retry budget",
        acked.len()
    );
    assert_eq!(acked.len() + failed, IMPORTS);
    assert!(
        acked.len() >= IMPORTS * 9 / 10,
        "too few imports acknowledged: {}",
        acked.len()
    );

    // Every acknowledged import is readable (linearizably) from both survivors.
    for api in &followers {
        for id in acked.values() {
            let v = get(&http, &format!("{api}/v1/certificates/{id}"), &token).await;
            assert!(v.is_some(), "{api} lost acknowledged certificate {id}");
        }
    }

    // The killed node restarts and catches up; all three agree.
    procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("leader")
        .spawn();
    let apis: Vec<String> = procs.iter().map(|p| p.api.clone()).collect();
    wait_same_state(&http, &apis, &token).await;
    let (_, report) = cli(&["cluster", "status"], &apis[0], &token);
    assert_eq!(
        report["members"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    for api in &apis {
        let (code, v) = cli(&["audit", "verify"], api, &token);
        assert_eq!(code, 0, "audit verify on {api}: {v}");
        assert_eq!(v["ok"], true);
        let report = get(&http, &format!("{api}/v1/sys/node"), &token)
            .await
            .expect("report");
        let active = report["certificates_active"].as_u64().unwrap_or(0);
        // Imports that ran out of retry budget may still have committed; none may be missing.
        assert!(
            active >= acked.len() as u64 && active <= IMPORTS as u64,
            "{api}: {active} active"
        );
    }
}

/// 500 certificate requests in flight through the followers when the leader is SIGKILLed: every
/// request ends in exactly one final state, none yields two certificates, and the inventory matches
/// the built-in CA's issued-serial record on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_during_issuance_neither_loses_nor_duplicates() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    const REQUESTS: usize = 500;
    support::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut procs, http, token) = start_three(dir.path(), &[]).await;
    let leader: u64 = wait_for("a leader", Duration::from_secs(30), || async {
        get(&http, &format!("{}/v1/sys/cluster", procs[0].api), &token).await?["leader"].as_u64()
    })
    .await;
    let zone = http
        .put(format!("{}/v1/zones/%2F", procs[0].api))
        .bearer_auth(&token)
        .json(&json!({ "policy": { "allowed_domains": { "value": [".fo.example.test"] } } }))
        .send()
        .await
        .expect("zone");
    assert!(zone.status().is_success());
    let followers: Vec<String> = procs
        .iter()
        .filter(|p| p.id != leader)
        .map(|p| p.api.clone())
        .collect();

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (next, done, http, token, followers) = (
            next.clone(),
            done.clone(),
            http.clone(),
            token.clone(),
            followers.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut ids: Vec<(usize, String)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    break;
                }
                let name = format!("svc-{i}.fo.example.test");
                let body = json!({ "zone": "/", "sans": [name], "key": { "type": "ecdsa_p256" } });
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let mut attempt = 0usize;
                loop {
                    let target = &followers[(w + attempt) % followers.len()];
                    let resp = http
                        .post(format!("{target}/v1/certificate-requests"))
                        .bearer_auth(&token)
                        .header("idempotency-key", format!("fo-{i}"))
                        .json(&body)
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            ids.push((i, v["id"].as_str().unwrap_or_default().to_string()));
                            break;
                        }
                        Ok(r) if r.status().as_u16() != 503 => {
                            panic!("request {i} refused: {} {:?}", r.status(), r.text().await)
                        }
                        _ => {
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "request {i} was never acknowledged"
                            );
                            attempt += 1;
                        }
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            ids
        }));
    }
    wait_for(
        "a third of the requests",
        Duration::from_secs(180),
        || async { (done.load(Ordering::SeqCst) >= REQUESTS / 3).then_some(()) },
    )
    .await;
    procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("leader process")
        .sigkill();
    let mut ids = BTreeMap::new();
    for w in workers {
        ids.extend(w.await.expect("worker"));
    }
    assert_eq!(ids.len(), REQUESTS, "every request was acknowledged");
    let distinct: std::collections::BTreeSet<&String> = ids.values().collect();
    assert_eq!(
        distinct.len(),
        REQUESTS,
        "one request id per Idempotency-Key"
    );

    // Every request reaches a final state under the new leader.
    let api = followers[0].clone();
    let mut certificate_ids = std::collections::BTreeSet::new();
    for id in ids.values() {
        let v: Value = wait_for("the request to finish", Duration::from_secs(60), || async {
            let v = get(
                &http,
                &format!("{api}/v1/certificate-requests/{id}"),
                &token,
            )
            .await?;
            matches!(v["state"].as_str(), Some("issued" | "failed")).then_some(v)
        })
        .await;
        assert_eq!(v["state"], "issued", "{v}");
        assert!(
            certificate_ids.insert(
                v["certificate_id"]
                    .as_str()
                    .expect("certificate")
                    .to_string()
            ),
            "two requests share a certificate"
        );
    }

    // The killed node comes back; on every node the inventory and the CA's record agree.
    procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("leader")
        .spawn();
    let apis: Vec<String> = procs.iter().map(|p| p.api.clone()).collect();
    wait_same_state(&http, &apis, &token).await;
    for api in &apis {
        let issuer = get(&http, &format!("{api}/v1/issuers/builtin"), &token)
            .await
            .expect("issuer");
        assert_eq!(issuer["issued_count"], REQUESTS as u64, "{api}: {issuer}");
        let issued = get(
            &http,
            &format!("{api}/v1/issuers/builtin/issued?limit=10000"),
            &token,
        )
        .await
        .expect("issued serials");
        let records = issued["items"].as_array().expect("items");
        assert_eq!(records.len(), REQUESTS, "{api}");
        let mut by_request = std::collections::BTreeSet::new();
        for r in records {
            assert!(
                by_request.insert(r["request_id"].as_str().unwrap_or_default().to_string()),
                "{api}: a request has two serials"
            );
            assert!(
                certificate_ids.contains(r["certificate_id"].as_str().unwrap_or_default()),
                "{api}: serial {} names a certificate outside the inventory",
                r["serial"]
            );
        }
        let report = get(&http, &format!("{api}/v1/sys/node"), &token)
            .await
            .expect("report");
        assert_eq!(report["certificates_active"], REQUESTS as u64, "{api}");
        let (code, v) = cli(&["audit", "verify"], api, &token);
        assert_eq!(code, 0, "audit verify on {api}: {v}");
    }
}

/// The README's first command: `certplane dev` starts a cluster, prints the API URLs and an admin
/// token that work, and stops cleanly (exit 0, temporary data removed) on Ctrl-C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_starts_serves_and_stops_on_ctrl_c() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    use std::io::{BufRead, BufReader};
    support::install_crypto();
    let mut child = Command::new(BIN)
        .args(["dev", "--nodes", "3", "--base-port", "0", "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn certplane dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut addr, mut token, mut data_dir) = (None, None, None);
    while token.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("dev output");
        if let Some(v) = line.strip_prefix("export CERTPLANE_ADDR=") {
            addr = Some(v.to_string());
        }
        if let Some(v) = line.strip_prefix("export CERTPLANE_TOKEN=") {
            token = Some(v.to_string());
        }
        if let Some(rest) = line.split("data in ").nth(1) {
            data_dir = Some(PathBuf::from(rest.trim()));
        }
    }
    let (addr, token) = (addr.expect("addr"), token.expect("token"));
    let (code, status) = cli(&["cluster", "status"], &addr, &token);
    assert_eq!(code, 0, "{status}");
    assert_eq!(
        status["members"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    let (code, _) = cli(&["audit", "verify"], &addr, &token);
    assert_eq!(code, 0);

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certplane dev did not stop on SIGINT"
        );
        std::thread::park_timeout(Duration::from_millis(50));
    };
    assert!(exit.success(), "certplane dev exited with {exit:?}");
    if let Some(dir) = data_dir {
        assert!(
            !dir.exists(),
            "the temporary data directory {} was left behind",
            dir.display()
        );
    }
}

/// An approval acknowledged through a follower survives a SIGKILL of the leader right after it,
/// and webhook deliveries in flight (the receiver fails each one three times) are all made after
/// the kill. Driven through the CLI, as an approver would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_and_webhook_deliveries_survive_a_leader_sigkill() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut procs, http, root) = start_three(dir.path(), &["--webhook-retry-base-ms=300"]).await;
    let api = procs[0].api.clone();
    let zone = http
        .put(format!("{api}/v1/zones/%2F"))
        .bearer_auth(&root)
        .json(&json!({ "policy": {
            "allowed_domains": { "value": [".mp.example.test"] },
            "approval_stages": { "value": [
                { "name": "owner", "role": "zone_owner", "count": 1 },
                { "name": "security", "group": "security", "count": 1 } ] } } }))
        .send()
        .await
        .expect("zone");
    assert!(zone.status().is_success());
    let secret = Arc::new(std::sync::Mutex::new(String::new()));
    let received = Arc::new(std::sync::Mutex::new(Receiver::default()));
    let url = start_receiver(secret.clone(), received.clone()).await;
    let hook: Value = http
        .post(format!("{api}/v1/webhooks"))
        .bearer_auth(&root)
        .json(&json!({ "zone": "/", "url": url, "events": ["*"] }))
        .send()
        .await
        .expect("webhook")
        .json()
        .await
        .expect("json");
    *secret.lock().expect("lock") = hook["secret"].as_str().expect("secret").to_string();
    let hook_id = hook["webhook"]["id"].as_str().expect("id").to_string();

    let new_token = |name: &str, extra: &[&str]| {
        let mut args = vec!["token", "create", "--name", name];
        args.extend_from_slice(extra);
        let (code, v) = cli(&args, &api, &root);
        assert_eq!(code, 0, "token create {name}: {v}");
        v["secret"].as_str().expect("secret").to_string()
    };
    let requester = new_token("requester", &["--bind", "requester=/"]);
    let owner = new_token("owner", &["--bind", "zone_owner=/"]);
    let security = new_token("security", &["--bind", "approver=/", "--group", "security"]);

    let (code, v) = cli(
        &[
            "request",
            "create",
            "--zone",
            "/",
            "--san",
            "app.mp.example.test",
        ],
        &api,
        &requester,
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["state"], "pending_approval", "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let (code, v) = cli(
        &["request", "approve", &id, "--comment", "mine"],
        &api,
        &requester,
    );
    assert_eq!(code, 4, "a requester cannot approve their own request: {v}");

    let leader: u64 = wait_for("a leader", Duration::from_secs(30), || async {
        get(&http, &format!("{api}/v1/sys/cluster"), &root).await?["leader"].as_u64()
    })
    .await;
    let follower = procs
        .iter()
        .find(|p| p.id != leader)
        .expect("follower")
        .api
        .clone();
    let (code, v) = cli(
        &["request", "approve", &id, "--comment", "owner ok"],
        &follower,
        &owner,
    );
    assert_eq!(code, 0, "{v}");
    // Acknowledged: kill the leader at once.
    procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("leader process")
        .sigkill();

    let queue = wait_for(
        "the security approver's queue on a survivor",
        Duration::from_secs(30),
        || async {
            let (code, v) = cli(&["approvals", "list", "--mine"], &follower, &security);
            (code == 0).then_some(v)
        },
    )
    .await;
    let listed: Vec<&str> = queue["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        listed,
        vec![id.as_str()],
        "the owner's approval survived the kill"
    );
    let (code, v) = cli(
        &["request", "approve", &id, "--comment", "security ok"],
        &follower,
        &security,
    );
    assert_eq!(code, 0, "{v}");
    let v = wait_for(
        "the request to be issued",
        Duration::from_secs(30),
        || async {
            let v = get(
                &http,
                &format!("{follower}/v1/certificate-requests/{id}"),
                &root,
            )
            .await?;
            (v["state"] == "issued").then_some(v)
        },
    )
    .await;
    assert_eq!(v["approval"]["decisions"].as_array().map(Vec::len), Some(2));

    procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("killed process")
        .spawn();
    let apis: Vec<String> = procs.iter().map(|p| p.api.clone()).collect();
    wait_same_state(&http, &apis, &root).await;

    let deliveries = wait_for("every delivery made", Duration::from_secs(60), || async {
        let v = get(
            &http,
            &format!("{follower}/v1/webhooks/{hook_id}/deliveries?limit=1000"),
            &root,
        )
        .await?;
        let items = v["items"].as_array()?.clone();
        // submitted, pending (stage 1), pending (stage 2), approved, issued.
        (items.len() >= 5 && items.iter().all(|d| d["state"] == "delivered")).then_some(items)
    })
    .await;
    let got = std::mem::take(&mut *received.lock().expect("lock"));
    assert_eq!(got.bad_signatures, 0);
    let ids: std::collections::BTreeSet<String> = deliveries
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    let accepted: std::collections::BTreeSet<String> = got.accepted.keys().cloned().collect();
    assert_eq!(
        ids, accepted,
        "every event accepted once, none lost by the kill"
    );
    let events: Vec<&str> = deliveries
        .iter()
        .filter_map(|d| d["event"].as_str())
        .collect();
    for kind in [
        "request.submitted",
        "request.pending_approval",
        "request.approved",
        "request.issued",
    ] {
        assert!(events.contains(&kind), "no {kind}: {events:?}");
    }
    for api in &apis {
        let (code, v) = cli(&["audit", "verify"], api, &root);
        assert_eq!(code, 0, "{api}: {v}");
    }
}

/// `certplane drill watch` through a follower while the leader is SIGKILLed (and later restarted):
/// one unavailability window, then every node with the same state. `certplane drill failover
/// --transfer` moves the leadership and reports the write gap. Both checked from `--output json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_watch_reports_the_failover_window_and_transfer_reports_its_gap() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    support::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut procs, http, root) = start_three(dir.path(), &[]).await;
    let api = procs[0].api.clone();
    let leader: u64 = wait_for("a leader", Duration::from_secs(30), || async {
        get(&http, &format!("{api}/v1/sys/cluster"), &root).await?["leader"].as_u64()
    })
    .await;
    let follower = procs
        .iter()
        .find(|p| p.id != leader)
        .expect("follower")
        .api
        .clone();
    let watch = Command::new(BIN)
        .args([
            "drill",
            "watch",
            "--id",
            "ci-drill",
            "--interval",
            "20ms",
            "--duration",
            "10m",
        ])
        .args([
            "--timeout",
            "200ms",
            "--addr",
            &follower,
            "--token",
            &root,
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("drill watch");
    let probed = |at_least: u64| {
        let (http, follower, root) = (http.clone(), follower.clone(), root.clone());
        async move {
            wait_for("probes to be written", Duration::from_secs(30), || async {
                let v = get(&http, &format!("{follower}/v1/sys/probe/ci-drill"), &root).await?;
                (v["seq"].as_u64()? >= at_least).then_some(v["seq"].as_u64()?)
            })
            .await
        }
    };
    let before = probed(10).await;
    procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("leader")
        .sigkill();
    // The watch keeps probing; once writes succeed again under the new leader, bring the old one
    // back and let it catch up before the watch ends.
    probed(before + 30).await;
    procs
        .iter_mut()
        .find(|p| p.id == leader)
        .expect("killed")
        .spawn();
    let apis: Vec<String> = procs.iter().map(|p| p.api.clone()).collect();
    wait_same_state(&http, &apis, &root).await;
    let last = probed(0).await;
    probed(last + 10).await;
    let pid = watch.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let out = watch.wait_with_output().expect("drill watch output");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drill watch JSON: {e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report}");
    println!("drill watch: {report}");
    let windows = report["windows"].as_array().expect("windows");
    assert_eq!(windows.len(), 1, "one unavailability window: {report}");
    let length = windows[0]["length_ms"].as_u64().expect("length");
    assert!(length > 0 && length < 10_000, "{report}");
    assert_eq!(windows[0]["open_at_end"], false);
    assert!(report["probes"].as_u64().unwrap_or(0) > 50);
    let settled = &report["settled"];
    assert_eq!(settled["digests_agree"], true, "{report}");
    assert_eq!(settled["audit_heads_agree"], true, "{report}");
    assert_eq!(settled["audit_chains_verified"], true, "{report}");
    assert_eq!(settled["nodes"].as_array().map(Vec::len), Some(3));

    // The planned variant.
    let (code, report) = cli(&["drill", "failover", "--transfer"], &follower, &root);
    println!("drill failover: {report}");
    assert_eq!(code, 0, "{report}");
    assert_ne!(report["from"], report["to"], "{report}");
    let gap = report["write_gap_ms"].as_u64().expect("gap");
    assert!(gap > 0 && gap < 5_000, "{report}");
    assert!(report["writes"].as_u64().unwrap_or(0) > 10, "{report}");
    let (code, _) = cli(&["drill", "failover"], &follower, &root);
    assert_ne!(
        code, 0,
        "without --transfer the command refuses to run by itself"
    );
}

/// 200 certificates deployed to ACM come due together; the leader is SIGKILLed mid-batch. Every
/// certificate is renewed exactly once (one new serial each, in the CA's issued-serial record),
/// every ARN is unchanged, moto holds no extra certificate, and ACM serves each new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_mid_renewal_batch_renews_each_certificate_once_to_the_same_arn() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    const CERTS: usize = 200;
    support::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let (moto, _proxy, _aws) = support::aws::start_aws(dir.path()).await;
    let endpoint = format!("--aws-endpoint-url={moto}");
    let (mut procs, http, token) = start_three(
        dir.path(),
        &[
            &endpoint,
            "--acm-import-rate=200",
            "--deploy-concurrency=16",
            "--deploy-retry-base-ms=300",
        ],
    )
    .await;
    let leader_of = |procs: &Vec<Proc>| {
        let apis: Vec<String> = procs
            .iter()
            .filter(|p| p.child.is_some())
            .map(|p| p.api.clone())
            .collect();
        let (http, token) = (http.clone(), token.clone());
        async move {
            wait_for("a leader", Duration::from_secs(30), || async {
                for api in &apis {
                    if let Some(v) = get(&http, &format!("{api}/v1/sys/cluster"), &token).await {
                        if let Some(l) = v["leader"].as_u64() {
                            return Some(l);
                        }
                    }
                }
                None
            })
            .await
        }
    };
    let put_zone = |auto_renew: bool| {
        let (http, token, api) = (http.clone(), token.clone(), procs[0].api.clone());
        async move {
            // Validity 120 s, renewal 90 s before expiry (spread over 9 s): the batch comes due
            // about 30 s after it was issued.
            let policy = json!({
                "max_validity": {"value": "120s"},
                "notify_before": {"value": "100s"},
                "renew_before": {"value": "90s"},
                "auto_renew": {"value": auto_renew},
                "destinations": {"value": [{"type": "acm", "region": "eu-west-1"}]},
            });
            wait_for("the zone stored", Duration::from_secs(30), || async {
                let r = http
                    .put(format!("{api}/v1/zones/batch"))
                    .bearer_auth(&token)
                    .json(&json!({ "policy": policy }))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            })
            .await;
        }
    };
    put_zone(true).await;
    let api = procs[0].api.clone();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (http, token, api) = (http.clone(), token.clone(), api.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (w..CERTS).step_by(8) {
                let body = json!({"zone": "/batch", "sans": [format!("b{i}.batch.example")],
                                  "key": {"type": "ecdsa_p256"}, "validity": "120s"});
                let v: Value =
                    wait_for("an issued certificate", Duration::from_secs(60), || async {
                        let r = http
                            .post(format!("{api}/v1/certificate-requests?wait=20s"))
                            .bearer_auth(&token)
                            .header("idempotency-key", format!("batch-{i}"))
                            .json(&body)
                            .send()
                            .await
                            .ok()?;
                        let v: Value = r.json().await.ok()?;
                        v["certificate_id"].is_string().then_some(v)
                    })
                    .await;
                ids.push(v["certificate_id"].as_str().unwrap_or_default().to_string());
            }
            ids
        }));
    }
    let mut originals = Vec::new();
    for t in tasks {
        originals.extend(t.await.expect("issuer task"));
    }
    assert_eq!(originals.len(), CERTS);
    // Successors are not renewed again; the originals keep their schedules.
    put_zone(false).await;

    let live = |procs: &Vec<Proc>| -> Vec<String> {
        procs
            .iter()
            .filter(|p| p.child.is_some())
            .map(|p| p.api.clone())
            .collect()
    };
    let all = live(&procs);
    // Every original deployed once, each to its own ARN.
    let mut arns = BTreeMap::new();
    for id in &originals {
        let c = wait_for("a deployed original", Duration::from_secs(60), || async {
            let c = first_answer(&http, &token, &all, &format!("/v1/certificates/{id}")).await?;
            (c["deployments"][0]["state"] == "deployed").then_some(c)
        })
        .await;
        arns.insert(
            id.clone(),
            c["deployments"][0]["arn"]
                .as_str()
                .expect("arn")
                .to_string(),
        );
    }
    let distinct: std::collections::BTreeSet<&String> = arns.values().collect();
    assert_eq!(distinct.len(), CERTS);

    // Mid-batch: once a tenth of the batch is renewed, SIGKILL the leader.
    let superseded = |procs_api: Vec<String>| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            for api in &procs_api {
                let url = format!("{api}/v1/certificates?zone=/batch&limit=1000");
                if let Some(v) = get(&http, &url, &token).await {
                    return Some(
                        v["items"]
                            .as_array()?
                            .iter()
                            .filter(|c| c["superseded_by"].is_string())
                            .count(),
                    );
                }
            }
            None
        }
    };
    let apis: Vec<String> = procs.iter().map(|p| p.api.clone()).collect();
    let at_kill = wait_for("renewals under way", Duration::from_secs(90), || async {
        superseded(apis.clone()).await.filter(|n| *n >= CERTS / 10)
    })
    .await;
    let leader = leader_of(&procs).await;
    procs[(leader - 1) as usize].sigkill();
    assert!(
        at_kill < CERTS,
        "the kill came after the whole batch ({at_kill})"
    );

    // A new leader finishes the batch: every original renewed, every successor deployed.
    let survivors = live(&procs);
    wait_for(
        "the whole batch renewed",
        Duration::from_secs(120),
        || async { superseded(survivors.clone()).await.filter(|n| *n == CERTS) },
    )
    .await;
    let mut successors = Vec::new();
    for id in &originals {
        let c = first_answer(&http, &token, &survivors, &format!("/v1/certificates/{id}"))
            .await
            .expect("original");
        let next = c["superseded_by"].as_str().expect("renewed").to_string();
        let s = wait_for("a deployed successor", Duration::from_secs(60), || async {
            let s = first_answer(
                &http,
                &token,
                &survivors,
                &format!("/v1/certificates/{next}"),
            )
            .await?;
            (s["deployments"][0]["state"] == "deployed").then_some(s)
        })
        .await;
        assert_eq!(s["supersedes"].as_str(), Some(id.as_str()));
        assert_eq!(
            s["deployments"][0]["arn"].as_str(),
            Some(arns[id].as_str()),
            "the ARN never changes"
        );
        assert_ne!(s["serial"], c["serial"]);
        successors.push(s);
    }
    // Exactly one new serial per certificate in the CA's record: the batch plus its renewals.
    let issued = get(
        &http,
        &format!("{}/v1/issuers/builtin/issued?limit=10000", survivors[0]),
        &token,
    )
    .await
    .expect("issued serials");
    let serials = issued["items"].as_array().expect("items");
    assert_eq!(
        serials.len(),
        2 * CERTS,
        "one renewal per certificate, no more"
    );
    let renewal_requests: std::collections::BTreeSet<&str> = serials
        .iter()
        .filter_map(|s| s["request_id"].as_str())
        .filter(|r| r.starts_with("renew-"))
        .collect();
    assert_eq!(renewal_requests.len(), CERTS);
    // ACM holds one certificate per original and serves each successor.
    let listed = support::aws::aws(&moto, "eu-west-1", &["acm", "list-certificates"]);
    assert_eq!(
        listed["CertificateSummaryList"].as_array().map(Vec::len),
        Some(CERTS),
        "no ARN was created twice"
    );
    let arn_list: Vec<String> = successors
        .iter()
        .map(|s| {
            s["deployments"][0]["arn"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let served = support::aws::served_serials(&moto, "eu-west-1", &arn_list).await;
    for (s, got) in successors.iter().zip(&served) {
        let want = s["serial"].as_str().unwrap_or("");
        assert!(
            certplane_aws::serial::same_serial(want, got),
            "ACM serves {got} at {}, not the renewal {want}",
            s["deployments"][0]["arn"]
        );
    }
    // The killed node comes back and agrees.
    procs[(leader - 1) as usize].spawn();
    wait_same_state(&http, &apis, &token).await;
}

/// The first node of `apis` that answers `path`.
async fn first_answer(
    http: &reqwest::Client,
    token: &str,
    apis: &[String],
    path: &str,
) -> Option<Value> {
    for api in apis {
        if let Some(v) = get(http, &format!("{api}{path}"), token).await {
            return Some(v);
        }
    }
    None
}

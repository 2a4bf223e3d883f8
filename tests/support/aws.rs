//! moto in server mode, the fault-injecting proxy (`aws_proxy.py`) in front of it, and awscli, for
//! the tests (and benchmarks) that meet the real AWS SDK.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Poll `check` every 50 ms until it yields `Some`; panic after `timeout`. (This file is shared
/// with the benchmarks, so it does not use the tests' own helpers.)
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: scripts/setup.sh installs moto and awscli into .venv",
        path.display()
    );
    path
}

pub fn aws_env() {
    // Test credentials for moto; set once, before any SDK client exists in this process.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        if std::env::var(k).as_deref() != Ok(v) {
            std::env::set_var(k, v);
        }
    }
}

pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// moto on a free port, and the proxy in front of it: (moto url, proxy url, processes).
pub async fn start_aws(dir: &Path) -> (String, String, Vec<Proc>) {
    let port = free_port();
    let moto = Proc(
        Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server"),
    );
    let moto_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for("moto", Duration::from_secs(60), || async {
        let r = http
            .get(format!("{moto_url}/moto-api/"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let port_file = dir.join("proxy.port");
    let proxy = Proc(
        Command::new("python3")
            .arg(repo().join("tests/support/aws_proxy.py"))
            .args(["--upstream", &moto_url, "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the AWS proxy"),
    );
    let proxy_url = wait_for("the proxy", Duration::from_secs(30), || async {
        let port = std::fs::read_to_string(&port_file).ok()?;
        let url = format!("http://127.0.0.1:{}", port.trim());
        let r = http
            .get(format!("{url}/__proxy/health"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(url)
    })
    .await;
    (moto_url, proxy_url, vec![proxy, moto])
}

pub async fn proxy_config(proxy: &str, config: Value) {
    let r = reqwest::Client::new()
        .post(format!("{proxy}/__proxy/config"))
        .json(&config)
        .send()
        .await
        .expect("proxy config");
    assert!(r.status().is_success(), "proxy refused {config}");
}

pub async fn proxy_log(proxy: &str) -> Vec<Value> {
    let v: Value = reqwest::Client::new()
        .get(format!("{proxy}/__proxy/log"))
        .send()
        .await
        .expect("proxy log")
        .json()
        .await
        .expect("log JSON");
    v["calls"].as_array().cloned().unwrap_or_default()
}

/// awscli against moto directly (not through the proxy).
pub fn aws(moto: &str, region: &str, args: &[&str]) -> Value {
    let out = Command::new(venv_bin("aws"))
        .args([
            "--endpoint-url",
            moto,
            "--region",
            region,
            "--output",
            "json",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("run aws");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("aws JSON")
}

/// The serial ACM serves at each ARN, read with the real SDK straight from moto (test credentials
/// given to the client, not taken from the environment).
pub async fn served_serials(moto: &str, region: &str, arns: &[String]) -> Vec<String> {
    let creds = aws_sdk_acm::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(moto)
        .credentials_provider(creds)
        .load()
        .await;
    let client = aws_sdk_acm::Client::new(&config);
    let mut out = Vec::new();
    for arn in arns {
        let described = client
            .describe_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("describe {arn}: {e:?}"));
        out.push(
            described
                .certificate()
                .and_then(|c| c.serial())
                .unwrap_or("")
                .to_string(),
        );
    }
    out
}

/// The quoted actions starting with `prefix` in the first `[...]` after `name = ` in the module's
/// iam.tf.
pub fn terraform_list(name: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let path = repo().join("terraform/modules/certplane-cluster/iam.tf");
    let text = std::fs::read_to_string(&path).expect("read iam.tf");
    let start = text
        .find(&format!("{name} = "))
        .unwrap_or_else(|| panic!("iam.tf defines {name}"));
    let rest = &text[start..];
    let open = rest.find('[').expect("a list");
    let close = open + rest[open..].find(']').expect("the list ends");
    rest[open..close]
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|a| a.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The ACM actions the Terraform module grants the nodes without its optional switches: the quoted
/// `acm:` entries of the `acm_certificate_actions` and `acm_list_actions` lists in iam.tf.
pub fn terraform_acm_actions() -> std::collections::BTreeSet<String> {
    let mut out = terraform_list("acm_certificate_actions", "acm:");
    out.extend(terraform_list("acm_list_actions", "acm:"));
    out
}

//! The policy and issuance subcommands: `zone`, `request`, `issuer`, and `cert renew|revoke|export-key`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::commands::{client, fail, local_fail, print};
use super::Target;

#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Every zone and its policy version.
    List,
    /// A zone's own policy (`/` is the root).
    Get { path: String },
    /// Store a zone's policy from a JSON file (`-` for standard input): `{"max_validity":
    /// {"value": "90d", "locked": true}, ...}`.
    Set {
        path: String,
        #[arg(long)]
        file: PathBuf,
        /// Fail with exit code 5 if the zone changed since this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// The merged policy in force, each value with the zone that set it.
    Effective { path: String },
    /// Check a request against the zone's policy without storing anything.
    Evaluate {
        path: String,
        #[command(flatten)]
        request: RequestArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    #[arg(long)]
    pub cn: Option<String>,
    /// A DNS name or IP address; repeat for several.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// A PKCS#10 CSR file: you keep the key.
    #[arg(long)]
    pub csr: Option<PathBuf>,
    /// Key certplane generates: ecdsa-p256 (default), ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long)]
    pub key_type: Option<String>,
    /// e.g. 90d.
    #[arg(long)]
    pub validity: Option<String>,
    #[arg(long)]
    pub issuer: Option<String>,
    #[arg(long)]
    pub owner: Option<String>,
    /// key=value; repeat for several.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Submit a certificate request and wait for the certificate.
    Create {
        #[arg(long)]
        zone: String,
        #[command(flatten)]
        request: RequestArgs,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Write the issued chain (PEM) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    Get {
        id: String,
    },
    /// Approve the current approval stage of a pending request.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject a pending request (ends it).
    Reject {
        id: String,
        #[arg(long)]
        comment: String,
    },
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        requester: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    List,
    Get {
        name: String,
    },
    /// Save the issuer's current CRL.
    Crl {
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// Write PEM instead of DER.
        #[arg(long)]
        pem: bool,
    },
    /// Import an existing internal CA (certificate and unencrypted key, PEM).
    Import {
        name: String,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Register an AWS Private CA as an issuer (the CA must be ACTIVE; its certificate is read).
    AddAcmPca {
        name: String,
        #[arg(long)]
        ca_arn: String,
        /// `csr` (IssueCertificate with the requester's CSR) or `acm-native` (the key stays in ACM).
        #[arg(long)]
        mode: String,
        /// Default: the region in the CA's ARN.
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        role_arn: Option<String>,
        #[arg(long)]
        template_arn: Option<String>,
        #[arg(long)]
        signing_algorithm: Option<String>,
    },
}

fn read_file(path: &PathBuf) -> Result<String, String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `/prod/payments` -> `/v1/zones/prod/payments`; `/` -> `/v1/zones/%2F`.
pub fn zone_url(path: &str, action: Option<&str>) -> String {
    let inner = path.trim().trim_matches('/');
    match (inner.is_empty(), action) {
        (true, None) => "/v1/zones/%2F".to_string(),
        (true, Some(a)) => format!("/v1/zones/{a}"),
        (false, None) => format!("/v1/zones/{inner}"),
        (false, Some(a)) => format!("/v1/zones/{inner}/{a}"),
    }
}

fn key_spec(text: &str) -> Result<Value, String> {
    Ok(match text {
        "ecdsa-p256" | "ecdsa_p256" | "p256" => json!({ "type": "ecdsa_p256" }),
        "ecdsa-p384" | "ecdsa_p384" | "p384" => json!({ "type": "ecdsa_p384" }),
        "ed25519" => json!({ "type": "ed25519" }),
        other => match other.strip_prefix("rsa-").or_else(|| other.strip_prefix("rsa")) {
            Some(bits) => {
                let bits: u32 = bits
                    .trim_start_matches(['-', '_'])
                    .parse()
                    .map_err(|_| format!("--key-type {other:?}: rsa-2048, rsa-3072 or rsa-4096"))?;
                json!({ "type": "rsa", "bits": bits })
            }
            None => return Err(format!(
                "--key-type {other:?}: one of ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096"
            )),
        },
    })
}

fn tags(list: &[String]) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for t in list {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| format!("--tag {t:?} is not key=value"))?;
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(map)
}

fn request_body(zone: Option<&str>, args: &RequestArgs) -> Result<Value, String> {
    let mut body = Map::new();
    if let Some(z) = zone {
        body.insert("zone".into(), json!(z));
    }
    if let Some(cn) = &args.cn {
        body.insert("common_name".into(), json!(cn));
    }
    body.insert("sans".into(), json!(args.sans));
    if let Some(csr) = &args.csr {
        body.insert("csr_pem".into(), json!(read_file(csr)?));
    }
    if let Some(k) = &args.key_type {
        body.insert("key".into(), key_spec(k)?);
    }
    for (field, value) in [
        ("validity", &args.validity),
        ("issuer", &args.issuer),
        ("owner", &args.owner),
    ] {
        if let Some(v) = value {
            body.insert(field.into(), json!(v));
        }
    }
    body.insert("tags".into(), Value::Object(tags(&args.tags)?));
    Ok(Value::Object(body))
}

fn violations_text(v: &Value) -> String {
    v["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            format!(
                "  {} (set by {}): {} [{}]",
                x["rule"].as_str().unwrap_or(""),
                x["zone"].as_str().unwrap_or(""),
                x["message"].as_str().unwrap_or(""),
                x["value"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn request_line(v: &Value) -> String {
    let mut line = format!(
        "{}  {:<16} zone={} names={} issuer={}",
        v["id"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["zone"].as_str().unwrap_or(""),
        v["sans"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        v["issuer"].as_str().unwrap_or(""),
    );
    if let Some(c) = v["certificate_id"].as_str() {
        line.push_str(&format!(" certificate={c}"));
    }
    if let Some(e) = v["error"].as_str() {
        line.push_str(&format!(" error={e:?}"));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        line.push_str(&format!("\n  warning: {}", w.as_str().unwrap_or("")));
    }
    let violations = violations_text(v);
    if !violations.is_empty() {
        line.push('\n');
        line.push_str(&violations);
    }
    line
}

pub async fn zone(target: Target, command: ZoneCommand) -> i32 {
    let c = client(&target);
    let result = match command {
        ZoneCommand::List => c.get("/v1/zones", &[]).await.map(|v| {
            print(target.output, &v, |v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|z| format!("{}  v{}", z["path"].as_str().unwrap_or(""), z["version"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }),
        ZoneCommand::Get { path } => c.get(&zone_url(&path, None), &[]).await.map(|v| {
            print(target.output, &v, |v| {
                format!(
                    "{}  version {}\n{}",
                    v["path"].as_str().unwrap_or(""),
                    v["version"],
                    serde_json::to_string_pretty(&v["policy"]).unwrap_or_default()
                )
            })
        }),
        ZoneCommand::Set {
            path,
            file,
            expected_version,
        } => {
            let text = match read_file(&file) {
                Ok(t) => t,
                Err(e) => return local_fail(e),
            };
            let policy: Value = match serde_json::from_str(&text) {
                Ok(p) => p,
                Err(e) => return local_fail(format!("{} is not JSON: {e}", file.display())),
            };
            c.put(
                &zone_url(&path, None),
                &json!({ "policy": policy, "expected_version": expected_version }),
            )
            .await
            .map(|v| {
                print(target.output, &v, |v| {
                    format!(
                        "{} now at version {}",
                        v["path"].as_str().unwrap_or(""),
                        v["version"]
                    )
                })
            })
        }
        ZoneCommand::Effective { path } => c
            .get(&zone_url(&path, Some("effective")), &[])
            .await
            .map(|v| {
                print(target.output, &v, |v| {
                    let mut lines = vec![format!(
                        "effective policy of {}",
                        v["path"].as_str().unwrap_or("")
                    )];
                    if let Some(map) = v["policy"].as_object() {
                        for (field, e) in map {
                            if field == "rules" {
                                for r in e.as_array().into_iter().flatten() {
                                    lines.push(format!(
                                        "  rule {} = {}  (from {}{})",
                                        r["name"].as_str().unwrap_or(""),
                                        r["expression"].as_str().unwrap_or(""),
                                        r["zone"].as_str().unwrap_or(""),
                                        if r["locked"] == true { ", locked" } else { "" }
                                    ));
                                }
                                continue;
                            }
                            lines.push(format!(
                                "  {field} = {}  (from {}{})",
                                e["value"],
                                e["zone"].as_str().unwrap_or(""),
                                if e["locked"] == true { ", locked" } else { "" }
                            ));
                        }
                    }
                    lines.join("\n")
                })
            }),
        ZoneCommand::Evaluate { path, request } => {
            let body = match request_body(None, &request) {
                Ok(b) => b,
                Err(e) => return local_fail(e),
            };
            match c
                .post(&zone_url(&path, Some("evaluate")), &body, None)
                .await
            {
                Ok(v) => {
                    print(target.output, &v, |v| {
                        if v["allowed"] == true {
                            format!(
                                "allowed (issuer {}{})",
                                v["issuer"].as_str().unwrap_or(""),
                                if v["approval_required"] == true {
                                    ", approval required"
                                } else {
                                    ""
                                }
                            )
                        } else {
                            format!("refused:\n{}", violations_text(v))
                        }
                    });
                    // A refusal is an answer, but scripts need to tell it apart.
                    return if v["allowed"] == true { 0 } else { 7 };
                }
                Err(e) => Err(e),
            }
        }
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

pub async fn request(target: Target, command: RequestCommand) -> i32 {
    let c = client(&target);
    let result = match command {
        RequestCommand::Create {
            zone,
            request,
            idempotency_key,
            out,
        } => {
            let body = match request_body(Some(&zone), &request) {
                Ok(b) => b,
                Err(e) => return local_fail(e),
            };
            match c
                .post(
                    "/v1/certificate-requests",
                    &body,
                    idempotency_key.as_deref(),
                )
                .await
            {
                Ok(v) => {
                    if let (Some(path), Some(chain)) =
                        (&out, v["certificate"]["chain_pem"].as_str())
                    {
                        if let Err(e) = std::fs::write(path, chain) {
                            return local_fail(format!("cannot write {}: {e}", path.display()));
                        }
                    }
                    print(target.output, &v, request_line);
                    return match v["state"].as_str() {
                        Some("issued" | "pending_approval" | "approved" | "issuing") => 0,
                        _ => 1,
                    };
                }
                Err(e) => Err(e),
            }
        }
        RequestCommand::Approve { id, comment } => {
            return super::governance::decide(&target, &id, true, comment).await
        }
        RequestCommand::Reject { id, comment } => {
            return super::governance::decide(&target, &id, false, comment).await
        }
        RequestCommand::Get { id } => c
            .get(&format!("/v1/certificate-requests/{id}"), &[])
            .await
            .map(|v| print(target.output, &v, request_line)),
        RequestCommand::List {
            state,
            zone,
            owner,
            requester,
            limit,
            cursor,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("state", state),
                ("zone", zone),
                ("owner", owner),
                ("requester", requester),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            c.get("/v1/certificate-requests", &query).await.map(|v| {
                print(target.output, &v, |v| {
                    let mut lines: Vec<String> = v["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(request_line)
                        .collect();
                    if let Some(n) = v["next_cursor"].as_str() {
                        lines.push(format!("(more: --cursor {n})"));
                    }
                    lines.join("\n")
                })
            })
        }
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

fn issuer_line(v: &Value) -> String {
    format!(
        "{}  {}  {}  key={} issued={} revoked={} until {}",
        v["name"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
        v["subject"].as_str().unwrap_or(""),
        v["key_algorithm"].as_str().unwrap_or(""),
        v["issued_count"],
        v["revoked_count"],
        v["not_after"].as_str().unwrap_or("")
    )
}

pub async fn issuer(target: Target, command: IssuerCommand) -> i32 {
    let c = client(&target);
    let result = match command {
        IssuerCommand::List => c.get("/v1/issuers", &[]).await.map(|v| {
            print(target.output, &v, |v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(issuer_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }),
        IssuerCommand::Get { name } => c
            .get(&format!("/v1/issuers/{name}"), &[])
            .await
            .map(|v| print(target.output, &v, issuer_line)),
        IssuerCommand::Crl { name, out, pem } => {
            let query = if pem {
                vec![("format", "pem".to_string())]
            } else {
                vec![]
            };
            match c
                .get_bytes(&format!("/v1/issuers/{name}/crl"), &query)
                .await
            {
                Ok(bytes) => {
                    if let Err(e) = std::fs::write(&out, &bytes) {
                        return local_fail(format!("cannot write {}: {e}", out.display()));
                    }
                    let v = json!({ "file": out, "bytes": bytes.len() });
                    print(target.output, &v, |_| {
                        format!(
                            "saved the CRL of {name} ({} bytes) to {}",
                            bytes.len(),
                            out.display()
                        )
                    });
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        IssuerCommand::Import { name, cert, key } => {
            let (cert_pem, key_pem) = match (read_file(&cert), read_file(&key)) {
                (Ok(c), Ok(k)) => (c, k),
                (Err(e), _) | (_, Err(e)) => return local_fail(e),
            };
            c.post(
                "/v1/issuers",
                &json!({ "name": name, "cert_pem": cert_pem, "key_pem": key_pem }),
                None,
            )
            .await
            .map(|v| print(target.output, &v, issuer_line))
        }
        IssuerCommand::AddAcmPca {
            name,
            ca_arn,
            mode,
            region,
            role_arn,
            template_arn,
            signing_algorithm,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("ca_arn".into(), json!(ca_arn));
            body.insert("mode".into(), json!(mode));
            for (k, v) in [
                ("region", region),
                ("role_arn", role_arn),
                ("template_arn", template_arn),
                ("signing_algorithm", signing_algorithm),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            c.post("/v1/aws/pca-issuers", &Value::Object(body), None)
                .await
                .map(|v| print(target.output, &v, issuer_line))
        }
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

/// What `cert renew` may change.
pub struct RenewOptions {
    pub validity: Option<String>,
    pub key_type: Option<String>,
    pub csr: Option<PathBuf>,
    pub idempotency_key: Option<String>,
}

/// `cert renew`.
pub async fn renew(target: &Target, id: &str, options: RenewOptions) -> i32 {
    let mut body = Map::new();
    if let Some(v) = options.validity {
        body.insert("validity".into(), json!(v));
    }
    if let Some(k) = options.key_type {
        match key_spec(&k) {
            Ok(spec) => {
                body.insert("key".into(), spec);
            }
            Err(e) => return local_fail(e),
        }
    }
    if let Some(path) = &options.csr {
        match read_file(path) {
            Ok(pem) => {
                body.insert("csr_pem".into(), json!(pem));
            }
            Err(e) => return local_fail(e),
        }
    }
    let idempotency_key = options.idempotency_key;
    match client(target)
        .post(
            &format!("/v1/certificates/{id}/renew"),
            &Value::Object(body),
            idempotency_key.as_deref(),
        )
        .await
    {
        Ok(v) => {
            print(target.output, &v, request_line);
            match v["state"].as_str() {
                Some("issued" | "pending_approval" | "approved" | "issuing") => 0,
                _ => 1,
            }
        }
        Err(e) => fail(&e),
    }
}

/// `cert revoke`.
pub async fn revoke(target: &Target, id: &str, reason: &str) -> i32 {
    match client(target)
        .post(
            &format!("/v1/certificates/{id}/revoke"),
            &json!({ "reason": reason }),
            None,
        )
        .await
    {
        Ok(v) => {
            print(target.output, &v, |v| {
                format!(
                    "{} revoked ({})",
                    v["id"].as_str().unwrap_or(""),
                    v["revocation_reason"].as_str().unwrap_or("")
                )
            });
            0
        }
        Err(e) => fail(&e),
    }
}

/// `cert export-key`: writes the key to a file created with mode 0600, never to the terminal unless
/// asked with `--out -`.
pub async fn export_key(target: &Target, id: &str, out: &PathBuf) -> i32 {
    match client(target)
        .get(&format!("/v1/certificates/{id}/private-key"), &[])
        .await
    {
        Ok(v) => {
            let Some(pem) = v["private_key_pem"].as_str() else {
                return local_fail("the answer holds no key");
            };
            if out.as_os_str() == "-" {
                print!("{pem}");
                return 0;
            }
            let written = {
                use std::io::Write;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                options
                    .open(out)
                    .and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|_| f.sync_all()))
            };
            match written {
                Ok(()) => {
                    eprintln!(
                        "wrote the private key of {id} to {} (mode 0600)",
                        out.display()
                    );
                    0
                }
                Err(e) => local_fail(format!("cannot write {}: {e}", out.display())),
            }
        }
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_urls() {
        assert_eq!(zone_url("/", None), "/v1/zones/%2F");
        assert_eq!(zone_url("/", Some("effective")), "/v1/zones/effective");
        assert_eq!(zone_url("/prod/payments", None), "/v1/zones/prod/payments");
        assert_eq!(
            zone_url("prod", Some("evaluate")),
            "/v1/zones/prod/evaluate"
        );
    }

    #[test]
    fn key_types() {
        assert_eq!(
            key_spec("rsa-3072").unwrap(),
            json!({"type":"rsa","bits":3072})
        );
        assert_eq!(
            key_spec("ecdsa-p384").unwrap(),
            json!({"type":"ecdsa_p384"})
        );
        assert!(key_spec("dsa").is_err());
    }
}

//! The governance subcommands: `token`, `approvals`, `whoami`, `request approve|reject`.

use clap::Subcommand;
use serde_json::{json, Value};

use super::commands::{client, fail, local_fail, print};
use super::Target;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token; the secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// A role over a zone and everything below it, e.g. `requester=/dev`, `admin=/`. Repeatable.
        #[arg(long = "bind", required = true)]
        bindings: Vec<String>,
        /// An approval group, e.g. `security`. Repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// e.g. `90d`.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Map a client certificate's subject (mutual TLS) to role bindings.
    CreateForCertificate {
        #[arg(long)]
        name: String,
        /// The subject as `certplane whoami` shows it over mutual TLS, e.g. `CN=deploy-bot,O=Example`.
        #[arg(long)]
        subject: String,
        #[arg(long = "bind", required = true)]
        bindings: Vec<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        expires_in: Option<String>,
    },
    List,
    Get {
        id: String,
    },
    /// Revoke a token or client-certificate principal.
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests; `--mine` for those you may decide now.
    List {
        #[arg(long)]
        mine: bool,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

fn binding(text: &str) -> Result<Value, String> {
    let (role, zone) = text
        .split_once('=')
        .ok_or_else(|| format!("--bind {text}: expected ROLE=ZONE, e.g. requester=/dev"))?;
    Ok(json!({ "role": role.trim(), "zone": zone.trim() }))
}

fn token_body(
    name: String,
    subject: Option<String>,
    bindings: &[String],
    groups: Vec<String>,
    expires_in: Option<String>,
) -> Result<Value, String> {
    let bindings = bindings
        .iter()
        .map(|b| binding(b))
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = json!({ "name": name, "bindings": bindings, "groups": groups });
    if let Some(e) = expires_in {
        body["expires_in"] = json!(e);
    }
    if let Some(s) = subject {
        body["subject"] = json!(s);
    }
    Ok(body)
}

fn token_line(v: &Value) -> String {
    let bindings: Vec<String> = v["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            format!(
                "{}={}",
                b["role"].as_str().unwrap_or(""),
                b["zone"].as_str().unwrap_or("")
            )
        })
        .collect();
    let state = if v["revoked_at"].is_string() {
        "revoked"
    } else {
        "active"
    };
    format!(
        "{}  {}  {}  [{}]  groups={}  {}",
        v["id"].as_str().unwrap_or(""),
        v["name"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
        bindings.join(" "),
        v["groups"]
            .as_array()
            .map(|g| g
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        state
    )
}

pub async fn token(target: Target, command: TokenCommand) -> i32 {
    let c = client(&target);
    let created = |v: &Value| {
        let mut text = token_line(&v["token"]);
        if let Some(secret) = v["secret"].as_str() {
            text.push_str(&format!(
                "\nsecret: {secret}\n(shown once; store it safely)"
            ));
        }
        text
    };
    let result = match command {
        TokenCommand::Create {
            name,
            bindings,
            groups,
            expires_in,
        } => {
            let body = match token_body(name, None, &bindings, groups, expires_in) {
                Ok(b) => b,
                Err(e) => return local_fail(e),
            };
            c.post("/v1/tokens", &body, None)
                .await
                .map(|v| print(target.output, &v, created))
        }
        TokenCommand::CreateForCertificate {
            name,
            subject,
            bindings,
            groups,
            expires_in,
        } => {
            let body = match token_body(name, Some(subject), &bindings, groups, expires_in) {
                Ok(b) => b,
                Err(e) => return local_fail(e),
            };
            c.post("/v1/principals/certificate", &body, None)
                .await
                .map(|v| print(target.output, &v, created))
        }
        TokenCommand::List => c.get("/v1/tokens", &[]).await.map(|v| {
            print(target.output, &v, |v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(token_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }),
        TokenCommand::Get { id } => c
            .get(&format!("/v1/tokens/{id}"), &[])
            .await
            .map(|v| print(target.output, &v, token_line)),
        TokenCommand::Revoke { id } => c
            .delete(&format!("/v1/tokens/{id}"), &[])
            .await
            .map(|v| print(target.output, &v, token_line)),
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

pub fn approval_line(v: &Value) -> String {
    let stage = v["approval"]["current"].as_u64().unwrap_or(0) as usize;
    let stage_name = v["approval"]["stages"][stage]["name"]
        .as_str()
        .unwrap_or("-");
    format!(
        "{}  {}  {}  {}  stage={}  by {}",
        v["id"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["zone"].as_str().unwrap_or(""),
        v["common_name"].as_str().unwrap_or(""),
        stage_name,
        v["requested_by"].as_str().unwrap_or("")
    )
}

pub async fn approvals(target: Target, command: ApprovalsCommand) -> i32 {
    let c = client(&target);
    let ApprovalsCommand::List { mine, zone, limit } = command;
    let mut query = vec![("limit", limit.to_string()), ("mine", mine.to_string())];
    if let Some(z) = zone {
        query.push(("zone", z));
    }
    match c.get("/v1/approvals", &query).await {
        Ok(v) => {
            print(target.output, &v, |v| {
                v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(approval_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            0
        }
        Err(e) => fail(&e),
    }
}

/// `request approve|reject`.
pub async fn decide(target: &Target, id: &str, approve: bool, comment: String) -> i32 {
    let c = client(target);
    let verb = if approve { "approve" } else { "reject" };
    match c
        .post(
            &format!("/v1/certificate-requests/{id}/{verb}"),
            &json!({ "comment": comment }),
            None,
        )
        .await
    {
        Ok(v) => {
            print(target.output, &v, approval_line);
            0
        }
        Err(e) => fail(&e),
    }
}

pub async fn whoami(target: Target) -> i32 {
    match client(&target).get("/v1/whoami", &[]).await {
        Ok(v) => {
            print(target.output, &v, |v| {
                let mut line = token_line(v);
                line.truncate(line.rfind("  ").unwrap_or(line.len()));
                line
            });
            0
        }
        Err(e) => fail(&e),
    }
}

//! The API-client subcommands (`cluster`, `cert`, `audit`) and their text output.

use serde_json::{json, Value};

use super::{AuditCommand, CertCommand, ClusterCommand, Output, Target};
use crate::client::{ApiClient, ClientError};

pub(super) fn print(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Text => println!("{}", text(value)),
    }
}

pub(super) fn fail(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

pub(super) fn local_fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("error: {message}");
    1
}

pub(super) fn client(t: &Target) -> ApiClient {
    match (&t.ca_file, &t.client_cert, &t.client_key) {
        (None, None, None) => ApiClient::new(&t.addr, t.token.clone()),
        (ca, cert, key) => {
            let read =
                |p: &Option<std::path::PathBuf>| p.as_ref().and_then(|p| std::fs::read(p).ok());
            let identity = match (read(cert), read(key)) {
                (Some(mut c), Some(k)) => {
                    c.extend_from_slice(&k);
                    Some(c)
                }
                _ => None,
            };
            ApiClient::with_tls(&t.addr, t.token.clone(), read(ca), identity)
        }
    }
}

fn cert_line(c: &Value) -> String {
    format!(
        "{}  {:<8} {:>5}d  {}  owner={} zone={}",
        c["id"].as_str().unwrap_or(""),
        c["status"].as_str().unwrap_or(""),
        c["days_to_expiry"],
        c["common_name"]
            .as_str()
            .or(c["subject"].as_str())
            .unwrap_or(""),
        c["owner"].as_str().unwrap_or(""),
        c["zone"].as_str().unwrap_or(""),
    )
}

fn members_text(v: &Value) -> String {
    let mut out = String::new();
    for m in v["members"].as_array().into_iter().flatten() {
        let lag = m["lag"]
            .as_u64()
            .map(|l| format!(" lag={l}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>3} {:<8} cluster={} api={}{}\n",
            m["id"],
            if m["voter"].as_bool() == Some(true) {
                "voter"
            } else {
                "learner"
            },
            m["cluster_addr"].as_str().unwrap_or(""),
            m["api_addr"].as_str().unwrap_or(""),
            lag
        ));
    }
    out.trim_end().to_string()
}

pub(super) async fn cluster(target: Target, command: ClusterCommand) -> i32 {
    let c = client(&target);
    let result = match command {
        ClusterCommand::Status => match c.get("/v1/sys/cluster", &[]).await {
            Ok(v) => {
                // The leader's view carries replication progress; ask it when it is elsewhere.
                let leader_view = match v["leader_api_addr"].as_str() {
                    Some(addr) if !addr.is_empty() && addr != c.base() && v["state"] != "Leader" => {
                        ApiClient::new(addr, target.token.clone()).get("/v1/sys/cluster", &[]).await.ok()
                    }
                    _ => None,
                };
                Ok(leader_view.unwrap_or(v))
            }
            Err(e) => Err(e),
        }
        .map(|v| {
            print(target.output, &v, |v| {
                format!(
                    "leader: {}  term: {}  committed: {}  applied(here): {}\n{}",
                    v["leader"], v["term"], v["committed_index"], v["applied_index"], members_text(v)
                )
            })
        }),
        ClusterCommand::Members => c.get("/v1/sys/cluster", &[]).await.map(|v| print(target.output, &v, members_text)),
        ClusterCommand::Add { id, cluster_addr, api_addr, learner } => c
            .post("/v1/sys/cluster/members", &json!({ "id": id, "cluster_addr": cluster_addr, "api_addr": api_addr, "voter": !learner }), None)
            .await
            .map(|v| print(target.output, &v, members_text)),
        ClusterCommand::Remove { id } => {
            c.delete(&format!("/v1/sys/cluster/members/{id}"), &[]).await.map(|v| print(target.output, &v, members_text))
        }
        ClusterCommand::TransferLeader { to } => c
            .post("/v1/sys/cluster/transfer-leader", &json!({ "to": to }), None)
            .await
            .map(|v| print(target.output, &v, |v| format!("leadership moving from {} to {}", v["from"], v["to"]))),
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

pub(super) async fn cert(target: Target, command: CertCommand) -> i32 {
    let c = client(&target);
    let result = match command {
        CertCommand::Import {
            chain,
            key,
            owner,
            zone,
            tags,
            idempotency_key,
        } => {
            let chain_pem = match std::fs::read_to_string(&chain) {
                Ok(s) => s,
                Err(e) => return local_fail(format!("cannot read {}: {e}", chain.display())),
            };
            let key_pem = match key.map(std::fs::read_to_string).transpose() {
                Ok(k) => k,
                Err(e) => return local_fail(format!("cannot read the key: {e}")),
            };
            let mut tag_map = serde_json::Map::new();
            for t in tags {
                let Some((k, v)) = t.split_once('=') else {
                    return local_fail(format!("--tag {t:?} is not key=value"));
                };
                tag_map.insert(k.to_string(), Value::String(v.to_string()));
            }
            let body = json!({ "chain_pem": chain_pem, "private_key_pem": key_pem, "owner": owner, "zone": zone, "tags": tag_map });
            c.post("/v1/certificates/import", &body, idempotency_key.as_deref())
                .await
                .map(|v| print(target.output, &v, cert_line))
        }
        CertCommand::List {
            expiring_within,
            owner,
            zone,
            issuer,
            name,
            status,
            limit,
            cursor,
            all,
            stale,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("expiring_within", expiring_within),
                ("owner", owner),
                ("zone", zone),
                ("issuer", issuer),
                ("name", name),
                ("status", status),
            ] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            if stale {
                query.push(("consistency", "stale".into()));
            }
            let mut cursor = cursor;
            let mut items = Vec::new();
            let mut next;
            loop {
                let mut q = query.clone();
                if let Some(c) = &cursor {
                    q.push(("cursor", c.clone()));
                }
                match c.get("/v1/certificates", &q).await {
                    Ok(v) => {
                        items.extend(v["items"].as_array().cloned().unwrap_or_default());
                        next = v["next_cursor"].as_str().map(str::to_string);
                        if all && next.is_some() {
                            cursor = next.clone();
                            continue;
                        }
                        break;
                    }
                    Err(e) => return fail(&e),
                }
            }
            let v = json!({ "items": items, "next_cursor": next });
            print(target.output, &v, |v| {
                let mut lines: Vec<String> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cert_line)
                    .collect();
                if let Some(n) = v["next_cursor"].as_str() {
                    lines.push(format!("(more: --cursor {n})"));
                }
                lines.join("\n")
            });
            Ok(())
        }
        CertCommand::Get { id } => c
            .get(&format!("/v1/certificates/{id}"), &[])
            .await
            .map(|v| {
                print(target.output, &v, |v| {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                })
            }),
        CertCommand::Retire { id, reason } => {
            let q: Vec<(&str, String)> = reason.map(|r| vec![("reason", r)]).unwrap_or_default();
            c.delete(&format!("/v1/certificates/{id}"), &q)
                .await
                .map(|v| print(target.output, &v, cert_line))
        }
        CertCommand::Renew {
            id,
            validity,
            key_type,
            csr,
            idempotency_key,
        } => {
            let options = super::issuance::RenewOptions {
                validity,
                key_type,
                csr,
                idempotency_key,
            };
            return super::issuance::renew(&target, &id, options).await;
        }
        CertCommand::Revoke { id, reason } => {
            return super::issuance::revoke(&target, &id, &reason).await
        }
        CertCommand::ExportKey { id, out } => {
            return super::issuance::export_key(&target, &id, &out).await
        }
    };
    result.map(|_| 0).unwrap_or_else(|e| fail(&e))
}

/// One audit record as `audit show` prints it: the headline, then one line per detail it carries.
fn audit_block(r: &Value) -> String {
    let mut out = format!(
        "#{} {} {} {} {} by {}",
        r["seq"],
        r["at"],
        r["action"].as_str().unwrap_or(""),
        r["object"].as_str().unwrap_or(""),
        r["outcome"].as_str().unwrap_or(""),
        r["actor"].as_str().unwrap_or("")
    );
    // The record's details are flattened into it.
    let d = r;
    for (label, key) in [
        ("request", "request_id"),
        ("issuer", "issuer"),
        ("certificate", "certificate_id"),
        ("serial", "serial"),
        ("aws request id", "aws_request_id"),
        ("ca arn", "ca_arn"),
        ("arn", "arn"),
        ("comment", "comment"),
    ] {
        if let Some(v) = d[key].as_str() {
            out.push_str(&format!("\n    {label}: {v}"));
        }
    }
    if let Some(a) = d["approvers"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!("\n    approvers: {}", names.join(", ")));
    }
    if let Some(p) = d["policy_versions"].as_array().filter(|p| !p.is_empty()) {
        let versions: Vec<String> = p
            .iter()
            .map(|z| format!("{}@{}", z[0].as_str().unwrap_or(""), z[1]))
            .collect();
        out.push_str(&format!("\n    policy: {}", versions.join(" ")));
    }
    out
}

pub(super) async fn audit(target: Target, command: AuditCommand) -> i32 {
    let c = client(&target);
    match command {
        AuditCommand::List {
            actor,
            action,
            object,
            limit,
            cursor,
        } => {
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("actor", actor),
                ("action", action),
                ("object", object),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            match c.get("/v1/audit", &q).await {
                Ok(v) => {
                    print(target.output, &v, |v| {
                        v["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|r| {
                                format!(
                                    "{:>6} {} {:<20} {:<40} {} by {}",
                                    r["seq"],
                                    r["at"],
                                    r["action"].as_str().unwrap_or(""),
                                    r["object"].as_str().unwrap_or(""),
                                    r["outcome"].as_str().unwrap_or(""),
                                    r["actor"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    0
                }
                Err(e) => fail(&e),
            }
        }
        AuditCommand::Show { object, limit } => {
            let q: Vec<(&str, String)> = vec![("object", object), ("limit", limit.to_string())];
            match c.get("/v1/audit", &q).await {
                Ok(v) => {
                    print(target.output, &v, |v| {
                        v["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(audit_block)
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    0
                }
                Err(e) => fail(&e),
            }
        }
        AuditCommand::Export { out, from_seq } => {
            let path = match from_seq {
                Some(n) => format!("/v1/audit/export?from_seq={n}"),
                None => "/v1/audit/export".to_string(),
            };
            match c.download(&path, &out).await {
                Ok(bytes) => {
                    print(
                        target.output,
                        &serde_json::json!({ "file": out, "bytes": bytes }),
                        |_| format!("exported {bytes} bytes to {}", out.display()),
                    );
                    0
                }
                Err(e) => fail(&e),
            }
        }
        AuditCommand::Verify {
            file: Some(file),
            head,
        } => match verify_export(&file, head.as_deref()) {
            Ok(report) => {
                let ok = report["ok"].as_bool() == Some(true);
                print(target.output, &report, verify_text);
                if ok {
                    0
                } else {
                    1
                }
            }
            Err(e) => local_fail(e),
        },
        AuditCommand::Verify { file: None, .. } => match c.get("/v1/audit/verify", &[]).await {
            Ok(v) => {
                let ok = v["ok"].as_bool() == Some(true);
                print(target.output, &v, verify_text);
                if ok {
                    0
                } else {
                    1
                }
            }
            Err(e) => fail(&e),
        },
    }
}

fn verify_text(v: &Value) -> String {
    if v["ok"].as_bool() == Some(true) {
        format!(
            "audit chain OK: {} records, head {}",
            v["records_checked"],
            v["head"]["hash"].as_str().unwrap_or("")
        )
    } else {
        format!(
            "audit chain BROKEN at record {}: {}",
            v["first_broken"]["seq"],
            v["first_broken"]["reason"].as_str().unwrap_or("")
        )
    }
}

/// Check an export line by line, offline: the same verifier the nodes run over their store. An
/// export may start after record 1 (`--from-seq`), in which case its first record's `prev_hash` is
/// taken as given.
pub fn verify_export(path: &std::path::Path, head: Option<&str>) -> Result<Value, String> {
    use certplane_core::audit::{AuditRecord, ChainVerifier};
    use std::io::BufRead;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut verifier: Option<ChainVerifier> = None;
    let mut broken = None;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record =
            serde_json::from_str::<AuditRecord>(&line).map_err(|e| format!("line {}: {e}", n + 1));
        let v = verifier.get_or_insert_with(|| match &record {
            Ok(first) => ChainVerifier::starting_at(first.seq, &first.prev_hash),
            Err(_) => ChainVerifier::default(),
        });
        if let Err(link) = v.push(None, record) {
            broken = Some(link);
            break;
        }
    }
    let verifier = verifier.unwrap_or_default();
    let reached = verifier.head();
    if broken.is_none() {
        if let Some(expected) = head {
            if expected != reached.hash {
                broken = Some(certplane_core::audit::BrokenLink {
                    seq: reached.seq,
                    reason: format!(
                        "the export ends at head {} but {expected} was expected",
                        reached.hash
                    ),
                });
            }
        }
    }
    Ok(serde_json::json!({
        "ok": broken.is_none(),
        "records_checked": verifier.checked(),
        "head": reached,
        "first_broken": broken,
    }))
}

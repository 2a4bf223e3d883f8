//! `certplane renewals plan` and `certplane aws iam-policy`.

use clap::Subcommand;
use serde_json::Value;

use super::commands::{client, fail, print};
use super::Target;

#[derive(Debug, Subcommand)]
pub enum RenewalsCommand {
    /// What will renew and deploy when, soonest first.
    Plan {
        /// How far ahead, e.g. `30d`.
        #[arg(long, default_value = "30d")]
        within: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// The least-privilege IAM policies for the configured destinations (JSON).
    IamPolicy {
        /// The nodes' own AWS account id, for destinations that assume no role.
        #[arg(long)]
        account: Option<String>,
    },
}

fn plan_text(v: &Value) -> String {
    let mut out = Vec::new();
    let renewals = v["renewals"].as_array().cloned().unwrap_or_default();
    out.push(format!(
        "renewals due until {}: {}",
        v["until"].as_str().unwrap_or(""),
        renewals.len()
    ));
    for r in &renewals {
        out.push(format!(
            "  {}  {}  renew at {}  (expires {})  zone {}  to [{}]{}",
            r["certificate_id"].as_str().unwrap_or(""),
            r["common_name"].as_str().unwrap_or("-"),
            r["renew_at"].as_str().unwrap_or(""),
            r["not_after"].as_str().unwrap_or(""),
            r["zone"].as_str().unwrap_or(""),
            r["destinations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            r["last_error"]
                .as_str()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default(),
        ));
    }
    let deployments = v["deployments"].as_array().cloned().unwrap_or_default();
    out.push(format!("deployments open: {}", deployments.len()));
    for d in &deployments {
        out.push(format!(
            "  {}  {}  {}  {}  deploy at {}  {}{}",
            d["certificate_id"].as_str().unwrap_or(""),
            d["region"].as_str().unwrap_or(""),
            d["state"].as_str().unwrap_or(""),
            d["arn"].as_str().unwrap_or("(new ARN)"),
            d["deploy_at"].as_str().unwrap_or(""),
            format_args!("attempts {}", d["attempts"]),
            d["last_error"]
                .as_str()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default(),
        ));
    }
    out.join("\n")
}

pub async fn renewals(target: Target, command: RenewalsCommand) -> i32 {
    let RenewalsCommand::Plan { within, limit } = command;
    match client(&target)
        .get(
            "/v1/renewals/plan",
            &[("within", within), ("limit", limit.to_string())],
        )
        .await
    {
        Ok(v) => {
            print(target.output, &v, plan_text);
            0
        }
        Err(e) => fail(&e),
    }
}

pub async fn aws(target: Target, command: AwsCommand) -> i32 {
    let AwsCommand::IamPolicy { account } = command;
    let query: Vec<(&str, String)> = account.into_iter().map(|a| ("account", a)).collect();
    match client(&target).get("/v1/aws/iam-policy", &query).await {
        Ok(v) => {
            // The policy is JSON either way: it is meant to be pasted or piped.
            print(target.output, &v, |v| {
                serde_json::to_string_pretty(v).unwrap_or_default()
            });
            0
        }
        Err(e) => fail(&e),
    }
}

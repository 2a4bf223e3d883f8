//! The least-privilege IAM policy for the configured destinations: exactly the ACM actions the
//! driver calls ([`crate::acm::OPERATIONS`]), scoped to the regions and accounts in use.
//!
//! ```text
//!  destinations (region, role?) ─► node role:     acm:* on arn:aws:acm:<region>:<own account>:certificate/*
//!                                                 sts:AssumeRole on each role named
//!                                ─► each role:    acm:* on arn:aws:acm:<region>:<role's account>:certificate/*
//! ```
//!
//! `ListCertificates` has no resource-level permissions, so it is granted on `*` and limited to the
//! regions with the `aws:RequestedRegion` condition.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::acm::{CLEANUP_OPERATIONS, OPERATIONS};

/// One place certificates are deployed to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub region: String,
    pub role_arn: Option<String>,
    /// The account, when the role or an adopted ARN names it.
    pub account: Option<String>,
}

/// The `acm:` actions, in the order the driver documents them.
pub fn acm_actions() -> Vec<String> {
    OPERATIONS.iter().map(|o| format!("acm:{o}")).collect()
}

fn partition_of(role_arn: Option<&str>) -> &str {
    role_arn
        .and_then(|r| r.split(':').nth(1))
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
}

fn statements(
    partition: &str,
    account: &str,
    regions: &BTreeSet<String>,
    cleanup: bool,
) -> Vec<Value> {
    let scoped: Vec<&str> = OPERATIONS
        .iter()
        .copied()
        .filter(|o| *o != "ListCertificates")
        .chain(CLEANUP_OPERATIONS.iter().copied().filter(|_| cleanup))
        .collect();
    vec![
        json!({
            "Sid": "CertplaneAcmDeploy",
            "Effect": "Allow",
            "Action": scoped.iter().map(|o| format!("acm:{o}")).collect::<Vec<_>>(),
            "Resource": regions
                .iter()
                .map(|r| format!("arn:{partition}:acm:{r}:{account}:certificate/*"))
                .collect::<Vec<_>>(),
        }),
        json!({
            "Sid": "CertplaneAcmList",
            "Effect": "Allow",
            "Action": ["acm:ListCertificates"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": regions.iter().collect::<Vec<_>>()}},
        }),
    ]
}

/// The policies to attach: one for the nodes' own role (`node_account` fills the account of
/// destinations that assume no role; `*` when unknown), one per role the destinations assume.
/// `cleanup` (some zone has `acm_cleanup`) adds DeleteCertificate.
pub fn policies(places: &[Place], node_account: Option<&str>, cleanup: bool) -> Value {
    let mut own: BTreeSet<String> = BTreeSet::new();
    let mut roles: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for place in places {
        match &place.role_arn {
            None => {
                own.insert(place.region.clone());
            }
            Some(role) => {
                let account = place.account.clone().unwrap_or_else(|| "*".into());
                roles
                    .entry(role.clone())
                    .or_insert_with(|| (account, BTreeSet::new()))
                    .1
                    .insert(place.region.clone());
            }
        }
    }
    let mut node_statements = Vec::new();
    if !own.is_empty() {
        node_statements.extend(statements(
            "aws",
            node_account.unwrap_or("*"),
            &own,
            cleanup,
        ));
    }
    if !roles.is_empty() {
        node_statements.push(json!({
            "Sid": "CertplaneAssumeDeployRoles",
            "Effect": "Allow",
            "Action": ["sts:AssumeRole"],
            "Resource": roles.keys().collect::<Vec<_>>(),
        }));
    }
    let mut out = vec![json!({
        "attach_to": "the certplane nodes' role",
        "policy": {"Version": "2012-10-17", "Statement": node_statements},
    })];
    for (role, (account, regions)) in &roles {
        out.push(json!({
            "attach_to": role,
            "policy": {
                "Version": "2012-10-17",
                "Statement": statements(partition_of(Some(role)), account, regions, cleanup),
            },
        }));
    }
    json!({ "policies": out })
}

/// Every action any of the policies grants, without the service prefix's duplicates.
pub fn granted_actions(document: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in document["policies"].as_array().into_iter().flatten() {
        for s in p["policy"]["Statement"].as_array().into_iter().flatten() {
            for a in s["Action"].as_array().into_iter().flatten() {
                if let Some(a) = a.as_str() {
                    out.insert(a.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_to_regions_accounts_and_roles() {
        let doc = policies(
            &[
                Place {
                    region: "eu-west-1".into(),
                    role_arn: None,
                    account: None,
                },
                Place {
                    region: "us-east-1".into(),
                    role_arn: None,
                    account: None,
                },
                Place {
                    region: "eu-west-1".into(),
                    role_arn: Some("arn:aws:iam::210987654321:role/deployer".into()),
                    account: Some("210987654321".into()),
                },
            ],
            Some("123456789012"),
            false,
        );
        let policies = doc["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 2);
        let node = &policies[0]["policy"]["Statement"];
        assert_eq!(
            node[0]["Resource"],
            json!([
                "arn:aws:acm:eu-west-1:123456789012:certificate/*",
                "arn:aws:acm:us-east-1:123456789012:certificate/*"
            ])
        );
        assert_eq!(
            node[1]["Condition"]["StringEquals"]["aws:RequestedRegion"],
            json!(["eu-west-1", "us-east-1"])
        );
        assert_eq!(
            node[2]["Resource"],
            json!(["arn:aws:iam::210987654321:role/deployer"])
        );
        assert_eq!(
            policies[1]["policy"]["Statement"][0]["Resource"],
            json!(["arn:aws:acm:eu-west-1:210987654321:certificate/*"])
        );
        let mut expected: BTreeSet<String> = acm_actions().into_iter().collect();
        expected.insert("sts:AssumeRole".into());
        assert_eq!(granted_actions(&doc), expected);
        assert!(!granted_actions(&doc).contains("acm:DeleteCertificate"));
        let with_cleanup = super::policies(
            &[Place {
                region: "eu-west-1".into(),
                role_arn: None,
                account: None,
            }],
            None,
            true,
        );
        assert!(granted_actions(&with_cleanup).contains("acm:DeleteCertificate"));
    }
}

//! The least-privilege IAM policy for the configured destinations and ACM Private CA issuers:
//! exactly the ACM actions the driver calls ([`crate::acm::OPERATIONS`]), scoped to the regions and
//! accounts in use, and the ACM PCA actions the issuer calls ([`crate::pca::PCA_OPERATIONS`]) on
//! the configured CAs only.
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
use crate::pca::{NATIVE_ACM_OPERATIONS, PCA_OPERATIONS};

/// The account a role ARN names (`arn:aws:iam::<account>:role/...`), or `*`.
fn account_of_role(role: &str) -> String {
    role.split(':')
        .nth(4)
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("*")
        .to_string()
}

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

/// One ACM Private CA certplane issues through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Authority {
    pub ca_arn: String,
    pub region: String,
    pub role_arn: Option<String>,
    /// `acm-native` mode: ACM RequestCertificate, then DescribeCertificate and GetCertificate.
    pub acm_native: bool,
}

/// The `acm-pca:` and `acm:` statements for the CAs in `authorities` (all reached with the same
/// credentials): the PCA actions on those CAs only, and for `acm-native` ones the ACM calls on
/// certificates in the CA's region and account, RequestCertificate only naming those CAs.
fn authority_statements(authorities: &[&Authority]) -> Vec<Value> {
    if authorities.is_empty() {
        return Vec::new();
    }
    let cas: BTreeSet<&str> = authorities.iter().map(|a| a.ca_arn.as_str()).collect();
    let mut out = vec![json!({
        "Sid": "CertplaneAcmPcaIssue",
        "Effect": "Allow",
        "Action": PCA_OPERATIONS.iter().map(|o| format!("acm-pca:{o}")).collect::<Vec<_>>(),
        "Resource": cas.iter().collect::<Vec<_>>(),
    })];
    let native: Vec<&&Authority> = authorities.iter().filter(|a| a.acm_native).collect();
    if !native.is_empty() {
        let certificates: BTreeSet<String> = native
            .iter()
            .map(|a| {
                let parts: Vec<&str> = a.ca_arn.split(':').collect();
                let partition = parts.get(1).copied().unwrap_or("aws");
                let account = parts.get(4).copied().unwrap_or("*");
                format!("arn:{partition}:acm:{}:{account}:certificate/*", a.region)
            })
            .collect();
        let native_cas: BTreeSet<&str> = native.iter().map(|a| a.ca_arn.as_str()).collect();
        out.push(json!({
            "Sid": "CertplaneAcmNativeRequest",
            "Effect": "Allow",
            "Action": ["acm:RequestCertificate"],
            "Resource": certificates.iter().collect::<Vec<_>>(),
            "Condition": {"ArnEquals": {"acm:CertificateAuthority": native_cas.iter().collect::<Vec<_>>()}},
        }));
        out.push(json!({
            "Sid": "CertplaneAcmNativeRead",
            "Effect": "Allow",
            "Action": NATIVE_ACM_OPERATIONS
                .iter()
                .filter(|o| **o != "RequestCertificate")
                .map(|o| format!("acm:{o}"))
                .collect::<Vec<_>>(),
            "Resource": certificates.iter().collect::<Vec<_>>(),
        }));
    }
    out
}

/// The policies to attach: one for the nodes' own role (`node_account` fills the account of
/// destinations that assume no role; `*` when unknown), one per role the destinations assume.
/// `cleanup` (some zone has `acm_cleanup`) adds DeleteCertificate.
pub fn policies(places: &[Place], node_account: Option<&str>, cleanup: bool) -> Value {
    policies_with_authorities(places, &[], node_account, cleanup)
}

/// [`policies`] for destinations and ACM Private CA issuers together.
pub fn policies_with_authorities(
    places: &[Place],
    authorities: &[Authority],
    node_account: Option<&str>,
    cleanup: bool,
) -> Value {
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
    let mut role_authorities: BTreeMap<String, Vec<&Authority>> = BTreeMap::new();
    let mut own_authorities = Vec::new();
    for a in authorities {
        match &a.role_arn {
            None => own_authorities.push(a),
            Some(role) => {
                role_authorities.entry(role.clone()).or_default().push(a);
                roles
                    .entry(role.clone())
                    .or_insert_with(|| (account_of_role(role), BTreeSet::new()));
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
    node_statements.extend(authority_statements(&own_authorities));
    if !roles.is_empty() {
        node_statements.push(json!({
            "Sid": "CertplaneAssumeRoles",
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
        let mut role_statements = if regions.is_empty() {
            Vec::new()
        } else {
            statements(partition_of(Some(role)), account, regions, cleanup)
        };
        role_statements.extend(authority_statements(
            role_authorities.get(role).map(Vec::as_slice).unwrap_or(&[]),
        ));
        out.push(json!({
            "attach_to": role,
            "policy": {
                "Version": "2012-10-17",
                "Statement": role_statements,
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
    fn private_ca_issuers_get_their_actions_on_their_cas_only() {
        let own = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/own";
        let other = "arn:aws:acm-pca:us-east-1:210987654321:certificate-authority/other";
        let role = "arn:aws:iam::210987654321:role/issuer";
        let doc = policies_with_authorities(
            &[],
            &[
                Authority {
                    ca_arn: own.into(),
                    region: "eu-west-1".into(),
                    role_arn: None,
                    acm_native: false,
                },
                Authority {
                    ca_arn: other.into(),
                    region: "us-east-1".into(),
                    role_arn: Some(role.into()),
                    acm_native: true,
                },
            ],
            Some("123456789012"),
            false,
        );
        let policies = doc["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 2);
        let node = policies[0]["policy"]["Statement"].as_array().unwrap();
        assert_eq!(node[0]["Resource"], json!([own]));
        assert_eq!(
            node[0]["Action"].as_array().unwrap().len(),
            PCA_OPERATIONS.len()
        );
        assert_eq!(node[1]["Action"], json!(["sts:AssumeRole"]));
        assert_eq!(node[1]["Resource"], json!([role]));
        assert!(
            !policies[0].to_string().contains("acm:RequestCertificate"),
            "csr mode needs no ACM action"
        );
        let assumed = policies[1]["policy"]["Statement"].as_array().unwrap();
        assert_eq!(policies[1]["attach_to"], role);
        assert_eq!(assumed[0]["Resource"], json!([other]));
        assert_eq!(assumed[1]["Action"], json!(["acm:RequestCertificate"]));
        assert_eq!(
            assumed[1]["Resource"],
            json!(["arn:aws:acm:us-east-1:210987654321:certificate/*"])
        );
        assert_eq!(
            assumed[1]["Condition"]["ArnEquals"]["acm:CertificateAuthority"],
            json!([other])
        );
        let granted = granted_actions(&doc);
        for op in PCA_OPERATIONS {
            assert!(granted.contains(&format!("acm-pca:{op}")));
        }
        for op in NATIVE_ACM_OPERATIONS {
            assert!(granted.contains(&format!("acm:{op}")));
        }
        assert!(
            !granted.contains("acm:ImportCertificate"),
            "no destination, no import"
        );
    }

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

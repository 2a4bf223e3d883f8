//! The Terraform module grants the nodes exactly the ACM actions the driver calls, the list
//! `certplane aws iam-policy` prints (cleanup and Private CA actions only behind their variables).

#[path = "../../../tests/support/aws.rs"]
mod aws;

use std::collections::BTreeSet;

#[test]
fn terraform_grants_exactly_the_driver_operations() {
    let granted = aws::terraform_acm_actions();
    let called: BTreeSet<String> = certplane_aws::iam::acm_actions().into_iter().collect();
    assert_eq!(granted, called, "iam.tf and the driver's operations differ");
    let text =
        std::fs::read_to_string(aws::repo().join("terraform/modules/certplane-cluster/iam.tf"))
            .expect("iam.tf");
    // The optional grant stays behind its switch.
    assert!(text.contains(r#"var.acm_cleanup_enabled ? ["acm:DeleteCertificate"] : []"#));
    assert!(!granted.contains("acm:DeleteCertificate"));
}

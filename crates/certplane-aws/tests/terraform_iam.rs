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

#[test]
fn terraform_grants_the_private_ca_issuer_exactly_its_operations() {
    let text =
        std::fs::read_to_string(aws::repo().join("terraform/modules/certplane-cluster/iam.tf"))
            .expect("iam.tf");
    let pca: BTreeSet<String> = certplane_aws::pca::PCA_OPERATIONS
        .iter()
        .map(|o| format!("acm-pca:{o}"))
        .collect();
    assert_eq!(
        aws::terraform_list("acm_pca_actions", "acm-pca:"),
        pca,
        "iam.tf's acm_pca_actions and the issuer's operations differ"
    );
    // acm-native issuers: RequestCertificate and GetCertificate behind acm_pca_arns, and
    // DescribeCertificate, which the deploy driver already needs.
    let switch =
        r#"length(var.acm_pca_arns) > 0 ? ["acm:RequestCertificate", "acm:GetCertificate"] : []"#;
    assert!(
        text.contains(switch),
        "iam.tf grants the acm-native calls only with acm_pca_arns"
    );
    let mut native: BTreeSet<String> = ["acm:RequestCertificate", "acm:GetCertificate"]
        .into_iter()
        .map(str::to_string)
        .collect();
    native.extend(
        aws::terraform_acm_actions()
            .into_iter()
            .filter(|a| a == "acm:DescribeCertificate"),
    );
    let called: BTreeSet<String> = certplane_aws::pca::NATIVE_ACM_OPERATIONS
        .iter()
        .map(|o| format!("acm:{o}"))
        .collect();
    assert_eq!(
        native, called,
        "iam.tf and the acm-native operations differ"
    );
}

//! The Terraform module grants the nodes exactly the ACM actions the driver calls, the same list
//! `certplane aws iam-policy` prints (cleanup and Private CA actions only behind their variables).

use std::collections::BTreeSet;

/// The quoted `acm:` actions of the first `[...]` after `name =` in the module's iam.tf.
fn terraform_list(text: &str, name: &str) -> BTreeSet<String> {
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
        .filter(|a| a.starts_with("acm:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn terraform_grants_exactly_the_driver_operations() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../terraform/modules/certplane-cluster/iam.tf"
    );
    let text = std::fs::read_to_string(path).expect("read iam.tf");
    let mut granted = terraform_list(&text, "acm_certificate_actions");
    granted.extend(terraform_list(&text, "acm_list_actions"));
    let called: BTreeSet<String> = certplane_aws::iam::acm_actions().into_iter().collect();
    assert_eq!(granted, called, "iam.tf and the driver's operations differ");
    // The optional grants stay behind their switches.
    assert!(text.contains(r#"var.acm_cleanup_enabled ? ["acm:DeleteCertificate"] : []"#));
    assert!(!granted.contains("acm:DeleteCertificate"));
}

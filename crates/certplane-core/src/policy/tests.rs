//! Table-driven policy tests: every field, inheritance across three levels, locks, custom rules and
//! the explanations returned.

use std::collections::BTreeMap;

use super::*;
use crate::names::{normalize_san, San};

fn facts(sans: &[&str]) -> RequestFacts {
    let sans: Vec<San> = sans.iter().map(|s| normalize_san(s).unwrap()).collect();
    RequestFacts {
        zone: "/prod/payments".into(),
        common_name: sans.first().map(|s| s.to_string()),
        sans,
        key: KeyFacts {
            algorithm: KeyType::EcdsaP256,
            bits: 256,
        },
        validity: Span::days(90),
        issuer: "builtin".into(),
        owner: Some("team-payments".into()),
        tags: BTreeMap::from([("env".to_string(), "prod".to_string())]),
    }
}

fn zone(json: &str) -> ZonePolicy {
    let policy: ZonePolicy = serde_json::from_str(json).unwrap();
    policy.normalized().unwrap()
}

fn rules_broken(policy: &EffectivePolicy, request: &RequestFacts) -> Vec<String> {
    evaluate(policy, request)
        .into_iter()
        .map(|v| v.rule)
        .collect()
}

/// One row: a root policy, a change to the request, and the violated field expected (or none).
struct Case {
    name: &'static str,
    policy: &'static str,
    request: fn(&mut RequestFacts),
    expect: Option<&'static str>,
}

#[test]
fn every_field_allows_and_refuses() {
    let cases = [
        Case {
            name: "domains: exact allowed",
            policy: r#"{"allowed_domains":{"value":["api.corp.example"]}}"#,
            request: |r| {
                r.sans = vec![normalize_san("api.corp.example").unwrap()];
                r.common_name = None
            },
            expect: None,
        },
        Case {
            name: "domains: exact does not cover subdomains",
            policy: r#"{"allowed_domains":{"value":["corp.example"]}}"#,
            request: |r| {
                r.sans = vec![normalize_san("api.corp.example").unwrap()];
                r.common_name = None
            },
            expect: Some("allowed_domains"),
        },
        Case {
            name: "domains: suffix allowed",
            policy: r#"{"allowed_domains":{"value":[".corp.example"]}}"#,
            request: |r| {
                r.sans = vec![normalize_san("API.Corp.Example.").unwrap()];
                r.common_name = None
            },
            expect: None,
        },
        Case {
            name: "domains: suffix on a label boundary",
            policy: r#"{"allowed_domains":{"value":[".corp.example"]}}"#,
            request: |r| {
                r.sans = vec![normalize_san("evilcorp.example").unwrap()];
                r.common_name = None
            },
            expect: Some("allowed_domains"),
        },
        Case {
            name: "domains: look-alike refused",
            policy: r#"{"allowed_domains":{"value":[".corp.example"]}}"#,
            request: |r| {
                r.sans = vec![normalize_san("api.cоrp.example").unwrap()];
                r.common_name = None
            },
            expect: Some("allowed_domains"),
        },
        Case {
            name: "wildcards refused by default",
            policy: "{}",
            request: |r| {
                r.sans = vec![normalize_san("*.corp.example").unwrap()];
                r.common_name = None
            },
            expect: Some("allow_wildcards"),
        },
        Case {
            name: "wildcards allowed",
            policy: r#"{"allow_wildcards":{"value":true}}"#,
            request: |r| {
                r.sans = vec![normalize_san("*.corp.example").unwrap()];
                r.common_name = None
            },
            expect: None,
        },
        Case {
            name: "IP SANs refused by default",
            policy: "{}",
            request: |r| r.sans.push(normalize_san("10.1.2.3").unwrap()),
            expect: Some("allow_ip_sans"),
        },
        Case {
            name: "IP SANs allowed",
            policy: r#"{"allow_ip_sans":{"value":true}}"#,
            request: |r| r.sans.push(normalize_san("10.1.2.3").unwrap()),
            expect: None,
        },
        Case {
            name: "CN pattern matches",
            policy: r#"{"common_name_pattern":{"value":"[a-z0-9-]+\\.corp\\.example"}}"#,
            request: |_| {},
            expect: None,
        },
        Case {
            name: "CN pattern is anchored",
            policy: r#"{"common_name_pattern":{"value":"api"}}"#,
            request: |_| {},
            expect: Some("common_name_pattern"),
        },
        Case {
            name: "CN pattern requires a CN",
            policy: r#"{"common_name_pattern":{"value":".*"}}"#,
            request: |r| r.common_name = None,
            expect: Some("common_name_pattern"),
        },
        Case {
            name: "max SANs",
            policy: r#"{"max_sans":{"value":1}}"#,
            request: |r| r.sans.push(normalize_san("b.corp.example").unwrap()),
            expect: Some("max_sans"),
        },
        Case {
            name: "CN must be a SAN",
            policy: "{}",
            request: |r| r.common_name = Some("other.corp.example".into()),
            expect: Some("cn_in_sans"),
        },
        Case {
            name: "CN outside SANs allowed when cn_in_sans is off",
            policy: r#"{"cn_in_sans":{"value":false}}"#,
            request: |r| r.common_name = Some("other.corp.example".into()),
            expect: None,
        },
        Case {
            name: "CN outside SANs still meets domain rules",
            policy: r#"{"cn_in_sans":{"value":false},"allowed_domains":{"value":[".corp.example"]}}"#,
            request: |r| r.common_name = Some("evil.example".into()),
            expect: Some("allowed_domains"),
        },
        Case {
            name: "RSA 2048 allowed by default",
            policy: "{}",
            request: |r| {
                r.key = KeyFacts {
                    algorithm: KeyType::Rsa,
                    bits: 2048,
                }
            },
            expect: None,
        },
        Case {
            name: "RSA 1024 refused",
            policy: "{}",
            request: |r| {
                r.key = KeyFacts {
                    algorithm: KeyType::Rsa,
                    bits: 1024,
                }
            },
            expect: Some("allowed_key_types"),
        },
        Case {
            name: "RSA minimum raised",
            policy: r#"{"allowed_key_types":{"value":[{"type":"rsa","min_bits":3072}]}}"#,
            request: |r| {
                r.key = KeyFacts {
                    algorithm: KeyType::Rsa,
                    bits: 2048,
                }
            },
            expect: Some("allowed_key_types"),
        },
        Case {
            name: "key type not in the list",
            policy: r#"{"allowed_key_types":{"value":[{"type":"ecdsa_p384"}]}}"#,
            request: |_| {},
            expect: Some("allowed_key_types"),
        },
        Case {
            name: "Ed25519 allowed by default",
            policy: "{}",
            request: |r| {
                r.key = KeyFacts {
                    algorithm: KeyType::Ed25519,
                    bits: 256,
                }
            },
            expect: None,
        },
        Case {
            name: "issuer allowed",
            policy: r#"{"allowed_issuers":{"value":["builtin"]}}"#,
            request: |_| {},
            expect: None,
        },
        Case {
            name: "issuer refused",
            policy: r#"{"allowed_issuers":{"value":["pca-prod"]}}"#,
            request: |_| {},
            expect: Some("allowed_issuers"),
        },
        Case {
            name: "validity within maximum",
            policy: r#"{"max_validity":{"value":"90d"}}"#,
            request: |_| {},
            expect: None,
        },
        Case {
            name: "validity over maximum",
            policy: r#"{"max_validity":{"value":"30d"}}"#,
            request: |_| {},
            expect: Some("max_validity"),
        },
        Case {
            name: "validity over the built-in 397 days",
            policy: "{}",
            request: |r| r.validity = Span::days(398),
            expect: Some("max_validity"),
        },
        Case {
            name: "owner required",
            policy: r#"{"owner_required":{"value":true}}"#,
            request: |r| r.owner = None,
            expect: Some("owner_required"),
        },
        Case {
            name: "owner present",
            policy: r#"{"owner_required":{"value":true}}"#,
            request: |_| {},
            expect: None,
        },
        Case {
            name: "required tag missing",
            policy: r#"{"required_tags":{"value":["cost_center"]}}"#,
            request: |_| {},
            expect: Some("required_tags"),
        },
        Case {
            name: "required tag present",
            policy: r#"{"required_tags":{"value":["env"]}}"#,
            request: |_| {},
            expect: None,
        },
        Case {
            name: "required tag empty",
            policy: r#"{"required_tags":{"value":["env"]}}"#,
            request: |r| {
                r.tags.insert("env".into(), " ".into());
            },
            expect: Some("required_tags"),
        },
        Case {
            name: "CEL rule passes",
            policy: r#"{"rules":[{"name":"payments","expression":"request.sans.all(s, s.endsWith(\".corp.example\"))","message":"payments names only"}]}"#,
            request: |_| {},
            expect: None,
        },
        Case {
            name: "CEL rule fails",
            policy: r#"{"rules":[{"name":"payments","expression":"request.sans.all(s, s.endsWith(\".payments.corp.example\"))","message":"payments names only"}]}"#,
            request: |_| {},
            expect: Some("rule:payments"),
        },
    ];
    for case in cases {
        let policy = effective(&[("/".into(), zone(case.policy))]);
        let mut request = facts(&["api.corp.example"]);
        (case.request)(&mut request);
        let broken = rules_broken(&policy, &request);
        match case.expect {
            None => assert!(broken.is_empty(), "{}: unexpected {broken:?}", case.name),
            Some(rule) => assert_eq!(broken, vec![rule.to_string()], "{}", case.name),
        }
    }
}

#[test]
fn approval_and_renewal_fields_merge() {
    let policy = effective(&[(
        "/".into(),
        zone(
            r#"{"approval_required":{"value":true},"notify_before":{"value":"60d"},"renew_before":{"value":"30d"}}"#,
        ),
    )]);
    assert!(policy.approval_required.value);
    assert_eq!(policy.notify_before.value, Span::days(60));
    assert_eq!(policy.renew_before.value, Span::days(30));
    assert_eq!(policy.default_issuer.value, "builtin");
    assert_eq!(policy.default_issuer.zone, BUILTIN);
}

#[test]
fn defaults_are_overridden_and_locks_hold_across_three_levels() {
    let root = zone(
        r#"{"max_validity":{"value":"397d"},
            "allow_wildcards":{"value":false,"locked":true},
            "allowed_domains":{"value":[".corp.example"]}}"#,
    );
    let prod = zone(
        r#"{"max_validity":{"value":"90d","locked":true},"allowed_domains":{"value":[".prod.corp.example"]}}"#,
    );
    // The leaf tries to override a default (allowed: domains) and two locks (ignored on merge, refused on store).
    let payments = zone(
        r#"{"allowed_domains":{"value":[".payments.prod.corp.example"]},
            "max_validity":{"value":"365d"},
            "allow_wildcards":{"value":true}}"#,
    );
    let chain = vec![
        ("/".to_string(), root.clone()),
        ("/prod".to_string(), prod.clone()),
        ("/prod/payments".to_string(), payments.clone()),
    ];
    let merged = effective(&chain);
    assert_eq!(
        merged.allowed_domains.value,
        vec![".payments.prod.corp.example"]
    );
    assert_eq!(merged.allowed_domains.zone, "/prod/payments");
    assert_eq!(merged.max_validity.value, Span::days(90));
    assert_eq!(merged.max_validity.zone, "/prod");
    assert!(merged.max_validity.locked);
    assert!(!merged.allow_wildcards.value);
    assert_eq!(merged.allow_wildcards.zone, "/");
    assert_eq!(merged.max_sans.zone, BUILTIN);

    let sources = merged.sources();
    assert_eq!(sources["max_validity"], "/prod");
    assert_eq!(sources["allowed_domains"], "/prod/payments");
    assert_eq!(sources["max_sans"], BUILTIN);

    // Storing the leaf is refused, naming both locks and the zones that set them.
    let parent = effective(&chain[..2]);
    let conflicts = locked_conflicts(&parent, &payments);
    let mut named: Vec<(String, String)> = conflicts
        .iter()
        .map(|v| (v.rule.clone(), v.zone.clone()))
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![
            ("allow_wildcards".to_string(), "/".to_string()),
            ("max_validity".to_string(), "/prod".to_string())
        ]
    );
    assert!(conflicts.iter().any(|v| v.message.contains("locked to")));
    // Restating a locked value is not a conflict.
    assert!(locked_conflicts(&parent, &zone(r#"{"max_validity":{"value":"90d"}}"#)).is_empty());

    // A violation names the zone whose value was broken.
    let mut request = facts(&["api.payments.prod.corp.example"]);
    request.validity = Span::days(100);
    let violations = evaluate(&merged, &request);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].rule, "max_validity");
    assert_eq!(violations[0].zone, "/prod");
    assert_eq!(violations[0].value, "100d");
    assert!(
        violations[0].message.contains("90d"),
        "{}",
        violations[0].message
    );
}

#[test]
fn rules_add_up_and_locked_rules_cannot_be_replaced() {
    let root = zone(
        r#"{"rules":[{"name":"corp","expression":"request.sans.all(s, s.endsWith(\".corp.example\"))","message":"corp names only","locked":true}]}"#,
    );
    let prod = zone(
        r#"{"rules":[{"name":"env","expression":"request.tags.env == \"prod\"","message":"tag env=prod"}]}"#,
    );
    let leaf_replaces_env =
        zone(r#"{"rules":[{"name":"env","expression":"true","message":"anything"}]}"#);
    let leaf_replaces_corp =
        zone(r#"{"rules":[{"name":"corp","expression":"true","message":"anything"}]}"#);
    let two = effective(&[("/".into(), root.clone()), ("/prod".into(), prod.clone())]);
    assert_eq!(two.rules.len(), 2);
    let mut request = facts(&["api.corp.example", "evil.example"]);
    request.tags.clear();
    let broken = evaluate(&two, &request);
    let mut names: Vec<(String, String)> = broken
        .iter()
        .map(|v| (v.rule.clone(), v.zone.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("rule:corp".to_string(), "/".to_string()),
            ("rule:env".to_string(), "/prod".to_string())
        ]
    );
    let env = broken.iter().find(|v| v.rule == "rule:env").unwrap();
    assert!(env.message.contains("tag env=prod"), "{}", env.message);

    let replaced = effective(&[
        ("/".into(), root.clone()),
        ("/prod".into(), prod.clone()),
        ("/prod/x".into(), leaf_replaces_env.clone()),
    ]);
    assert_eq!(
        replaced
            .rules
            .iter()
            .find(|r| r.rule.name == "env")
            .unwrap()
            .zone,
        "/prod/x"
    );
    assert!(locked_conflicts(&two, &leaf_replaces_env).is_empty());
    let conflicts = locked_conflicts(&two, &leaf_replaces_corp);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].rule, "rule:corp");
    assert_eq!(conflicts[0].zone, "/");
    let kept = effective(&[
        ("/".into(), root),
        ("/prod".into(), prod),
        ("/prod/x".into(), leaf_replaces_corp),
    ]);
    assert_eq!(
        kept.rules
            .iter()
            .find(|r| r.rule.name == "corp")
            .unwrap()
            .zone,
        "/"
    );
}

#[test]
fn every_violation_is_reported() {
    let policy = effective(&[(
        "/".into(),
        zone(
            r#"{"allowed_domains":{"value":[".corp.example"]},"max_validity":{"value":"30d"},"owner_required":{"value":true}}"#,
        ),
    )]);
    let mut request = facts(&["api.corp.example", "evil.example", "*.corp.example"]);
    request.owner = None;
    request.key = KeyFacts {
        algorithm: KeyType::Rsa,
        bits: 1024,
    };
    let broken = rules_broken(&policy, &request);
    for expected in [
        "allowed_domains",
        "allow_wildcards",
        "allowed_key_types",
        "max_validity",
        "owner_required",
    ] {
        assert!(
            broken.contains(&expected.to_string()),
            "{expected} missing from {broken:?}"
        );
    }
    let domain = evaluate(&policy, &request)
        .into_iter()
        .find(|v| v.rule == "allowed_domains")
        .unwrap();
    assert_eq!(domain.value, "evil.example");
    assert_eq!(domain.zone, "/");
}

#[test]
fn invalid_policies_are_refused_and_canonicalised() {
    for (json, field) in [
        (
            r#"{"allowed_domains":{"value":["*.com"]}}"#,
            "allowed_domains",
        ),
        (
            r#"{"allowed_domains":{"value":["a..b"]}}"#,
            "allowed_domains",
        ),
        (
            r#"{"common_name_pattern":{"value":"(unclosed"}}"#,
            "common_name_pattern",
        ),
        (r#"{"max_sans":{"value":0}}"#, "max_sans"),
        (
            r#"{"allowed_key_types":{"value":[{"type":"rsa","min_bits":1024}]}}"#,
            "allowed_key_types",
        ),
        (
            r#"{"allowed_key_types":{"value":[{"type":"ed25519","min_bits":4096}]}}"#,
            "allowed_key_types",
        ),
        (r#"{"max_validity":{"value":"0s"}}"#, "max_validity"),
        (
            r#"{"notify_before":{"value":"10d"},"renew_before":{"value":"30d"}}"#,
            "renew_before",
        ),
        (
            r#"{"default_issuer":{"value":"Not An Issuer"}}"#,
            "default_issuer",
        ),
        (
            r#"{"rules":[{"name":"x","expression":"request.(","message":"m"}]}"#,
            "rules",
        ),
        (
            r#"{"rules":[{"name":"x","expression":"true","message":"m"},{"name":"x","expression":"true","message":"m"}]}"#,
            "rules",
        ),
    ] {
        let policy: ZonePolicy = serde_json::from_str(json).unwrap();
        let err = policy.normalized().unwrap_err();
        assert_eq!(err.field, field, "{json}: {err}");
        assert!(policy.validate().is_err());
    }
    // Unknown fields are refused when parsed, so a typo never silently does nothing.
    assert!(serde_json::from_str::<ZonePolicy>(r#"{"max_validty":{"value":"30d"}}"#).is_err());
    assert!(
        serde_json::from_str::<ZonePolicy>(r#"{"max_validity":{"value":"30d","lock":true}}"#)
            .is_err()
    );

    let raw: ZonePolicy = serde_json::from_str(
        r#"{"allowed_domains":{"value":["API.Example.COM.", ".Corp.Example", "*.corp.example"]}}"#,
    )
    .unwrap();
    assert!(raw.validate().is_err(), "not canonical");
    let canonical = raw.normalized().unwrap();
    assert_eq!(
        canonical.allowed_domains.as_ref().unwrap().value,
        vec!["api.example.com", ".corp.example"]
    );
    assert!(canonical.validate().is_ok());
    assert_eq!(FIELDS.len(), 22);
    for bad in [
        r#"{"destinations":{"value":[{"type":"acm","region":"eu-west"}]}}"#,
        r#"{"destinations":{"value":[{"type":"acm","region":"eu-west-1"},{"type":"acm","region":"eu-west-1"}]}}"#,
        r#"{"deploy_windows":{"value":["2am-4am"]}}"#,
        r#"{"approval_stages":{"value":[{"name":"","count":1}]}}"#,
        r#"{"approval_stages":{"value":[{"name":"s","count":0}]}}"#,
        r#"{"approval_stages":{"value":[{"name":"s","count":17}]}}"#,
        r#"{"approval_stages":{"value":[{"name":"s","group":" "}]}}"#,
        r#"{"approval_timeout":{"value":"0s"}}"#,
        r#"{"approval_timeout":{"value":"400d"}}"#,
    ] {
        let raw: ZonePolicy = serde_json::from_str(bad).unwrap();
        assert!(raw.normalized().is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<ZonePolicy>(
        r#"{"approval_stages":{"value":[{"name":"s","role":"root"}]}}"#
    )
    .is_err());
    let windows: ZonePolicy =
        serde_json::from_str(r#"{"deploy_windows":{"value":["2:00-4:30"]}}"#).unwrap();
    assert!(windows.normalized().is_err(), "one-digit hours are refused");
    let windows: ZonePolicy =
        serde_json::from_str(r#"{"deploy_windows":{"value":[" 02:00-04:30 "]}}"#).unwrap();
    assert_eq!(
        windows.normalized().unwrap().deploy_windows.unwrap().value,
        vec!["02:00-04:30"]
    );
}

#[test]
fn rules_are_bounded_by_the_san_limit_and_the_rule_count() {
    let failing = r#"{"name":"never","expression":"false","message":"no"}"#;
    let policy = effective(&[(
        "/".into(),
        zone(&format!(
            r#"{{"max_sans":{{"value":1}},"rules":[{failing}]}}"#
        )),
    )]);
    // Over the SAN limit: the limit is the violation, and no rule runs on the oversized lists.
    let over = facts(&["a.corp.example", "b.corp.example"]);
    assert_eq!(rules_broken(&policy, &over), vec!["max_sans".to_string()]);
    let within = facts(&["a.corp.example"]);
    assert_eq!(
        rules_broken(&policy, &within),
        vec!["rule:never".to_string()]
    );

    // More rules in force than certplane evaluates: refused as a whole, naming the count.
    let mut chain = Vec::new();
    for z in 0..3 {
        let rules: Vec<String> = (0..30)
            .map(|i| format!(r#"{{"name":"r{z}-{i}","expression":"true","message":"m"}}"#))
            .collect();
        chain.push((
            format!("/z{z}"),
            zone(&format!(r#"{{"rules":[{}]}}"#, rules.join(","))),
        ));
    }
    let policy = effective(&chain);
    assert_eq!(policy.rules.len(), 90);
    let violations = evaluate(&policy, &within);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].rule, "rules");
    assert_eq!(violations[0].value, "90");
}

//! Evaluating a request against the effective policy. Every violation is reported, not just the first,
//! each naming the field, the zone that set it and the offending value.

use std::collections::BTreeMap;

use super::rules::CelRequest;
use super::{Effective, EffectivePolicy, KeyFacts, KeyType, Span, Violation, MIN_RSA_BITS};
use crate::names::{self, San};

/// What a request asks for, normalised (see [`crate::names`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFacts {
    pub zone: String,
    pub common_name: Option<String>,
    pub sans: Vec<San>,
    pub key: KeyFacts,
    pub validity: Span,
    pub issuer: String,
    pub owner: Option<String>,
    pub tags: BTreeMap<String, String>,
}

pub(super) fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.chars().count() > super::MAX_PATTERN_CHARS {
        return Err(format!(
            "the pattern is longer than {} characters",
            super::MAX_PATTERN_CHARS
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

fn violation<T>(
    field: &str,
    set: &Effective<T>,
    value: impl Into<String>,
    message: impl Into<String>,
) -> Violation {
    Violation {
        rule: field.to_string(),
        zone: set.zone.clone(),
        value: value.into(),
        message: message.into(),
    }
}

/// Every way `request` breaks `policy`. Empty means the request may be issued (subject to approval).
pub fn evaluate(policy: &EffectivePolicy, request: &RequestFacts) -> Vec<Violation> {
    let mut out = Vec::new();
    check_names(policy, request, &mut out);
    check_common_name(policy, request, &mut out);
    check_key(policy, request.key, &mut out);
    check_issuer_validity_owner_tags(policy, request, &mut out);
    check_rules(policy, request, &mut out);
    out
}

fn check_names(policy: &EffectivePolicy, request: &RequestFacts, out: &mut Vec<Violation>) {
    if request.sans.is_empty() && request.common_name.is_none() {
        out.push(Violation {
            rule: "names".into(),
            zone: super::BUILTIN.into(),
            value: String::new(),
            message: "the request names no common name and no SANs".into(),
        });
    }
    let max = &policy.max_sans;
    if request.sans.len() > max.value as usize {
        out.push(violation(
            "max_sans",
            max,
            request.sans.len().to_string(),
            format!(
                "{} SANs requested; at most {} are allowed",
                request.sans.len(),
                max.value
            ),
        ));
    }
    for san in &request.sans {
        match san {
            San::Ip(ip) => {
                if !policy.allow_ip_sans.value {
                    out.push(violation(
                        "allow_ip_sans",
                        &policy.allow_ip_sans,
                        ip.to_string(),
                        "IP address SANs are not allowed in this zone",
                    ));
                }
            }
            San::Dns(name) => check_dns_name(policy, name, out),
        }
    }
}

fn check_dns_name(policy: &EffectivePolicy, name: &str, out: &mut Vec<Violation>) {
    if name.starts_with("*.") && !policy.allow_wildcards.value {
        out.push(violation(
            "allow_wildcards",
            &policy.allow_wildcards,
            name,
            "wildcard names are not allowed in this zone",
        ));
    }
    let domains = &policy.allowed_domains;
    if !domains.value.is_empty()
        && !domains
            .value
            .iter()
            .any(|rule| names::name_matches_rule(name, rule))
    {
        out.push(violation(
            "allowed_domains",
            domains,
            name,
            format!(
                "{name} is not within the allowed domains ({})",
                domains.value.join(", ")
            ),
        ));
    }
}

fn check_common_name(policy: &EffectivePolicy, request: &RequestFacts, out: &mut Vec<Violation>) {
    let pattern = &policy.common_name_pattern;
    let Some(cn) = &request.common_name else {
        if let Some(p) = &pattern.value {
            out.push(violation(
                "common_name_pattern",
                pattern,
                "",
                format!("a common name matching {p} is required"),
            ));
        }
        return;
    };
    if let Some(p) = &pattern.value {
        match compile_pattern(p) {
            Ok(re) if re.is_match(cn) => {}
            Ok(_) => out.push(violation(
                "common_name_pattern",
                pattern,
                cn.as_str(),
                format!("the common name {cn} does not match the naming convention {p}"),
            )),
            Err(e) => out.push(violation("common_name_pattern", pattern, cn.as_str(), e)),
        }
    }
    let as_san = names::normalize_san(cn).ok();
    if policy.cn_in_sans.value && !as_san.as_ref().is_some_and(|s| request.sans.contains(s)) {
        out.push(violation(
            "cn_in_sans",
            &policy.cn_in_sans,
            cn.as_str(),
            format!("the common name {cn} must also be one of the SANs"),
        ));
    }
    // A common name that is a DNS name is held to the same domain rules as the SANs (relying parties
    // that still read the CN would otherwise trust a name policy never saw). When it is also a SAN,
    // that check already ran.
    if let Some(San::Dns(name)) = as_san.filter(|s| !request.sans.contains(s)) {
        if name.contains('.') {
            check_dns_name(policy, &name, out);
        }
    }
}

fn check_key(policy: &EffectivePolicy, key: KeyFacts, out: &mut Vec<Violation>) {
    let allowed = &policy.allowed_key_types;
    let shown = format!("{} {}", key.algorithm.as_str(), key.bits);
    match allowed.value.iter().find(|r| r.key_type == key.algorithm) {
        None => out.push(violation(
            "allowed_key_types",
            allowed,
            shown,
            format!(
                "{} keys are not allowed; allowed: {}",
                key.algorithm.as_str(),
                allowed
                    .value
                    .iter()
                    .map(|r| r.key_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Some(rule) if key.algorithm == KeyType::Rsa => {
            let min = rule.min_bits.unwrap_or(MIN_RSA_BITS).max(MIN_RSA_BITS);
            if key.bits < min {
                out.push(violation(
                    "allowed_key_types",
                    allowed,
                    shown,
                    format!("RSA keys must have at least {min} bits, not {}", key.bits),
                ));
            }
        }
        Some(_) => {}
    }
}

fn check_issuer_validity_owner_tags(
    policy: &EffectivePolicy,
    request: &RequestFacts,
    out: &mut Vec<Violation>,
) {
    let issuers = &policy.allowed_issuers;
    if !issuers.value.is_empty() && !issuers.value.contains(&request.issuer) {
        out.push(violation(
            "allowed_issuers",
            issuers,
            request.issuer.as_str(),
            format!(
                "issuer {} is not allowed here; allowed: {}",
                request.issuer,
                issuers.value.join(", ")
            ),
        ));
    }
    let max = &policy.max_validity;
    if request.validity.0 <= 0 {
        out.push(violation(
            "max_validity",
            max,
            request.validity.to_string(),
            "the validity must be positive",
        ));
    } else if request.validity > max.value {
        out.push(violation(
            "max_validity",
            max,
            request.validity.to_string(),
            format!(
                "a validity of {} exceeds the maximum of {}",
                request.validity, max.value
            ),
        ));
    }
    if policy.owner_required.value && request.owner.as_deref().is_none_or(|o| o.trim().is_empty()) {
        out.push(violation(
            "owner_required",
            &policy.owner_required,
            "",
            "an owner is required in this zone",
        ));
    }
    for key in &policy.required_tags.value {
        if request.tags.get(key).is_none_or(|v| v.trim().is_empty()) {
            out.push(violation(
                "required_tags",
                &policy.required_tags,
                key.as_str(),
                format!("the tag {key} is required in this zone"),
            ));
        }
    }
}

fn check_rules(policy: &EffectivePolicy, request: &RequestFacts, out: &mut Vec<Violation>) {
    // A request over the SAN limit is already refused; running rules over its lists would only let
    // it buy CPU on every node.
    if policy.rules.is_empty() || request.sans.len() > policy.max_sans.value as usize {
        return;
    }
    if policy.rules.len() > super::MAX_EFFECTIVE_RULES {
        out.push(Violation {
            rule: "rules".into(),
            zone: super::BUILTIN.into(),
            value: policy.rules.len().to_string(),
            message: format!(
                "{} custom rules apply to this zone, more than the {} certplane evaluates;                  remove some from this zone or its ancestors",
                policy.rules.len(),
                super::MAX_EFFECTIVE_RULES
            ),
        });
        return;
    }
    let sans: Vec<String> = request.sans.iter().map(San::to_string).collect();
    let dns_names = request
        .sans
        .iter()
        .filter_map(|s| s.dns().map(str::to_string))
        .collect();
    let ip_sans = request
        .sans
        .iter()
        .filter(|s| matches!(s, San::Ip(_)))
        .map(San::to_string)
        .collect();
    let view = CelRequest {
        zone: &request.zone,
        common_name: request.common_name.as_deref(),
        sans,
        dns_names,
        ip_sans,
        key_type: request.key.algorithm.as_str(),
        key_bits: i64::from(request.key.bits),
        validity_seconds: request.validity.0,
        validity_days: request.validity.0 / 86_400,
        issuer: &request.issuer,
        owner: request.owner.as_deref(),
        tags: &request.tags,
    };
    for effective in &policy.rules {
        if let Err(message) = effective.rule.eval(&view) {
            out.push(Violation {
                rule: format!("rule:{}", effective.rule.name),
                zone: effective.zone.clone(),
                value: effective.rule.expression.clone(),
                message,
            });
        }
    }
}

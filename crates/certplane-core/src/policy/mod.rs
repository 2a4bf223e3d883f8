//! Zone policy: fields that are defaults or locks, merged down the zone tree, and the evaluation of a
//! request against the merged result.
//!
//! ```text
//!  built-in defaults ─► "/" ─► "/prod" ─► "/prod/payments"      (ancestors first)
//!        each zone may set a field: {"value": ..., "locked": false}   a default a child may override
//!                                   {"value": ..., "locked": true}    no descendant may change it
//!  EffectivePolicy: every field's value, the zone that set it, whether it is locked
//!  evaluate(effective, request facts) ─► every Violation { rule, zone, value, message }
//! ```
//!
//! Custom rules are CEL expressions ([`rules`]); they add up down the tree: a zone's rules apply to
//! every zone below it, and a descendant may replace an ancestor's rule of the same name unless that
//! rule is locked. Everything here is deterministic: no clock, no I/O, the same verdict on every node.

mod evaluate;
pub mod rules;
mod span;
mod zone_path;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names;

pub use evaluate::{evaluate, RequestFacts};
pub use rules::Rule;
pub use span::Span;
pub use zone_path::{ancestors, normalize_zone_path, ZonePathError, MAX_ZONE_DEPTH};

/// The `zone` named for values nobody set: certplane's built-in defaults.
pub const BUILTIN: &str = "(built-in)";
/// Most entries one list field may hold.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// Most custom rules one zone may define.
pub const MAX_RULES_PER_ZONE: usize = 32;
/// Most custom rules in force for one zone (its own and its ancestors').
pub const MAX_EFFECTIVE_RULES: usize = 64;
/// Longest common-name pattern.
pub const MAX_PATTERN_CHARS: usize = 1024;
/// Smallest RSA modulus any zone may allow.
pub const MIN_RSA_BITS: u32 = 2048;

/// A policy value as a zone sets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting<T> {
    pub value: T,
    /// Locked values cannot be changed by any descendant zone.
    #[serde(default)]
    pub locked: bool,
}

impl<T> Setting<T> {
    pub fn default_value(value: T) -> Self {
        Setting {
            value,
            locked: false,
        }
    }

    pub fn locked(value: T) -> Self {
        Setting {
            value,
            locked: true,
        }
    }
}

/// A merged value with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effective<T> {
    pub value: T,
    /// The zone that set the value, or [`BUILTIN`].
    pub zone: String,
    pub locked: bool,
}

/// Key types a zone can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    Rsa,
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::EcdsaP256 => "ecdsa_p256",
            KeyType::EcdsaP384 => "ecdsa_p384",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// What policy knows about a request's public key (read from the CSR, or implied by the key spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyFacts {
    pub algorithm: KeyType,
    /// RSA modulus bits; the curve size for ECDSA; 256 for Ed25519.
    pub bits: u32,
}

/// One allowed key type; `min_bits` applies to RSA (default and floor [`MIN_RSA_BITS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    #[serde(rename = "type")]
    pub key_type: KeyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bits: Option<u32>,
}

/// One reason a request (or a zone change) breaks policy.
/// One approval stage: `count` different eligible principals must approve it. An eligible principal
/// holds the approve permission on the request's zone and, when set, belongs to `group` and holds
/// `role` on that zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::principal::Role>,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

pub const MAX_APPROVAL_STAGES: usize = 8;
pub const MAX_STAGE_COUNT: u32 = 16;

impl ApprovalStage {
    /// The stage used when approval is required and the zone names none.
    pub fn single() -> ApprovalStage {
        ApprovalStage {
            name: "approval".into(),
            group: None,
            role: None,
            count: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The policy field (`allowed_domains`, `max_validity`, ...) or `rule:<name>` for a custom rule.
    pub rule: String,
    /// The zone that set the value that was broken ([`BUILTIN`] for a built-in default).
    pub zone: String,
    /// The offending value from the request.
    pub value: String,
    pub message: String,
}

/// A zone's policy could not be stored as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicyError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        PolicyError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn render<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "?".to_string())
}

/// Declares every inheritable field once: the zone's settings, the merged view with provenance, the
/// built-in defaults, the merge, and the lock check all come from this list.
macro_rules! policy_fields {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr ; )*) => {
        /// The policy one zone stores. Absent fields inherit; every field is a [`Setting`].
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ZonePolicy {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $name: Option<Setting<$ty>>,
            )*
            /// Custom CEL rules this zone adds.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub rules: Vec<Rule>,
        }

        /// The policy in force for a zone: every field merged from the built-in defaults and the zone's
        /// ancestors, each naming the zone that set it.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct EffectivePolicy {
            $( pub $name: Effective<$ty>, )*
            pub rules: Vec<EffectiveRule>,
        }

        impl EffectivePolicy {
            /// certplane's defaults, in force where no zone says otherwise.
            pub fn builtin() -> Self {
                EffectivePolicy {
                    $( $name: Effective { value: $default, zone: BUILTIN.to_string(), locked: false }, )*
                    rules: Vec::new(),
                }
            }

            fn overlay_fields(&mut self, zone: &str, policy: &ZonePolicy) {
                $(
                    if let Some(setting) = &policy.$name {
                        if !self.$name.locked {
                            self.$name = Effective {
                                value: setting.value.clone(),
                                zone: zone.to_string(),
                                locked: setting.locked,
                            };
                        }
                    }
                )*
            }

            fn field_conflicts(&self, child: &ZonePolicy, out: &mut Vec<Violation>) {
                $(
                    if let Some(setting) = &child.$name {
                        if self.$name.locked && setting.value != self.$name.value {
                            out.push(Violation {
                                rule: stringify!($name).to_string(),
                                zone: self.$name.zone.clone(),
                                value: render(&setting.value),
                                message: format!(
                                    "{} is locked to {} by zone {}",
                                    stringify!($name),
                                    render(&self.$name.value),
                                    self.$name.zone
                                ),
                            });
                        }
                    }
                )*
            }
        }

        /// The names of every inheritable field, in declaration order.
        pub const FIELDS: &[&str] = &[$( stringify!($name), )*];
    };
}

policy_fields! {
    /// Domain rules: `example.com` allows that name, `.example.com` any name below it. Empty: any.
    allowed_domains: Vec<String> = Vec::new();
    /// Wildcard names (`*.example.com`).
    allow_wildcards: bool = false;
    /// IP address SANs.
    allow_ip_sans: bool = false;
    /// A regular expression the whole common name must match.
    common_name_pattern: Option<String> = None;
    /// Most SANs one certificate may carry.
    max_sans: u32 = 100;
    /// A common name, when given, must also be one of the SANs.
    cn_in_sans: bool = true;
    /// Key types (and RSA minimum sizes) a certificate may use.
    allowed_key_types: Vec<KeyRule> = vec![
        KeyRule { key_type: KeyType::Rsa, min_bits: Some(MIN_RSA_BITS) },
        KeyRule { key_type: KeyType::EcdsaP256, min_bits: None },
        KeyRule { key_type: KeyType::EcdsaP384, min_bits: None },
        KeyRule { key_type: KeyType::Ed25519, min_bits: None },
    ];
    /// Issuers requests may name. Empty: any configured issuer.
    allowed_issuers: Vec<String> = Vec::new();
    /// The issuer a request that names none goes to.
    default_issuer: String = "builtin".to_string();
    /// Longest validity a certificate may have (397 days, the CA/Browser Forum limit, by default).
    max_validity: Span = Span::days(397);
    /// When to start notifying before expiry.
    notify_before: Span = Span::days(60);
    /// When to renew before expiry.
    renew_before: Span = Span::days(30);
    /// Requests wait in `pending_approval` until approved.
    approval_required: bool = false;
    /// The ordered stages a request needing approval passes. Empty: one stage, one approver.
    approval_stages: Vec<ApprovalStage> = Vec::new();
    /// How long a request may wait for approval before it expires.
    approval_timeout: Span = Span::days(7);
    /// A renewal that changes nothing (same zone, names, issuer, owner, tags, key type) is not
    /// approved again.
    renewal_skips_approval: bool = true;
    /// Requests must name an owner.
    owner_required: bool = false;
    /// Tag keys every request must set (to a non-empty value).
    required_tags: Vec<String> = Vec::new();
    /// Issued certificates are renewed automatically at `renew_before`.
    auto_renew: bool = true;
    /// Where certificates of the zone are deployed when their request names no destinations.
    destinations: Vec<crate::deploy::Destination> = Vec::new();
    /// Daily UTC windows (`HH:MM-HH:MM`) in which deployments may run. Empty: any time.
    deploy_windows: Vec<String> = Vec::new();
    /// When a certificate leaves management (retired or revoked) and no renewal took its ACM
    /// certificate over, delete the ACM certificate once nothing uses it.
    acm_cleanup: bool = false;
}

/// A custom rule in force, with the zone that defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveRule {
    #[serde(flatten)]
    pub rule: Rule,
    pub zone: String,
}

impl EffectivePolicy {
    fn overlay(&mut self, zone: &str, policy: &ZonePolicy) {
        self.overlay_fields(zone, policy);
        for rule in &policy.rules {
            match self.rules.iter_mut().find(|r| r.rule.name == rule.name) {
                Some(existing) if existing.rule.locked => {}
                Some(existing) => {
                    *existing = EffectiveRule {
                        rule: rule.clone(),
                        zone: zone.to_string(),
                    }
                }
                None => self.rules.push(EffectiveRule {
                    rule: rule.clone(),
                    zone: zone.to_string(),
                }),
            }
        }
    }

    /// Merged values keyed by field name, each with the zone that set it: the explanation
    /// `GET /v1/zones/{path}/effective` returns.
    pub fn sources(&self) -> BTreeMap<String, String> {
        let json = serde_json::to_value(self).unwrap_or_default();
        let mut out = BTreeMap::new();
        if let Some(map) = json.as_object() {
            for (field, value) in map {
                if let Some(zone) = value.get("zone").and_then(|z| z.as_str()) {
                    out.insert(field.clone(), zone.to_string());
                }
            }
        }
        out
    }
}

/// Merge the zones on a path, root first, over the built-in defaults.
pub fn effective(chain: &[(String, ZonePolicy)]) -> EffectivePolicy {
    let mut merged = EffectivePolicy::builtin();
    for (zone, policy) in chain {
        merged.overlay(zone, policy);
    }
    merged
}

/// Every field (and rule) `child` sets that its ancestors locked to a different value.
pub fn locked_conflicts(parent: &EffectivePolicy, child: &ZonePolicy) -> Vec<Violation> {
    let mut out = Vec::new();
    parent.field_conflicts(child, &mut out);
    for rule in &child.rules {
        if let Some(locked) = parent
            .rules
            .iter()
            .find(|r| r.rule.name == rule.name && r.rule.locked && r.rule != *rule)
        {
            out.push(Violation {
                rule: format!("rule:{}", rule.name),
                zone: locked.zone.clone(),
                value: rule.expression.clone(),
                message: format!(
                    "rule {} is locked by zone {} and cannot be replaced",
                    rule.name, locked.zone
                ),
            });
        }
    }
    out
}

impl ZonePolicy {
    /// The canonical form of this policy (domain rules normalised, tag keys trimmed), or the first
    /// reason it cannot be stored. The API stores what this returns; `apply` refuses anything that
    /// is not already canonical, so every node stores the same bytes.
    pub fn normalized(&self) -> Result<ZonePolicy, PolicyError> {
        let mut out = self.clone();
        if let Some(domains) = &mut out.allowed_domains {
            check_len("allowed_domains", domains.value.len())?;
            let mut normalized = Vec::with_capacity(domains.value.len());
            for rule in &domains.value {
                let rule = names::normalize_domain_rule(rule)
                    .map_err(|e| PolicyError::new("allowed_domains", e.to_string()))?;
                if !normalized.contains(&rule) {
                    normalized.push(rule);
                }
            }
            domains.value = normalized;
        }
        if let Some(pattern) = &out.common_name_pattern {
            if let Some(p) = &pattern.value {
                evaluate::compile_pattern(p)
                    .map_err(|e| PolicyError::new("common_name_pattern", e))?;
            }
        }
        if let Some(max) = &out.max_sans {
            if max.value == 0 || max.value as usize > MAX_LIST_ENTRIES {
                return Err(PolicyError::new(
                    "max_sans",
                    format!("must be between 1 and {MAX_LIST_ENTRIES}"),
                ));
            }
        }
        if let Some(keys) = &out.allowed_key_types {
            check_len("allowed_key_types", keys.value.len())?;
            for rule in &keys.value {
                match (rule.key_type, rule.min_bits) {
                    (KeyType::Rsa, Some(bits)) if bits < MIN_RSA_BITS => {
                        return Err(PolicyError::new(
                            "allowed_key_types",
                            format!(
                                "RSA keys below {MIN_RSA_BITS} bits are never allowed, not {bits}"
                            ),
                        ))
                    }
                    (KeyType::Rsa, _) => {}
                    (other, Some(_)) => {
                        return Err(PolicyError::new(
                            "allowed_key_types",
                            format!("min_bits applies to RSA only, not {}", other.as_str()),
                        ))
                    }
                    (_, None) => {}
                }
            }
        }
        if let Some(issuers) = &mut out.allowed_issuers {
            check_len("allowed_issuers", issuers.value.len())?;
            for name in &mut issuers.value {
                *name = name.trim().to_string();
                check_issuer_name("allowed_issuers", name)?;
            }
        }
        if let Some(issuer) = &mut out.default_issuer {
            issuer.value = issuer.value.trim().to_string();
            check_issuer_name("default_issuer", &issuer.value)?;
        }
        for (field, span) in [
            ("max_validity", &out.max_validity),
            ("notify_before", &out.notify_before),
            ("renew_before", &out.renew_before),
        ] {
            if let Some(span) = span {
                if span.value.0 <= 0 || span.value.0 > Span::days(36_500).0 {
                    return Err(PolicyError::new(
                        field,
                        "must be between 1 second and 100 years",
                    ));
                }
            }
        }
        if let (Some(notify), Some(renew)) = (&out.notify_before, &out.renew_before) {
            if renew.value > notify.value {
                return Err(PolicyError::new(
                    "renew_before",
                    "renewal cannot start before the first expiry notification (renew_before > notify_before)",
                ));
            }
        }
        if let Some(destinations) = &out.destinations {
            crate::deploy::validate_destinations(&destinations.value)
                .map_err(|e| PolicyError::new("destinations", e))?;
        }
        if let Some(windows) = &mut out.deploy_windows {
            check_len("deploy_windows", windows.value.len())?;
            for w in windows.value.iter_mut() {
                let parsed = crate::deploy::Window::parse(w)
                    .map_err(|e| PolicyError::new("deploy_windows", e))?;
                *w = format!(
                    "{:02}:{:02}-{:02}:{:02}",
                    parsed.start_min / 60,
                    parsed.start_min % 60,
                    parsed.end_min / 60,
                    parsed.end_min % 60
                );
            }
        }
        if let Some(stages) = &mut out.approval_stages {
            if stages.value.len() > MAX_APPROVAL_STAGES {
                return Err(PolicyError::new(
                    "approval_stages",
                    format!("at most {MAX_APPROVAL_STAGES} stages"),
                ));
            }
            for stage in stages.value.iter_mut() {
                stage.name = stage.name.trim().to_string();
                if stage.name.is_empty() || stage.name.len() > 64 {
                    return Err(PolicyError::new(
                        "approval_stages",
                        "stage names are 1 to 64 characters",
                    ));
                }
                if stage.count == 0 || stage.count > MAX_STAGE_COUNT {
                    return Err(PolicyError::new(
                        "approval_stages",
                        format!("stage {}: count is 1 to {MAX_STAGE_COUNT}", stage.name),
                    ));
                }
                if let Some(group) = &mut stage.group {
                    *group = group.trim().to_string();
                    if group.is_empty() || group.len() > 64 {
                        return Err(PolicyError::new(
                            "approval_stages",
                            "group names are 1 to 64 characters",
                        ));
                    }
                }
            }
        }
        if let Some(timeout) = &out.approval_timeout {
            if timeout.value.0 < 1 || timeout.value.0 > Span::days(366).0 {
                return Err(PolicyError::new(
                    "approval_timeout",
                    "must be between 1 second and 366 days",
                ));
            }
        }
        if let Some(tags) = &mut out.required_tags {
            check_len("required_tags", tags.value.len())?;
            for key in &mut tags.value {
                *key = key.trim().to_string();
                if key.is_empty() || key.len() > 128 {
                    return Err(PolicyError::new(
                        "required_tags",
                        "tag keys are 1 to 128 characters",
                    ));
                }
            }
        }
        if out.rules.len() > MAX_RULES_PER_ZONE {
            return Err(PolicyError::new(
                "rules",
                format!("a zone may define at most {MAX_RULES_PER_ZONE} rules"),
            ));
        }
        for (i, rule) in out.rules.iter().enumerate() {
            rule.check().map_err(|e| PolicyError::new("rules", e))?;
            if out.rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(PolicyError::new(
                    "rules",
                    format!("two rules are named {}", rule.name),
                ));
            }
        }
        Ok(out)
    }

    /// Refuses a policy that is invalid or not in canonical form (see [`ZonePolicy::normalized`]).
    pub fn validate(&self) -> Result<(), PolicyError> {
        let canonical = self.normalized()?;
        if canonical != *self {
            return Err(PolicyError::new("policy", "not in canonical form"));
        }
        Ok(())
    }
}

fn check_len(field: &str, len: usize) -> Result<(), PolicyError> {
    if len > MAX_LIST_ENTRIES {
        return Err(PolicyError::new(
            field,
            format!("at most {MAX_LIST_ENTRIES} entries"),
        ));
    }
    Ok(())
}

/// Issuer names: 1-64 of `a-z`, `0-9`, `-`, `_`.
pub fn is_issuer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_issuer_name(field: &str, name: &str) -> Result<(), PolicyError> {
    if is_issuer_name(name) {
        Ok(())
    } else {
        Err(PolicyError::new(
            field,
            format!("{name:?} is not an issuer name (1-64 of a-z, 0-9, '-', '_')"),
        ))
    }
}

#[cfg(test)]
mod tests;

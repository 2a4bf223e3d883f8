//! Custom rules: CEL expressions over the request, each with the message a requester sees when it
//! fails.
//!
//! The expression sees one variable, `request`:
//!
//! | field | CEL type | example |
//! |---|---|---|
//! | `zone` | string | `"/prod/payments"` |
//! | `common_name` | string or null | `"api.payments.corp.example"` |
//! | `sans` | list of strings (DNS names and IPs, normalised) | `["api.payments.corp.example"]` |
//! | `dns_names`, `ip_sans` | lists of strings | |
//! | `key_type`, `key_bits` | string, int | `"ecdsa_p256"`, `256` |
//! | `validity_seconds`, `validity_days` | int | `7776000`, `90` |
//! | `issuer`, `owner` | string, string or null | `"builtin"` |
//! | `tags` | map of string to string | `{"env": "prod"}` |
//!
//! A rule passes when it evaluates to `true`. `false`, a non-boolean, or an evaluation error (a
//! missing tag key, say) is a violation: rules fail closed.
//!
//! Rules run inside `apply` on every node, so they must be cheap and bounded: expressions are at most
//! [`MAX_EXPRESSION_CHARS`] long, nest at most [`MAX_NESTING`] deep and use at most
//! [`MAX_COMPREHENSIONS`] comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`),
//! never one inside another, so a rule costs at most a few passes over the request's lists; those are
//! bounded by the zone's `max_sans` (rules are not run on a request that already exceeds it), and at
//! most [`super::MAX_EFFECTIVE_RULES`] rules apply to one zone. A panic inside the CEL library is caught and reported as a
//! failed rule rather than stopping the node.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

pub const MAX_EXPRESSION_CHARS: usize = 2048;
pub const MAX_NESTING: usize = 24;
pub const MAX_COMPREHENSIONS: usize = 2;
const MAX_MESSAGE_CHARS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the zone; a descendant's rule of the same name replaces this one unless locked.
    pub name: String,
    pub expression: String,
    /// What a requester is told when the rule fails.
    pub message: String,
    #[serde(default)]
    pub locked: bool,
}

/// The view of a request a rule sees.
#[derive(Debug, Clone, Serialize)]
pub struct CelRequest<'a> {
    pub zone: &'a str,
    pub common_name: Option<&'a str>,
    pub sans: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_sans: Vec<String>,
    pub key_type: &'a str,
    pub key_bits: i64,
    pub validity_seconds: i64,
    pub validity_days: i64,
    pub issuer: &'a str,
    pub owner: Option<&'a str>,
    pub tags: &'a std::collections::BTreeMap<String, String>,
}

impl Rule {
    /// Everything that can be known about a rule before a request arrives: its name, its size, and
    /// that the expression compiles.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(format!(
                "rule name {:?}: 1-64 of letters, digits, '-', '_'",
                self.name
            ));
        }
        if self.message.trim().is_empty() || self.message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(format!(
                "rule {}: the message is required and at most {MAX_MESSAGE_CHARS} characters",
                self.name
            ));
        }
        compile(&self.expression)
            .map(|_| ())
            .map_err(|e| format!("rule {}: {e}", self.name))
    }

    /// Evaluate against a request: `Ok(())` when the rule passes, else the reason it did not.
    pub fn eval(&self, request: &CelRequest<'_>) -> Result<(), String> {
        let program = compiled(&self.expression)?;
        let value =
            cel::to_value(request).map_err(|e| format!("cannot present the request: {e}"))?;
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut context = cel::Context::default();
            context.add_variable_from_value("request", value);
            program.execute(&context)
        }))
        .map_err(|_| "the rule engine failed on this expression".to_string())?;
        match result {
            Ok(cel::Value::Bool(true)) => Ok(()),
            Ok(cel::Value::Bool(false)) => Err(self.message.clone()),
            Ok(other) => Err(format!(
                "{} (the rule returned {:?}, not a boolean)",
                self.message,
                other.type_of()
            )),
            Err(e) => Err(format!(
                "{} (the rule could not be evaluated: {e})",
                self.message
            )),
        }
    }
}

/// Most compiled expressions kept; the cache is emptied when it fills (zones hold few rules).
const CACHE_ENTRIES: usize = 256;

/// Parsing is the larger part of a rule's cost and a pure function of the text, so every node keeps
/// the programs it compiled. The cache changes no verdict: a miss compiles the same program again.
fn compiled(expression: &str) -> Result<Arc<cel::Program>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<cel::Program>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(program) = cache.lock().ok().and_then(|c| c.get(expression).cloned()) {
        return Ok(program);
    }
    let program = Arc::new(compile(expression)?);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(expression.to_string(), program.clone());
    }
    Ok(program)
}

/// Compile an expression after the bounds checks.
fn compile(expression: &str) -> Result<cel::Program, String> {
    if expression.trim().is_empty() {
        return Err("the expression is empty".to_string());
    }
    if expression.chars().count() > MAX_EXPRESSION_CHARS {
        return Err(format!(
            "the expression is longer than {MAX_EXPRESSION_CHARS} characters"
        ));
    }
    const MACROS: [&str; 5] = [".all(", ".exists(", ".exists_one(", ".map(", ".filter("];
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut comprehensions = 0usize;
    // The bracket depth inside each comprehension still open at this point.
    let mut open: Vec<usize> = Vec::new();
    for (i, c) in expression.char_indices() {
        if c == '.' && MACROS.iter().any(|m| expression[i..].starts_with(m)) {
            if !open.is_empty() {
                // One comprehension inside another costs the product of the list sizes.
                return Err("comprehensions (all, exists, map, ...) may not be nested".to_string());
            }
            comprehensions += 1;
            open.push(depth + 1);
        }
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => {
                if open.last() == Some(&depth) {
                    open.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    if deepest > MAX_NESTING {
        return Err(format!(
            "the expression nests deeper than {MAX_NESTING} levels"
        ));
    }
    if comprehensions > MAX_COMPREHENSIONS {
        return Err(format!(
            "the expression uses {comprehensions} comprehensions (all, exists, map, ...); at most \
             {MAX_COMPREHENSIONS} are allowed"
        ));
    }
    panic::catch_unwind(|| cel::Program::compile(expression))
        .map_err(|_| "the expression could not be parsed".to_string())?
        .map_err(|e| format!("the expression does not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn request<'a>(sans: &[&'a str], tags: &'a BTreeMap<String, String>) -> CelRequest<'a> {
        CelRequest {
            zone: "/prod/payments",
            common_name: sans.first().copied(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            dns_names: sans.iter().map(|s| s.to_string()).collect(),
            ip_sans: vec![],
            key_type: "ecdsa_p256",
            key_bits: 256,
            validity_seconds: 90 * 86_400,
            validity_days: 90,
            issuer: "builtin",
            owner: Some("team-payments"),
            tags,
        }
    }

    fn rule(expression: &str) -> Rule {
        Rule {
            name: "r".into(),
            expression: expression.into(),
            message: "names must be under payments".into(),
            locked: false,
        }
    }

    #[test]
    fn rules_pass_fail_and_fail_closed() {
        let tags = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let ok = request(&["api.payments.corp.example"], &tags);
        let bad = request(&["api.payments.corp.example", "evil.example"], &tags);
        let suffix = rule(r#"request.sans.all(s, s.endsWith(".payments.corp.example"))"#);
        assert_eq!(suffix.eval(&ok), Ok(()));
        assert_eq!(
            suffix.eval(&bad),
            Err("names must be under payments".into())
        );
        assert_eq!(rule(r#"request.tags.env == "prod""#).eval(&ok), Ok(()));
        assert_eq!(
            rule("request.validity_days <= 90 && request.key_bits >= 256").eval(&ok),
            Ok(())
        );
        // A missing map key is an evaluation error: a violation, not a pass.
        let missing = rule(r#"request.tags.cost_center == "42""#)
            .eval(&ok)
            .unwrap_err();
        assert!(missing.contains("could not be evaluated"), "{missing}");
        let not_bool = rule("request.key_bits").eval(&ok).unwrap_err();
        assert!(not_bool.contains("not a boolean"), "{not_bool}");
        assert_eq!(
            rule(r#"request.owner == "team-payments""#).eval(&ok),
            Ok(())
        );
        assert_eq!(
            rule(r#"request.common_name.matches("^api\\.")"#).eval(&ok),
            Ok(())
        );
    }

    #[test]
    fn bad_rules_are_refused_when_stored() {
        assert!(rule("request.sans.all(s,").check().is_err());
        assert!(rule("").check().is_err());
        assert!(rule(&"(".repeat(30)).check().is_err());
        assert!(rule(&"1 + ".repeat(1000)).check().is_err());
        let many = "request.sans.all(a, true) && request.sans.all(b, true) && request.sans.exists(c, true)";
        assert!(rule(many).check().unwrap_err().contains("comprehensions"));
        let nested = "request.sans.all(a, request.sans.exists(b, a == b))";
        assert!(rule(nested).check().unwrap_err().contains("nested"));
        let two =
            "request.sans.all(a, a.endsWith(\".x\")) && request.dns_names.exists(b, (b == \"y\"))";
        assert!(rule(two).check().is_ok(), "{:?}", rule(two).check());
        let mut unnamed = rule("true");
        unnamed.name = "has space".into();
        assert!(unnamed.check().is_err());
        let mut silent = rule("true");
        silent.message = " ".into();
        assert!(silent.check().is_err());
        assert!(rule("true").check().is_ok());
    }
}

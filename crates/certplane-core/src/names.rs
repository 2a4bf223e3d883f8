//! Subject alternative names as policy sees them: normalised once at intake, compared as ASCII.
//!
//! ```text
//!  "WWW.Exämple.COM."  ─trim─► strip one trailing dot ─► UTS #46 to ASCII (lowercase, punycode, STD3,
//!                                                        DNS lengths) ─► "www.xn--exmple-cua.com"
//!  "*.Example.com"     ─► wildcard only as the whole leftmost label, never directly under a public
//!                         suffix (`*.com`, `*.co.uk`, `*.github.io` are refused)
//!  "10.0.0.1", "::1"   ─► IP SANs, parsed as addresses (brackets around IPv6 are accepted)
//! ```
//!
//! Everything downstream (domain rules, CEL rules, the issued certificate) sees only the normalised
//! form, so a mixed-case name, a trailing dot or a Unicode look-alike of an allowed domain cannot slip
//! past a suffix check: the look-alike becomes a different `xn--` label.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name text accepted before normalisation (a DNS name is at most 253 octets; the room above
/// that is for Unicode input whose punycode form fits).
pub const MAX_NAME_INPUT: usize = 1024;

/// One subject alternative name, normalised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    /// An ASCII DNS name (A-labels), lowercase, without a trailing dot; may start with `*.`.
    Dns(String),
    Ip(IpAddr),
}

impl San {
    pub fn is_wildcard(&self) -> bool {
        matches!(self, San::Dns(name) if name.starts_with("*."))
    }

    pub fn dns(&self) -> Option<&str> {
        match self {
            San::Dns(name) => Some(name),
            San::Ip(_) => None,
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl FromStr for San {
    type Err = NameError;

    fn from_str(input: &str) -> Result<San, NameError> {
        normalize_san(input)
    }
}

// Stored and sent as the plain text form; reading one back normalises it again, which is a no-op on
// a normalised name and so keeps old records readable.
impl Serialize for San {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for San {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<San, D::Error> {
        let text = String::deserialize(deserializer)?;
        normalize_san(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a name was refused, in words a requester can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than {MAX_NAME_INPUT} characters")]
    TooLong,
    #[error("{name:?} is not a valid DNS name: {reason}")]
    Invalid { name: String, reason: String },
    #[error("{name:?}: a wildcard may only be the whole leftmost label (`*.example.com`)")]
    MisplacedWildcard { name: String },
    #[error("{name:?}: a wildcard directly under the public suffix {suffix:?} would cover every domain registered there")]
    WildcardOnPublicSuffix { name: String, suffix: String },
    #[error("{name:?} is a public suffix, not a domain anyone can hold")]
    PublicSuffix { name: String },
}

/// Normalise one SAN: an IP address if it parses as one, else a DNS name (see the module docs).
pub fn normalize_san(input: &str) -> Result<San, NameError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.len() > MAX_NAME_INPUT {
        return Err(NameError::TooLong);
    }
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(San::Ip(ip));
    }
    normalize_dns_name(trimmed).map(San::Dns)
}

/// Normalise a DNS name (wildcards allowed as the whole leftmost label) to lowercase A-labels.
pub fn normalize_dns_name(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.len() > MAX_NAME_INPUT {
        return Err(NameError::TooLong);
    }
    // One trailing dot is the fully-qualified form of the same name; two are a typo.
    let name = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let (wildcard, base) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if base.contains('*') {
        return Err(NameError::MisplacedWildcard {
            name: trimmed.to_string(),
        });
    }
    // Full stops that UTS #46 maps to '.' (ideographic and fullwidth) would otherwise hide a wildcard
    // label from the check above; the mapping happens inside to_ascii, so look for '*' again after.
    let ascii = idna::domain_to_ascii_strict(base).map_err(|e| NameError::Invalid {
        name: trimmed.to_string(),
        reason: idna_reason(base, &e.to_string()),
    })?;
    if ascii.is_empty() || ascii.contains('*') {
        return Err(NameError::Invalid {
            name: trimmed.to_string(),
            reason: "empty after normalisation".to_string(),
        });
    }
    if ascii
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(NameError::Invalid {
            name: trimmed.to_string(),
            reason: "the last label is all digits: not a host name, and not a valid IP address"
                .to_string(),
        });
    }
    if !ascii.contains('.') && wildcard {
        return Err(NameError::WildcardOnPublicSuffix {
            name: trimmed.to_string(),
            suffix: ascii,
        });
    }
    if let Some(suffix) = public_suffix_of(&ascii) {
        if suffix == ascii {
            return Err(if wildcard {
                NameError::WildcardOnPublicSuffix {
                    name: trimmed.to_string(),
                    suffix,
                }
            } else if is_listed_suffix(&ascii) {
                NameError::PublicSuffix {
                    name: trimmed.to_string(),
                }
            } else {
                // A single-label name under no listed suffix (`localhost`, `db`): allowed, the
                // zone's domain rules decide whether such names may be issued.
                return Ok(ascii);
            });
        }
    }
    Ok(if wildcard {
        format!("*.{ascii}")
    } else {
        ascii
    })
}

fn idna_reason(input: &str, detail: &str) -> String {
    if input.split('.').any(|l| l.len() > 63) {
        "a label is longer than 63 characters".to_string()
    } else if input.len() > 253 {
        "the name is longer than 253 characters".to_string()
    } else if input.split('.').any(str::is_empty) {
        "it has an empty label".to_string()
    } else {
        format!("only letters, digits and '-' are allowed in labels, and '-' not at either end ({detail})")
    }
}

/// The public suffix of an ASCII name by the Public Suffix List (ICANN and private sections), or the
/// last label when no rule is listed (the list's implicit `*` rule).
fn public_suffix_of(ascii: &str) -> Option<String> {
    psl::suffix(ascii.as_bytes())
        .and_then(|s| std::str::from_utf8(s.as_bytes()).ok().map(str::to_string))
}

/// True when the list itself names `ascii` as a suffix (as opposed to the implicit `*` rule).
fn is_listed_suffix(ascii: &str) -> bool {
    psl::suffix(ascii.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == ascii.as_bytes())
}

/// Normalise a domain rule of a zone policy: `example.com` (that name only) or `.example.com` (any
/// name below it). Wildcard rules are written as suffix rules.
pub fn normalize_domain_rule(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    match trimmed.strip_prefix('.') {
        Some(rest) => {
            let ascii = normalize_dns_name(rest)?;
            if ascii.starts_with("*.") {
                return Err(NameError::MisplacedWildcard {
                    name: trimmed.to_string(),
                });
            }
            Ok(format!(".{ascii}"))
        }
        None => {
            let ascii = normalize_dns_name(trimmed)?;
            // `*.example.com` as a rule means "names below example.com"; store it as such.
            Ok(match ascii.strip_prefix('*') {
                Some(dot_base) => dot_base.to_string(),
                None => ascii,
            })
        }
    }
}

/// Does a normalised DNS name (possibly a wildcard) fall under a normalised domain rule?
///
/// Exact rules match only that name; suffix rules (`.example.com`) match names strictly below, on a
/// label boundary. A wildcard `*.a.example.com` is below `.example.com`, and `*.example.com` is below
/// `.example.com` too (it names hosts strictly below example.com).
pub fn name_matches_rule(name: &str, rule: &str) -> bool {
    match rule.strip_prefix('.') {
        Some(_) => {
            let base = name.strip_prefix('*').unwrap_or(name);
            base.ends_with(rule) || name.ends_with(rule)
        }
        None => name == rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(input: &str) -> Result<String, NameError> {
        normalize_dns_name(input)
    }

    #[test]
    fn case_trailing_dot_and_idna_are_normalised() {
        assert_eq!(dns("WWW.Example.COM.").unwrap(), "www.example.com");
        assert_eq!(dns("  api.example.com  ").unwrap(), "api.example.com");
        assert_eq!(dns("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(dns("BÜCHER.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(
            dns("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        // Fullwidth full stops map to '.'.
        assert_eq!(
            dns("www\u{ff0e}example\u{ff0e}com").unwrap(),
            "www.example.com"
        );
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "",
            "   ",
            "a..example.com",
            "example.com..",
            "-lead.example.com",
            "trail-.example.com",
            "under_score.example.com",
            "sp ace.example.com",
            "semi;colon.example.com",
            &format!("{}.example.com", "a".repeat(64)),
            &format!("{}.com", ["abcdefghi"; 30].join(".")),
        ] {
            assert!(dns(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(dns(&"a".repeat(2000)), Err(NameError::TooLong));
    }

    #[test]
    fn wildcards_only_as_the_whole_leftmost_label() {
        assert_eq!(dns("*.Example.com").unwrap(), "*.example.com");
        for bad in [
            "f*o.example.com",
            "www.*.example.com",
            "**.example.com",
            "*",
            "*.*.example.com",
            "x.example.*",
        ] {
            assert!(dns(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(
            dns("www.*.example.com"),
            Err(NameError::MisplacedWildcard { .. })
        ));
    }

    #[test]
    fn wildcards_under_public_suffixes_are_refused() {
        for bad in ["*.com", "*.co.uk", "*.CO.UK.", "*.github.io", "*.internal"] {
            assert!(
                matches!(dns(bad), Err(NameError::WildcardOnPublicSuffix { .. })),
                "{bad:?}: {:?}",
                dns(bad)
            );
        }
        assert_eq!(dns("*.example.co.uk").unwrap(), "*.example.co.uk");
        assert_eq!(dns("*.corp.internal").unwrap(), "*.corp.internal");
    }

    #[test]
    fn public_suffixes_themselves_are_refused() {
        assert!(matches!(dns("co.uk"), Err(NameError::PublicSuffix { .. })));
        assert!(matches!(dns("com"), Err(NameError::PublicSuffix { .. })));
        // Single labels under no listed rule are names a private network may use.
        assert_eq!(dns("localhost").unwrap(), "localhost");
    }

    #[test]
    fn ip_sans_are_parsed_as_addresses() {
        assert_eq!(
            normalize_san("10.0.0.1").unwrap(),
            San::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            normalize_san("[::1]").unwrap(),
            San::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            normalize_san("2001:DB8::1").unwrap().to_string(),
            "2001:db8::1"
        );
        assert!(matches!(normalize_san("Example.com").unwrap(), San::Dns(n) if n == "example.com"));
        // Not an address, and a name never ends in an all-numeric label.
        assert!(normalize_san("10.0.0.256").is_err());
        assert!(normalize_san("host.123").is_err());
    }

    #[test]
    fn serde_round_trips_the_text_form() {
        let sans = vec![
            San::Dns("www.example.com".into()),
            San::Ip("::1".parse().unwrap()),
        ];
        let json = serde_json::to_string(&sans).unwrap();
        assert_eq!(json, r#"["www.example.com","::1"]"#);
        let back: Vec<San> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sans);
        assert!(serde_json::from_str::<San>(r#""*.com""#).is_err());
    }

    #[test]
    fn domain_rules_match_on_label_boundaries() {
        let suffix = normalize_domain_rule(".Example.COM").unwrap();
        assert_eq!(suffix, ".example.com");
        assert_eq!(
            normalize_domain_rule("*.example.com").unwrap(),
            ".example.com"
        );
        assert_eq!(
            normalize_domain_rule("Example.com.").unwrap(),
            "example.com"
        );
        assert!(name_matches_rule("www.example.com", &suffix));
        assert!(name_matches_rule("a.b.example.com", &suffix));
        assert!(name_matches_rule("*.example.com", &suffix));
        assert!(name_matches_rule("*.a.example.com", &suffix));
        assert!(!name_matches_rule("example.com", &suffix));
        assert!(!name_matches_rule("evilexample.com", &suffix));
        assert!(!name_matches_rule("example.com.evil.net", &suffix));
        assert!(name_matches_rule("example.com", "example.com"));
        assert!(!name_matches_rule("www.example.com", "example.com"));
        // A look-alike is a different A-label and matches nothing it imitates.
        let lookalike = dns("www.exаmple.com").unwrap(); // Cyrillic 'а'
        assert!(lookalike.contains("xn--"));
        assert!(!name_matches_rule(&lookalike, &suffix));
    }
}

//! Zone paths: `/` is the root; `/prod/payments` is `payments` inside `prod`. Segments are lowercase
//! letters, digits, `-` and `_`. `prod/payments` and `/prod/payments/` mean the same zone.

/// Deepest zone path accepted (segments below the root).
pub const MAX_ZONE_DEPTH: usize = 16;
const MAX_SEGMENT: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZonePathError {
    #[error("zone path {0:?}: segments are 1-63 of a-z, 0-9, '-', '_', separated by '/'")]
    BadSegment(String),
    #[error("zone path {0:?} is deeper than {MAX_ZONE_DEPTH} levels")]
    TooDeep(String),
}

/// The canonical form of a zone path: a leading `/`, no trailing `/`, `/` alone for the root.
pub fn normalize_zone_path(input: &str) -> Result<String, ZonePathError> {
    let trimmed = input.trim();
    if trimmed.is_empty() || trimmed == "/" {
        return Ok("/".to_string());
    }
    let inner = trimmed.strip_prefix('/').unwrap_or(trimmed);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let mut depth = 0;
    for segment in inner.split('/') {
        depth += 1;
        let ok = !segment.is_empty()
            && segment.len() <= MAX_SEGMENT
            && segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(ZonePathError::BadSegment(input.to_string()));
        }
    }
    if depth > MAX_ZONE_DEPTH {
        return Err(ZonePathError::TooDeep(input.to_string()));
    }
    Ok(format!("/{inner}"))
}

/// The zones from the root down to `path` inclusive: `/a/b` gives `["/", "/a", "/a/b"]`. `path` must
/// be canonical.
pub fn ancestors(path: &str) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    let mut current = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        current.push('/');
        current.push_str(segment);
        out.push(current.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(normalize_zone_path("/").unwrap(), "/");
        assert_eq!(normalize_zone_path("").unwrap(), "/");
        assert_eq!(normalize_zone_path("prod").unwrap(), "/prod");
        assert_eq!(
            normalize_zone_path("/prod/payments/").unwrap(),
            "/prod/payments"
        );
        assert_eq!(
            normalize_zone_path("payments/prod").unwrap(),
            "/payments/prod"
        );
        for bad in ["//", "/Prod", "/a//b", "/a/../b", "/a b", "///a", "/a/b//"] {
            assert!(normalize_zone_path(bad).is_err(), "{bad:?} was accepted");
        }
        let deep = "/a".repeat(MAX_ZONE_DEPTH + 1);
        assert!(matches!(
            normalize_zone_path(&deep),
            Err(ZonePathError::TooDeep(_))
        ));
    }

    #[test]
    fn ancestors_root_first() {
        assert_eq!(ancestors("/"), vec!["/"]);
        assert_eq!(ancestors("/a/b"), vec!["/", "/a", "/a/b"]);
    }
}

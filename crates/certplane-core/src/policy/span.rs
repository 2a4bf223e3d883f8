//! Durations in policy and requests: whole seconds, written as `90d`, `12h`, `30m`, `45s` (or any
//! combination humantime reads, such as `1d 12h`), or as a plain number of seconds.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub i64);

const UNITS: [(i64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];

impl Span {
    pub const fn seconds(s: i64) -> Span {
        Span(s)
    }

    pub const fn minutes(m: i64) -> Span {
        Span(m * 60)
    }

    pub const fn days(d: i64) -> Span {
        Span(d * 86_400)
    }

    pub fn millis(self) -> i64 {
        self.0.saturating_mul(1000)
    }

    /// Parse `90d`, `1d 12h`, `3600` (seconds).
    pub fn parse(text: &str) -> Result<Span, String> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<i64>() {
            return Ok(Span(seconds));
        }
        let duration = humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 90d, 12h or 30m: {e}"))?;
        if duration.subsec_nanos() != 0 {
            return Err(format!("{text:?}: durations are whole seconds"));
        }
        i64::try_from(duration.as_secs())
            .map(Span)
            .map_err(|_| format!("{text:?} is too long"))
    }
}

impl fmt::Display for Span {
    /// The largest unit that divides the span exactly: `90d`, `36h`, `90s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        for (size, unit) in UNITS {
            if self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}s", self.0)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
        struct SpanVisitor;
        impl Visitor<'_> for SpanVisitor {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"90d\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                Ok(Span(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                i64::try_from(v).map(Span).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                Span::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SpanVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Span::parse("90d").unwrap(), Span::days(90));
        assert_eq!(Span::parse("1d 12h").unwrap(), Span(36 * 3600));
        assert_eq!(Span::parse("30m").unwrap(), Span::minutes(30));
        assert_eq!(Span::parse("45").unwrap(), Span(45));
        assert!(Span::parse("soon").is_err());
        assert!(Span::parse("1.5s").is_err());
        assert_eq!(Span::days(90).to_string(), "90d");
        assert_eq!(Span(36 * 3600).to_string(), "36h");
        assert_eq!(Span(90).to_string(), "90s");
        assert_eq!(serde_json::to_string(&Span::days(7)).unwrap(), "\"7d\"");
        assert_eq!(
            serde_json::from_str::<Span>("\"7d\"").unwrap(),
            Span::days(7)
        );
        assert_eq!(serde_json::from_str::<Span>("600").unwrap(), Span(600));
        assert!(serde_json::from_str::<Span>("true").is_err());
    }
}

//! Key and record encodings of the state machine's keyspaces (part of the persisted format).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CoreError;
use crate::time::Timestamp;

/// Version byte that prefixes every stored record.
pub const RECORD_VERSION: u8 = 1;

/// Separator between an index's value part and the record id. Ids and indexed values never contain it.
pub const SEP: u8 = 0;

pub mod meta {
    pub const INITIALIZED: &[u8] = b"initialized";
    pub const AUDIT_HEAD: &[u8] = b"audit_head";
    pub const STATE_DIGEST: &[u8] = b"state_digest";
    pub const COUNTS: &[u8] = b"counts";
    pub const WEBHOOK_COUNT: &[u8] = b"webhook_count";
}

pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Plain data with string keys: serialisation cannot fail.
    out.extend(serde_json::to_vec(value).unwrap_or_default());
    out
}

pub fn decode_record<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, CoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|e| CoreError::corrupt(what, e))
        }
        Some((v, _)) => Err(CoreError::corrupt(
            what,
            format!("unknown record version {v}"),
        )),
        None => Err(CoreError::corrupt(what, "empty record")),
    }
}

/// `value ++ SEP ++ id`: one entry of a secondary index.
pub fn index_key(value: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(value.len() + id.len() + 1);
    key.extend_from_slice(value.as_bytes());
    key.push(SEP);
    key.extend_from_slice(id.as_bytes());
    key
}

/// `value ++ SEP`: the prefix of every index entry for `value`.
pub fn index_prefix(value: &str) -> Vec<u8> {
    let mut key = value.as_bytes().to_vec();
    key.push(SEP);
    key
}

/// The id part of an index entry.
pub fn id_of_index_key(key: &[u8]) -> Option<&str> {
    let pos = key.iter().rposition(|b| *b == SEP)?;
    std::str::from_utf8(&key[pos + 1..]).ok()
}

/// Timestamps sort as unsigned big-endian after flipping the sign bit.
pub fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t.millis() as u64) ^ (1 << 63)).to_be_bytes()
}

/// A notice-queue key: when it is due, the certificate, the threshold.
pub fn notice_key(due_at: Timestamp, id: &str, threshold: &str) -> Vec<u8> {
    let mut key = expiry_key(due_at, id);
    key.push(SEP);
    key.extend_from_slice(threshold.as_bytes());
    key
}

pub fn expiry_key(not_after: Timestamp, id: &str) -> Vec<u8> {
    let mut key = time_bytes(not_after).to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn id_of_expiry_key(key: &[u8]) -> Option<&str> {
    key.get(8..).and_then(|rest| std::str::from_utf8(rest).ok())
}

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Lowercased 3-byte windows of a name, de-duplicated: the substring index's terms.
pub fn trigrams(name: &str) -> Vec<String> {
    let lower: Vec<char> = name.to_lowercase().chars().filter(|c| *c != '\0').collect();
    let mut out: Vec<String> = lower.windows(3).map(|w| w.iter().collect()).collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_positive_times_sort_in_order() {
        let times = [-5_000i64, -1, 0, 1, 1_700_000_000_000];
        let keys: Vec<_> = times.iter().map(|t| time_bytes(Timestamp(*t))).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn index_keys_split_back_into_ids() {
        let key = index_key("team-a", "crt_01");
        assert_eq!(id_of_index_key(&key), Some("crt_01"));
        assert_eq!(
            id_of_expiry_key(&expiry_key(Timestamp(7), "crt_02")),
            Some("crt_02")
        );
    }

    #[test]
    fn unknown_record_versions_are_corruption() {
        let mut bytes = encode_record(&"x");
        bytes[0] = 9;
        assert!(decode_record::<String>("test", &bytes).is_err());
        assert_eq!(
            decode_record::<String>("test", &encode_record(&"x")).ok(),
            Some("x".to_string())
        );
    }

    #[test]
    fn trigrams_are_lowercase_windows() {
        assert_eq!(trigrams("ABcd"), vec!["abc".to_string(), "bcd".to_string()]);
        assert!(trigrams("ab").is_empty());
    }
}

//! Read paths over the state: inventory listing with filters and cursor pagination, audit listing.
//!
//! Every listing walks one secondary index chosen from the filters (the most selective one present) and
//! checks the remaining filters on the records it finds. A page stops after `limit` matches or after a
//! fixed scan budget, whichever comes first, and hands back a cursor: no request walks the whole
//! inventory.

use serde::{Deserialize, Serialize};

use crate::apply::get_certificate;
use crate::audit::AuditRecord;
use crate::certificate::{CertificateRecord, CertificateStatus};
use crate::error::CoreError;
use crate::keys::{self, decode_record};
use crate::store::{prefix_end, Keyspace, StateRead};
use crate::time::Timestamp;

/// Index entries examined per page at most.
pub const SCAN_BUDGET: usize = 10_000;
pub const MAX_PAGE: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    Active,
    Retired,
    /// Active and past `not_after` at the time of the read.
    Expired,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFilter {
    /// Active certificates whose `not_after` is before this time (already expired included).
    pub expiring_before: Option<Timestamp>,
    pub owner: Option<String>,
    /// A zone path; sub-zones match too.
    pub zone: Option<String>,
    /// Issuer distinguished name, compared case-insensitively.
    pub issuer: Option<String>,
    /// Substring of the CN or any SAN, at least 3 characters.
    pub name: Option<String>,
    pub status: Option<StatusFilter>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<crate::store::StoreError> for QueryError {
    fn from(e: crate::store::StoreError) -> Self {
        QueryError::Core(CoreError::Store(e))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` to continue; absent when the listing is complete.
    pub next_cursor: Option<String>,
}

/// The index a listing walks, and the key range within it.
struct Plan {
    tag: char,
    ks: Keyspace,
    from: Vec<u8>,
    to: Vec<u8>,
}

fn plan(filter: &CertificateFilter) -> Result<Plan, QueryError> {
    let prefixed = |tag, ks, value: &str| {
        let from = keys::index_prefix(value);
        let to = prefix_end(&from);
        Plan { tag, ks, from, to }
    };
    if let Some(before) = filter.expiring_before {
        return Ok(Plan {
            tag: 'e',
            ks: Keyspace::ByExpiry,
            from: Vec::new(),
            to: keys::time_bytes(before).to_vec(),
        });
    }
    if let Some(owner) = &filter.owner {
        return Ok(prefixed('o', Keyspace::ByOwner, owner));
    }
    if let Some(zone) = &filter.zone {
        // Zone entries for `a` and `a/b` share the prefix `a`; non-matching zones such as `ab` are
        // filtered out after the lookup.
        let from = zone.as_bytes().to_vec();
        let to = prefix_end(&from);
        return Ok(Plan {
            tag: 'z',
            ks: Keyspace::ByZone,
            from,
            to,
        });
    }
    if let Some(issuer) = &filter.issuer {
        return Ok(prefixed('i', Keyspace::ByIssuer, &issuer.to_lowercase()));
    }
    if let Some(name) = &filter.name {
        let grams = keys::trigrams(name);
        let Some(first) = grams.first() else {
            return Err(QueryError::InvalidArgument(
                "the name filter needs at least 3 characters".into(),
            ));
        };
        return Ok(prefixed('n', Keyspace::ByNameTrigram, first));
    }
    if let Some(status) = filter.status {
        let value = match status {
            StatusFilter::Retired => CertificateStatus::Retired.as_str(),
            StatusFilter::Active | StatusFilter::Expired => CertificateStatus::Active.as_str(),
        };
        return Ok(prefixed('s', Keyspace::ByStatus, value));
    }
    Ok(Plan {
        tag: 'a',
        ks: Keyspace::Certificates,
        from: Vec::new(),
        to: Vec::new(),
    })
}

fn matches(record: &CertificateRecord, filter: &CertificateFilter, now: Timestamp) -> bool {
    let active = record.status == CertificateStatus::Active;
    if let Some(before) = filter.expiring_before {
        if !active || record.details.not_after >= before {
            return false;
        }
    }
    if filter.owner.as_ref().is_some_and(|o| &record.owner != o) {
        return false;
    }
    if let Some(zone) = &filter.zone {
        let inside = record.zone == *zone
            || record
                .zone
                .strip_prefix(zone.as_str())
                .is_some_and(|r| r.starts_with('/'));
        if !inside {
            return false;
        }
    }
    if filter
        .issuer
        .as_ref()
        .is_some_and(|i| !record.details.issuer.eq_ignore_ascii_case(i))
    {
        return false;
    }
    if let Some(name) = &filter.name {
        let needle = name.to_lowercase();
        if !record.details.names().iter().any(|n| n.contains(&needle)) {
            return false;
        }
    }
    match filter.status {
        Some(StatusFilter::Active) if !active => false,
        Some(StatusFilter::Retired) if active => false,
        Some(StatusFilter::Expired) if !(active && record.details.not_after < now) => false,
        _ => true,
    }
}

fn encode_cursor(tag: char, key: &[u8]) -> String {
    format!("{tag}{}", hex::encode(key))
}

fn decode_cursor(cursor: &str, tag: char) -> Result<Vec<u8>, QueryError> {
    let bad = || {
        QueryError::InvalidArgument(
            "the cursor is malformed or does not belong to these filters".into(),
        )
    };
    let rest = cursor.strip_prefix(tag).ok_or_else(bad)?;
    hex::decode(rest).map_err(|_| bad())
}

/// The key just after `key`: where the next page starts.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

pub fn list_certificates(
    store: &impl StateRead,
    filter: &CertificateFilter,
    cursor: Option<&str>,
    limit: usize,
    now: Timestamp,
) -> Result<Page<CertificateRecord>, QueryError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let plan = plan(filter)?;
    let mut from = match cursor {
        Some(c) => successor(&decode_cursor(c, plan.tag)?),
        None => plan.from.clone(),
    };
    let mut items = Vec::new();
    let mut scanned = 0usize;
    loop {
        let chunk = (limit * 2).clamp(64, 1024);
        let batch = store.scan(plan.ks, &from, &plan.to, chunk)?;
        let exhausted = batch.len() < chunk;
        for (key, value) in &batch {
            scanned += 1;
            let record = if plan.ks == Keyspace::Certificates {
                Some(decode_record::<CertificateRecord>("certificate", value)?)
            } else {
                let id = if plan.ks == Keyspace::ByExpiry {
                    keys::id_of_expiry_key(key)
                } else {
                    keys::id_of_index_key(key)
                };
                let id = id.ok_or_else(|| CoreError::corrupt("index key", "no id part"))?;
                get_certificate(store, id)?
            };
            if let Some(record) = record.filter(|r| matches(r, filter, now)) {
                items.push(record);
            }
            if items.len() >= limit || scanned >= SCAN_BUDGET {
                let more = !exhausted || batch.last().is_some_and(|(last, _)| last != key);
                let next_cursor = more.then(|| encode_cursor(plan.tag, key));
                return Ok(Page { items, next_cursor });
            }
        }
        match batch.last() {
            Some((key, _)) if !exhausted => from = successor(key),
            _ => {
                return Ok(Page {
                    items,
                    next_cursor: None,
                })
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Exact action or a prefix ending in `.`, e.g. `certificate.`.
    pub action: Option<String>,
    pub object: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

fn audit_matches(r: &AuditRecord, f: &AuditFilter) -> bool {
    f.actor.as_ref().is_none_or(|a| &r.actor == a)
        && f.action.as_ref().is_none_or(|a| {
            &r.action == a || (a.ends_with('.') && r.action.starts_with(a.as_str()))
        })
        && f.object.as_ref().is_none_or(|o| &r.object == o)
        && f.since.is_none_or(|s| r.at >= s)
        && f.until.is_none_or(|u| r.at < u)
}

/// Audit records newest first. The cursor is the sequence number to continue below.
pub fn list_audit(
    store: &impl StateRead,
    filter: &AuditFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<AuditRecord>, QueryError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut to = match cursor {
        Some(c) => {
            let seq: u64 = c
                .parse()
                .map_err(|_| QueryError::InvalidArgument("the cursor is malformed".into()))?;
            keys::seq_key(seq).to_vec()
        }
        None => Vec::new(),
    };
    let mut items = Vec::new();
    let mut scanned = 0usize;
    loop {
        let batch = store.scan_rev(Keyspace::Audit, &keys::seq_key(0), &to, 256)?;
        let exhausted = batch.len() < 256;
        for (_, value) in &batch {
            scanned += 1;
            let record: AuditRecord = decode_record("audit record", value)?;
            let seq = record.seq;
            if audit_matches(&record, filter) {
                items.push(record);
            }
            if items.len() >= limit || scanned >= SCAN_BUDGET {
                let next_cursor = (seq > 1).then(|| seq.to_string());
                return Ok(Page { items, next_cursor });
            }
            to = keys::seq_key(seq).to_vec();
        }
        if exhausted {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
    }
}

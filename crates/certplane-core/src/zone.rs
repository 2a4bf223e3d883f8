//! Zones: the tree of policy folders (`/`, `/prod`, `/prod/payments`) and their stored, versioned
//! policies. The merge and the evaluation live in [`crate::policy`]; this module is the storage side.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::keys::decode_record;
use crate::policy::{self, EffectivePolicy, ZonePolicy};
use crate::store::{Keyspace, StateRead};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneRecord {
    pub path: String,
    pub policy: ZonePolicy,
    /// 1 for the first policy stored, +1 on each change.
    pub version: u64,
    pub updated_at: Timestamp,
    pub updated_by: String,
    pub revision: u64,
}

pub fn get_zone(store: &impl StateRead, path: &str) -> Result<Option<ZoneRecord>, CoreError> {
    store
        .get(Keyspace::Zones, path.as_bytes())?
        .map(|b| decode_record("zone", &b))
        .transpose()
}

/// The stored zones on the path from `/` to `path` (inclusive), root first; absent zones are skipped.
pub fn zone_chain(store: &impl StateRead, path: &str) -> Result<Vec<ZoneRecord>, CoreError> {
    let mut chain = Vec::new();
    for ancestor in policy::ancestors(path) {
        if let Some(record) = get_zone(store, &ancestor)? {
            chain.push(record);
        }
    }
    Ok(chain)
}

/// The merged policy for `path` and the zone versions it was merged from.
pub fn effective_for(
    store: &impl StateRead,
    path: &str,
) -> Result<(EffectivePolicy, Vec<(String, u64)>), CoreError> {
    let chain = zone_chain(store, path)?;
    let versions = chain.iter().map(|z| (z.path.clone(), z.version)).collect();
    let pairs: Vec<(String, ZonePolicy)> = chain.into_iter().map(|z| (z.path, z.policy)).collect();
    Ok((policy::effective(&pairs), versions))
}

pub fn history_key(path: &str, version: u64) -> Vec<u8> {
    let mut key = path.as_bytes().to_vec();
    key.push(crate::keys::SEP);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

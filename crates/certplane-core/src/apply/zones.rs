//! Zone commands: policy changes are validated, checked against ancestors' locks, versioned and kept in
//! a history keyspace so every request can name the policy version it was evaluated against.

use super::{forbidden_unless, EntryContext};
use crate::command::{Applied, Proposal, PutZone, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::keys::encode_record;
use crate::policy::{self, ZonePolicy};
use crate::principal::Permission;
use crate::store::{Keyspace, StateStore};
use crate::zone::{self, ZoneRecord};

pub const ROOT_ZONE: &str = "/";

pub(super) fn create_root_zone(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
) {
    let record = ZoneRecord {
        path: ROOT_ZONE.into(),
        policy: ZonePolicy::default(),
        version: 1,
        updated_at: proposal.proposed_at,
        updated_by: proposal.actor.id.clone(),
        revision: entry.index,
    };
    write_zone(store, &record);
}

fn write_zone(store: &mut impl StateStore, record: &ZoneRecord) {
    let bytes = encode_record(record);
    store.put(Keyspace::Zones, record.path.as_bytes(), &bytes);
    store.put(
        Keyspace::ZoneHistory,
        &zone::history_key(&record.path, record.version),
        &bytes,
    );
}

pub(super) fn put_zone(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    put: &PutZone,
) -> Result<Result<Applied, Rejection>, CoreError> {
    match policy::normalize_zone_path(&put.path) {
        Ok(path) if path == put.path => {}
        Ok(path) => {
            return Ok(Err(Rejection::new(
                RejectCode::InvalidArgument,
                format!("zone path {} is not in canonical form {path}", put.path),
            )))
        }
        Err(e) => {
            return Ok(Err(Rejection::new(
                RejectCode::InvalidArgument,
                e.to_string(),
            )))
        }
    }
    if let Some(rejection) = forbidden_unless(&proposal.actor, Permission::ZoneWrite, &put.path) {
        return Ok(Err(rejection));
    }
    if let Err(e) = put.policy.validate() {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            e.to_string(),
        )));
    }
    let ancestors = policy::ancestors(&put.path);
    // The parent must exist: zones form a tree, and a typo must not silently create a branch.
    if let Some(parent) = ancestors.iter().rev().nth(1) {
        if zone::get_zone(store, parent)?.is_none() {
            return Ok(Err(Rejection::new(
                RejectCode::NotFound,
                format!("the parent zone {parent} does not exist; create it first"),
            )));
        }
    }
    let existing = zone::get_zone(store, &put.path)?;
    let current_version = existing.as_ref().map_or(0, |z| z.version);
    if let Some(expected) = put.expected_version {
        if expected != current_version {
            return Ok(Err(Rejection::new(
                RejectCode::StaleGeneration,
                format!(
                    "zone {} is at version {current_version}, not {expected}; read it again and retry",
                    put.path
                ),
            )));
        }
    }
    // Locks come from the ancestors only: a zone never locks itself out of its own fields.
    let parent_chain: Vec<(String, ZonePolicy)> = zone::zone_chain(store, &put.path)?
        .into_iter()
        .filter(|z| z.path != put.path)
        .map(|z| (z.path, z.policy))
        .collect();
    let parent = policy::effective(&parent_chain);
    let mut with_this = parent_chain.clone();
    with_this.push((put.path.clone(), put.policy.clone()));
    let rules_in_force = policy::effective(&with_this).rules.len();
    if rules_in_force > policy::MAX_EFFECTIVE_RULES {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            format!(
                "zone {} would have {rules_in_force} custom rules in force with its ancestors'; at most {} apply to one zone",
                put.path,
                policy::MAX_EFFECTIVE_RULES
            ),
        )));
    }
    let conflicts = policy::locked_conflicts(&parent, &put.policy);
    if !conflicts.is_empty() {
        let mut rejection = Rejection::new(
            RejectCode::PolicyViolation,
            format!(
                "zone {} sets {} field(s) that an ancestor zone locked",
                put.path,
                conflicts.len()
            ),
        );
        rejection.violations = conflicts;
        return Ok(Err(rejection));
    }
    if let Some(same) = existing.filter(|z| z.policy == put.policy) {
        // Storing the same policy again is not a new version.
        return Ok(Ok(Applied::ZoneStored {
            zone: Box::new(same),
        }));
    }
    let record = ZoneRecord {
        path: put.path.clone(),
        policy: put.policy.clone(),
        version: current_version + 1,
        updated_at: proposal.proposed_at,
        updated_by: proposal.actor.id.clone(),
        revision: entry.index,
    };
    write_zone(store, &record);
    Ok(Ok(Applied::ZoneStored {
        zone: Box::new(record),
    }))
}

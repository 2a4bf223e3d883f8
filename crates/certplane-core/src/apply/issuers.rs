//! Issuer commands: registering a CA and keeping its counters.

use super::{forbidden_unless, EntryContext};
use crate::command::{Applied, Proposal, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::issuer::IssuerRecord;
use crate::keys::{decode_record, encode_record};
use crate::principal::Permission;
use crate::store::{Keyspace, StateRead, StateStore};

pub fn get_issuer(store: &impl StateRead, name: &str) -> Result<Option<IssuerRecord>, CoreError> {
    store
        .get(Keyspace::Issuers, name.as_bytes())?
        .map(|b| decode_record("issuer", &b))
        .transpose()
}

pub(super) fn put_issuer(store: &mut impl StateStore, issuer: &IssuerRecord) {
    store.put(
        Keyspace::Issuers,
        issuer.name.as_bytes(),
        &encode_record(issuer),
    );
}

/// Store a new issuer with its counters reset: the proposer's counters are never trusted.
pub(super) fn store_new_issuer(
    store: &mut impl StateStore,
    entry: EntryContext,
    issuer: &IssuerRecord,
) {
    let mut record = issuer.clone();
    record.issued_count = 0;
    record.revoked_count = 0;
    record.crl_number = 0;
    record.revision = entry.index;
    put_issuer(store, &record);
}

pub(super) fn create_issuer(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    issuer: &IssuerRecord,
) -> Result<Result<Applied, Rejection>, CoreError> {
    // Issuers serve every zone, so only a cluster-wide admin may add one.
    if let Some(rejection) = forbidden_unless(&proposal.actor, Permission::IssuerManage, "/") {
        return Ok(Err(rejection));
    }
    let consistent = match issuer.kind {
        crate::issuer::IssuerKind::Builtin => issuer.key.is_some() && issuer.acm_pca.is_none(),
        crate::issuer::IssuerKind::AcmPca => issuer.key.is_none() && issuer.acm_pca.is_some(),
    };
    if !consistent {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            "a built-in issuer has a sealed key and no ACM PCA settings; an ACM PCA issuer the reverse",
        )));
    }
    if get_issuer(store, &issuer.name)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectCode::Conflict,
            format!("an issuer named {} already exists", issuer.name),
        )));
    }
    store_new_issuer(store, entry, issuer);
    Ok(Ok(Applied::IssuerCreated {
        name: issuer.name.clone(),
    }))
}

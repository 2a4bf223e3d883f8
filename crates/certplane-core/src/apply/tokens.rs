//! Token and client-certificate principal commands: create and revoke, with the rule that the
//! cluster always keeps at least one active admin on `/` (so the root token can be revoked once
//! another admin exists, and never before).

use super::{forbidden_unless, put_token};
use crate::command::{Applied, Proposal, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::keys::decode_record;
use crate::policy::normalize_zone_path;
use crate::principal::{CredentialKind, Permission, Role, TokenRecord};
use crate::store::{Keyspace, StateRead, StateStore};
use crate::time::Timestamp;

pub fn get_token(store: &impl StateRead, id: &str) -> Result<Option<TokenRecord>, CoreError> {
    store
        .get(Keyspace::Tokens, id.as_bytes())?
        .map(|b| decode_record("token", &b))
        .transpose()
}

/// Every stored token, oldest id first (tokens are few: people and automation, not certificates).
pub fn list_tokens(store: &impl StateRead) -> Result<Vec<TokenRecord>, CoreError> {
    const PAGE: usize = 512;
    let mut out = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let page = store.scan(Keyspace::Tokens, &from, &[], PAGE)?;
        let done = page.len() < PAGE;
        for (key, value) in &page {
            out.push(decode_record::<TokenRecord>("token", value)?);
            from = key.clone();
            from.push(0);
        }
        if done {
            return Ok(out);
        }
    }
}

fn is_root_admin(token: &TokenRecord, now: Timestamp) -> bool {
    token.is_active(now)
        && token
            .principal()
            .all_bindings()
            .iter()
            .any(|b| b.role == Role::Admin && b.zone.trim_end_matches('/').is_empty())
}

pub(super) fn create_token(
    store: &mut impl StateStore,
    proposal: &Proposal,
    token: &TokenRecord,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = forbidden_unless(&proposal.actor, Permission::PrincipalManage, "/") {
        return Ok(Err(rejection));
    }
    let invalid = |m: String| Ok(Err(Rejection::new(RejectCode::InvalidArgument, m)));
    if token.name.trim().is_empty() || token.name.len() > 200 {
        return invalid("a principal needs a name of 1 to 200 characters".into());
    }
    if token.bindings.is_empty() && token.roles.is_empty() {
        return invalid("a principal needs at least one role binding".into());
    }
    for binding in &token.bindings {
        if normalize_zone_path(&binding.zone).ok().as_deref() != Some(binding.zone.as_str()) {
            return invalid(format!(
                "binding zone {:?} is not a canonical zone path such as /prod/payments",
                binding.zone
            ));
        }
    }
    if token
        .groups
        .iter()
        .any(|g| g.is_empty() || g.len() > 64 || g.chars().any(|c| c.is_control()))
    {
        return invalid("group names are 1 to 64 printable characters".into());
    }
    if token.kind == CredentialKind::ClientCertificate && token.subject.is_none() {
        return invalid("a client-certificate principal needs its certificate subject".into());
    }
    if get_token(store, &token.id)?.is_some()
        || store
            .get(Keyspace::TokenBySecret, token.secret_sha256.as_bytes())?
            .is_some()
    {
        let what = match token.kind {
            CredentialKind::Token => format!("token id {} is taken", token.id),
            CredentialKind::ClientCertificate => format!(
                "a principal for subject {} already exists",
                token.subject.as_deref().unwrap_or("")
            ),
        };
        return Ok(Err(Rejection::new(RejectCode::Conflict, what)));
    }
    let mut stored = token.clone();
    stored.created_at = proposal.proposed_at;
    stored.created_by = proposal.actor.id.clone();
    stored.revoked_at = None;
    put_token(store, &stored);
    Ok(Ok(Applied::TokenCreated {
        token: Box::new(stored),
    }))
}

pub(super) fn revoke_token(
    store: &mut impl StateStore,
    proposal: &Proposal,
    id: &str,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = forbidden_unless(&proposal.actor, Permission::PrincipalManage, "/") {
        return Ok(Err(rejection));
    }
    let Some(mut token) = get_token(store, id)? else {
        return Ok(Err(Rejection::new(
            RejectCode::NotFound,
            format!("no token or principal with id {id}"),
        )));
    };
    if token.revoked_at.is_some() {
        return Ok(Ok(Applied::TokenRevoked {
            token: Box::new(token),
        }));
    }
    let now = proposal.proposed_at;
    if is_root_admin(&token, now) {
        let others = list_tokens(store)?
            .into_iter()
            .filter(|t| t.id != token.id && is_root_admin(t, now))
            .count();
        if others == 0 {
            return Ok(Err(Rejection::new(
                RejectCode::Conflict,
                format!(
                    "{id} is the last active admin on /: create another admin before revoking it"
                ),
            )));
        }
    }
    token.revoked_at = Some(now);
    put_token(store, &token);
    Ok(Ok(Applied::TokenRevoked {
        token: Box::new(token),
    }))
}

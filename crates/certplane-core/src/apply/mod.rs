//! The deterministic state machine.
//!
//! [`apply`] is a pure function of the stored state and one log entry: every node that applies the same
//! log reaches the same state, the same [`Outcome`], the same audit chain and the same state digest.
//! An invalid command is answered with a [`Rejection`] (and audited); only corruption is a [`CoreError`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{self, AuditDetails, AuditEntry};
use crate::certificate::CertificateRecord;
use crate::command::{Applied, Command, Outcome, Proposal, Rejection};
use crate::error::{CoreError, RejectCode};
use crate::issuer::IssuerRecord;
use crate::keys::{self, decode_record, encode_record, meta};
use crate::principal::{Permission, Principal, TokenRecord};
use crate::store::{Keyspace, StateRead, StateStore};

mod approvals;
mod aws;
mod deployments;
mod inventory;
mod issuers;
mod requests;
mod tokens;
mod webhooks;
mod zones;

pub use approvals::{eligible_for_current_stage, APPROVAL_WORKER};
pub use aws::{revocation_key, track_key, TRACK_PREFIX};
pub use deployments::{deploy_places, destinations_for, Place, DEPLOY_WORKER, RENEWAL_WORKER};
pub use inventory::NOTICE_WORKER;
pub use issuers::get_issuer;
pub use requests::{
    acm_key_algorithm, deadline_value, evaluate_request, get_request, issuance_queue_key,
    request_index_key, APPROVAL_DEADLINE_INDEX, ISSUANCE_WORKER,
};
pub use tokens::{get_token, list_tokens};
pub use webhooks::{get_delivery, get_webhook, list_webhooks, DELIVERY_WORKER};

/// Where the entry sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryContext {
    pub index: u64,
    pub term: u64,
    /// The command's position in a [`Command::Batch`] entry (0 for an entry of one command): keeps ids
    /// derived from the log position distinct when several commands share an index.
    pub part: u32,
}

/// Inventory counts kept in `Meta` so metrics never scan the inventory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub active: u64,
    pub retired: u64,
    #[serde(default)]
    pub revoked: u64,
}

/// The answer kept for an idempotency key, so a retry returns the first answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredAnswer {
    request_hash: Option<String>,
    index: u64,
    result: Result<Applied, Rejection>,
}

pub fn apply(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
) -> Result<Outcome, CoreError> {
    if let Command::Batch { commands } = &proposal.command {
        return apply_batch(store, entry, proposal, commands);
    }
    if let Command::SubmitRequest(submit) = &proposal.command {
        if let Some(presigned) = &submit.presigned {
            return apply_presigned(store, entry, proposal, submit, presigned);
        }
    }
    let idem_key = proposal
        .idempotency_key
        .as_deref()
        .map(|k| keys::index_key(&proposal.actor.id, k));
    if let Some(key) = &idem_key {
        if let Some(bytes) = store.get(Keyspace::Idempotency, key)? {
            let stored: StoredAnswer = decode_record("idempotency answer", &bytes)?;
            if stored.request_hash == proposal.request_hash {
                return Ok(Outcome {
                    index: stored.index,
                    result: stored.result,
                    replayed: true,
                });
            }
            let rejection = Rejection::new(
                RejectCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used for a different request",
            );
            return finish(store, entry, proposal, Err(rejection), None);
        }
    }

    let result = match &proposal.command {
        Command::Initialize {
            root_token,
            builtin_issuer,
        } => initialize(
            store,
            entry,
            proposal,
            root_token,
            builtin_issuer.as_deref(),
        )?,
        _ if !is_initialized(store)? => Err(Rejection::new(
            RejectCode::NotInitialized,
            "the cluster is not initialised: POST /v1/sys/init",
        )),
        Command::ImportCertificate(import) => {
            inventory::import_certificate(store, entry, proposal, import)?
        }
        Command::RetireCertificate { id, .. } => {
            inventory::retire_certificate(store, entry, proposal, id)?
        }
        Command::RevokeCertificate { id, reason } => {
            inventory::revoke_certificate(store, entry, proposal, id, *reason)?
        }
        Command::ExportPrivateKey { id } => inventory::export_private_key(store, proposal, id)?,
        Command::PutZone(put) => zones::put_zone(store, entry, proposal, put)?,
        Command::CreateIssuer(issuer) => issuers::create_issuer(store, entry, proposal, issuer)?,
        Command::SubmitRequest(submit) => requests::submit_request(store, entry, proposal, submit)?,
        Command::CompleteIssuance(done) => {
            requests::complete_issuance(store, entry, proposal, done)?
        }
        Command::FailIssuance {
            request_id,
            generation,
            error,
        } => requests::fail_issuance(store, entry, proposal, request_id, *generation, error)?,
        Command::BeginAwsIssuance {
            request_id,
            generation,
        } => aws::begin_issuance(store, entry, proposal, request_id, *generation)?,
        Command::RecordAwsIssuance {
            request_id,
            generation,
            certificate_arn,
            aws_request_id,
        } => aws::record_issuance(
            store,
            entry,
            proposal,
            request_id,
            *generation,
            certificate_arn,
            aws_request_id.as_deref(),
        )?,
        Command::RecordAwsRevocation {
            certificate_id,
            aws_request_id,
        } => aws::record_revocation(
            store,
            entry,
            proposal,
            certificate_id,
            aws_request_id.as_deref(),
        )?,
        Command::RecordAcmCheck(check) => aws::record_acm_check(store, entry, proposal, check)?,
        Command::CreateToken(token) => tokens::create_token(store, proposal, token)?,
        Command::RevokeToken { id } => tokens::revoke_token(store, proposal, id)?,
        Command::DecideApproval(d) => approvals::decide(store, entry, proposal, d)?,
        Command::ExpireApproval { request_id } => {
            approvals::expire(store, entry, proposal, request_id)?
        }
        Command::CreateWebhook(w) => webhooks::create_webhook(store, proposal, w)?,
        Command::DeleteWebhook { id } => webhooks::delete_webhook(store, proposal, id)?,
        Command::RecordDelivery {
            delivery_id,
            attempt,
            outcome,
        } => webhooks::record_delivery(store, proposal, delivery_id, *attempt, outcome)?,
        Command::NotifyExpiring {
            certificate_id,
            threshold,
        } => inventory::notify_expiring(store, entry, proposal, certificate_id, threshold)?,
        Command::RecordDeployment(rec) => {
            deployments::record_deployment(store, entry, proposal, rec)?
        }
        Command::Probe { drill, seq } => probe(store, proposal, drill, *seq)?,
        Command::Noop => Ok(Applied::Noop),
        // Handled before the idempotency check; unreachable here.
        Command::Batch { .. } => Err(Rejection::new(
            RejectCode::InvalidArgument,
            "a batch cannot be applied as one command",
        )),
    };
    finish(store, entry, proposal, result, idem_key)
}

/// Apply each command of a worker's batch as if it were its own entry at this index: the same checks,
/// its own audit record, digest step and answer. The batch itself leaves no record of its own unless
/// it is refused as a whole (not a system worker, an idempotency key, a nested batch or an init).
fn apply_batch(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    commands: &[Command],
) -> Result<Outcome, CoreError> {
    let refusal = if !proposal.actor.is_system() {
        Some(Rejection::new(
            RejectCode::Forbidden,
            "only the cluster's own workers may propose a batch",
        ))
    } else if proposal.idempotency_key.is_some() {
        Some(Rejection::new(
            RejectCode::InvalidArgument,
            "a batch cannot carry an Idempotency-Key",
        ))
    } else if commands
        .iter()
        .any(|c| matches!(c, Command::Batch { .. } | Command::Initialize { .. }))
    {
        Some(Rejection::new(
            RejectCode::InvalidArgument,
            "a batch cannot hold another batch or the cluster initialisation",
        ))
    } else {
        None
    };
    if let Some(rejection) = refusal {
        return finish(store, entry, proposal, Err(rejection), None);
    }
    let mut results = Vec::with_capacity(commands.len());
    for (part, command) in commands.iter().enumerate() {
        let one = Proposal {
            v: proposal.v,
            proposed_at: proposal.proposed_at,
            actor: proposal.actor.clone(),
            idempotency_key: None,
            request_hash: None,
            command: command.clone(),
        };
        let at = EntryContext {
            part: u32::try_from(part).unwrap_or(u32::MAX),
            ..entry
        };
        results.push(apply(store, at, &one)?.result);
    }
    Ok(Outcome {
        index: entry.index,
        result: Ok(Applied::Batch { results }),
        replayed: false,
    })
}

/// The part a presigned certificate's outcome takes within its entry: beside the submission's own
/// part (0, or its position in a batch, which stays far below this), so ids derived from the log
/// position stay distinct.
pub const PRESIGNED_PART: u32 = 0x8000;

/// A submission carrying the proposer's signed certificate (decision 0015). The submission applies
/// exactly as it would alone: the same checks, policy verdict, audit record and answer. Only when it
/// leaves the request approved at generation 1 with a built-in issuer whose chain the certificate
/// carries does the certificate apply, as the issuance worker's outcome with all of that outcome's
/// checks, audit record and digest step, at part [`PRESIGNED_PART`]. The answer is then the issued
/// request with its certificate ([`Applied::RequestIssued`]). Otherwise the certificate is dropped unrecorded, and an approved request stays in the
/// issuance queue for the worker to sign: nothing anyone received was signed outside the log.
fn apply_presigned(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    submit: &crate::command::SubmitRequest,
    presigned: &crate::command::CompleteIssuance,
) -> Result<Outcome, CoreError> {
    let plain = Proposal {
        v: proposal.v,
        proposed_at: proposal.proposed_at,
        actor: proposal.actor.clone(),
        idempotency_key: proposal.idempotency_key.clone(),
        request_hash: proposal.request_hash.clone(),
        command: Command::SubmitRequest(Box::new(crate::command::SubmitRequest {
            id: submit.id.clone(),
            spec: submit.spec.clone(),
            presigned: None,
        })),
    };
    let submitted = apply(store, entry, &plain)?;
    let request = match &submitted.result {
        Ok(Applied::RequestRecorded { request })
            if !submitted.replayed
                && request.state == crate::request::RequestState::Approved
                && request.id == presigned.request_id
                && request.generation == presigned.generation =>
        {
            request
        }
        _ => return Ok(submitted),
    };
    let Some(issuer) = get_issuer(store, &request.issuer)? else {
        return Ok(submitted);
    };
    if issuer.acm_pca.is_some()
        || issuer.key.is_none()
        || presigned.aws_request_id.is_some()
        || !presigned.chain_pem.ends_with(&issuer.chain_pem)
    {
        return Ok(submitted);
    }
    let outcome = Proposal::new(
        proposal.proposed_at,
        Principal::system(ISSUANCE_WORKER, "issuance worker"),
        Command::CompleteIssuance(Box::new(presigned.clone())),
    );
    let at = EntryContext {
        part: entry.part | PRESIGNED_PART,
        ..entry
    };
    let Ok(Applied::RequestUpdated { request }) = apply(store, at, &outcome)?.result else {
        return Ok(submitted);
    };
    let certificate = match &request.certificate_id {
        Some(id) => get_certificate(store, id)?,
        None => None,
    };
    let result = match certificate {
        Some(certificate) => Applied::RequestIssued {
            request,
            certificate: Box::new(certificate),
        },
        // Not reached: an issued request names the certificate just written.
        None => Applied::RequestUpdated { request },
    };
    Ok(Outcome {
        index: entry.index,
        result: Ok(result),
        replayed: false,
    })
}

/// Audit, remember the idempotent answer and advance the state digest: the same for every command.
fn finish(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    result: Result<Applied, Rejection>,
    idem_key: Option<Vec<u8>>,
) -> Result<Outcome, CoreError> {
    webhooks::emit_events(store, entry, proposal, &result)?;
    let outcome_label = match &result {
        Ok(_) => "ok".to_string(),
        Err(r) => format!("rejected:{}", r.code.as_str()),
    };
    let record = audit::append(
        store,
        AuditEntry {
            log_index: entry.index,
            at: proposal.proposed_at,
            actor: &proposal.actor.id,
            actor_name: &proposal.actor.name,
            action: proposal.command.action(),
            object: proposal.command.object(),
            outcome: outcome_label,
            details: audit_details(proposal, &result),
        },
    )?;
    if let Some(key) = idem_key {
        let stored = StoredAnswer {
            request_hash: proposal.request_hash.clone(),
            index: entry.index,
            result: result.clone(),
        };
        store.put(Keyspace::Idempotency, &key, &encode_record(&stored));
    }
    advance_digest(store, entry, proposal, &record.hash)?;
    Ok(Outcome {
        index: entry.index,
        result,
        replayed: false,
    })
}

/// The accountable facts the audit record carries for this command and its result.
fn audit_details(proposal: &Proposal, result: &Result<Applied, Rejection>) -> AuditDetails {
    let mut d = AuditDetails {
        actor_roles: proposal.actor.role_names(),
        ..AuditDetails::default()
    };
    let request = match result {
        Ok(Applied::RequestRecorded { request }) | Ok(Applied::RequestUpdated { request }) => {
            Some(request.as_ref())
        }
        _ => None,
    };
    if let Some(r) = request {
        d.request_id = Some(r.id.clone());
        d.policy_versions = r.policy_versions.clone();
        d.issuer = Some(r.issuer.clone());
        d.certificate_id = r.certificate_id.clone();
        if let Some(progress) = &r.approval {
            d.approvers = progress.approvers();
        }
        if let Some(aws) = &r.aws {
            d.ca_arn = Some(aws.ca_arn.clone());
            d.arn = aws.certificate_arn.clone();
            d.aws_request_id = aws.aws_request_id.clone();
        }
    }
    match (&proposal.command, result) {
        (Command::CompleteIssuance(done), Ok(_)) => {
            d.serial = Some(done.details.serial.clone());
            if done.aws_request_id.is_some() {
                d.aws_request_id = done.aws_request_id.clone();
            }
        }
        (
            Command::RecordAwsRevocation { aws_request_id, .. },
            Ok(Applied::CertificateRevoked { record }),
        ) => {
            d.certificate_id = Some(record.id.clone());
            d.serial = Some(record.details.serial.clone());
            d.issuer = record.issuance.as_ref().map(|i| i.issuer.clone());
            if let Some(aws) = record.issuance.as_ref().and_then(|i| i.aws.as_ref()) {
                d.ca_arn = Some(aws.ca_arn.clone());
                d.arn = Some(aws.certificate_arn.clone());
            }
            d.aws_request_id = aws_request_id.clone();
        }
        (Command::DecideApproval(decision), _) => {
            d.request_id = Some(decision.request_id.clone());
            d.comment = Some(decision.comment.clone()).filter(|c| !c.is_empty());
        }
        (Command::SubmitRequest(submit), Err(_)) => {
            d.request_id = Some(submit.id.clone());
        }
        (_, Ok(Applied::CertificateRevoked { record })) => {
            d.certificate_id = Some(record.id.clone());
            d.serial = Some(record.details.serial.clone());
            d.issuer = record.issuance.as_ref().map(|i| i.issuer.clone());
            if let Some(aws) = record.issuance.as_ref().and_then(|i| i.aws.as_ref()) {
                d.ca_arn = Some(aws.ca_arn.clone());
                d.arn = Some(aws.certificate_arn.clone());
            }
        }
        (_, Ok(Applied::ExpiryNoticed { record, .. })) => {
            d.certificate_id = Some(record.id.clone());
            d.serial = Some(record.details.serial.clone());
            d.issuer = record.issuance.as_ref().map(|i| i.issuer.clone());
        }
        (Command::RecordDeployment(rec), Ok(Applied::DeploymentRecorded { record, .. })) => {
            d.certificate_id = Some(record.id.clone());
            d.serial = Some(record.details.serial.clone());
            d.arn = record
                .deployments
                .get(rec.destination)
                .and_then(|x| x.arn.clone());
        }
        (_, Ok(Applied::AcmChecked { record, successor })) => {
            let shown = successor.as_deref().unwrap_or(record);
            d.certificate_id = Some(shown.id.clone());
            d.serial = Some(shown.details.serial.clone());
            d.issuer = shown.issuance.as_ref().map(|i| i.issuer.clone());
            if let Some(aws) = shown.issuance.as_ref().and_then(|i| i.aws.as_ref()) {
                d.ca_arn = Some(aws.ca_arn.clone());
                d.arn = Some(aws.certificate_arn.clone());
            }
            if let Command::RecordAcmCheck(check) = &proposal.command {
                d.aws_request_id = check
                    .renewed
                    .as_ref()
                    .and_then(|r| r.aws_request_id.clone());
            }
        }
        (_, Ok(Applied::KeyExportAllowed { id })) => {
            d.certificate_id = Some(id.clone());
        }
        (_, Ok(Applied::ZoneStored { zone })) => {
            d.policy_versions = vec![(zone.path.clone(), zone.version)];
        }
        _ => {}
    }
    d
}

/// `digest_n = SHA-256(digest_{n-1} || index || SHA-256(proposal) || audit hash)`: equal digests on two
/// nodes mean they applied the same commands with the same results, without scanning any state.
fn advance_digest(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    audit_hash: &str,
) -> Result<(), CoreError> {
    let prev = state_digest(store)?;
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(entry.index.to_be_bytes());
    hasher.update(Sha256::digest(proposal.encode()));
    hasher.update(audit_hash.as_bytes());
    let next = hex::encode(hasher.finalize());
    store.put(Keyspace::Meta, meta::STATE_DIGEST, &encode_record(&next));
    Ok(())
}

pub fn state_digest(store: &impl StateRead) -> Result<String, CoreError> {
    match store.get(Keyspace::Meta, meta::STATE_DIGEST)? {
        Some(bytes) => decode_record("state digest", &bytes),
        None => Ok(audit::GENESIS_HASH.to_string()),
    }
}

/// The latest probe of a failover drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub seq: u64,
    pub at: crate::time::Timestamp,
}

fn probe_key(drill: &str) -> Vec<u8> {
    format!("probe/{drill}").into_bytes()
}

pub fn is_drill_id(drill: &str) -> bool {
    !drill.is_empty()
        && drill.len() <= 64
        && drill
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn get_probe(store: &impl StateRead, drill: &str) -> Result<Option<ProbeRecord>, CoreError> {
    store
        .get(Keyspace::Meta, &probe_key(drill))?
        .map(|b| decode_record("probe", &b))
        .transpose()
}

/// One small record per drill, overwritten by each probe (a drill never grows the state).
fn probe(
    store: &mut impl StateStore,
    proposal: &Proposal,
    drill: &str,
    seq: u64,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if let Some(rejection) = forbidden_unless(&proposal.actor, Permission::ClusterManage, "/") {
        return Ok(Err(rejection));
    }
    if !is_drill_id(drill) {
        return Ok(Err(Rejection::new(
            RejectCode::InvalidArgument,
            "a drill id is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_'",
        )));
    }
    let record = ProbeRecord {
        seq,
        at: proposal.proposed_at,
    };
    store.put(Keyspace::Meta, &probe_key(drill), &encode_record(&record));
    Ok(Ok(Applied::Probed {
        drill: drill.to_string(),
        seq,
    }))
}

pub fn is_initialized(store: &impl StateRead) -> Result<bool, CoreError> {
    Ok(store.get(Keyspace::Meta, meta::INITIALIZED)?.is_some())
}

pub fn counts(store: &impl StateRead) -> Result<Counts, CoreError> {
    match store.get(Keyspace::Meta, meta::COUNTS)? {
        Some(bytes) => decode_record("counts", &bytes),
        None => Ok(Counts::default()),
    }
}

pub(crate) fn put_counts(store: &mut impl StateStore, counts: Counts) {
    store.put(Keyspace::Meta, meta::COUNTS, &encode_record(&counts));
}

fn initialize(
    store: &mut impl StateStore,
    entry: EntryContext,
    proposal: &Proposal,
    root: &TokenRecord,
    builtin_issuer: Option<&IssuerRecord>,
) -> Result<Result<Applied, Rejection>, CoreError> {
    if is_initialized(store)? {
        return Ok(Err(Rejection::new(
            RejectCode::AlreadyInitialized,
            "the cluster is already initialised",
        )));
    }
    store.put(
        Keyspace::Meta,
        meta::INITIALIZED,
        &encode_record(&root.created_at),
    );
    put_token(store, root);
    zones::create_root_zone(store, entry, proposal);
    if let Some(issuer) = builtin_issuer {
        issuers::store_new_issuer(store, entry, issuer);
    }
    Ok(Ok(Applied::Initialized {
        root_token_id: root.id.clone(),
    }))
}

pub(crate) fn put_token(store: &mut impl StateStore, token: &TokenRecord) {
    store.put(Keyspace::Tokens, token.id.as_bytes(), &encode_record(token));
    store.put(
        Keyspace::TokenBySecret,
        token.secret_sha256.as_bytes(),
        token.id.as_bytes(),
    );
}

/// Look a bearer secret's hash up: the authentication read path.
pub fn token_by_secret_hash(
    store: &impl StateRead,
    secret_sha256: &str,
) -> Result<Option<TokenRecord>, CoreError> {
    let Some(id) = store.get(Keyspace::TokenBySecret, secret_sha256.as_bytes())? else {
        return Ok(None);
    };
    let Some(bytes) = store.get(Keyspace::Tokens, &id)? else {
        return Err(CoreError::Invariant(
            "token index points at a missing token".into(),
        ));
    };
    decode_record("token", &bytes).map(Some)
}

pub fn get_certificate(
    store: &impl StateRead,
    id: &str,
) -> Result<Option<CertificateRecord>, CoreError> {
    store
        .get(Keyspace::Certificates, id.as_bytes())?
        .map(|b| decode_record("certificate", &b))
        .transpose()
}

pub(crate) fn forbidden_unless(
    actor: &Principal,
    permission: Permission,
    zone: &str,
) -> Option<Rejection> {
    if actor.allows(permission, zone) {
        None
    } else {
        Some(Rejection::new(
            RejectCode::Forbidden,
            format!(
                "principal {} lacks {} on zone {zone}",
                actor.id,
                permission.as_str()
            ),
        ))
    }
}

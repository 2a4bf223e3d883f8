//! The leader's renewal worker: submits the renewal of every issued certificate whose renewal is due
//! (the zone's `renew_before`, spread per certificate), at most `--renewal-rate` per second.
//!
//! ```text
//!  RenewalQueue[due_at ++ id] (intent) ─► SubmitRequest { id: renew-<cert>-<attempt>, renewal_of }
//!      ─► policy and approval as for any request ─► issuance worker ─► successor certificate
//!         (a renewal approved at once is signed here and issued by its own submission)
//!      ─► the successor inherits the destinations and ARNs ─► deploy worker re-imports
//! ```
//!
//! The request id is derived from the certificate and the attempt number, and `apply` accepts only
//! the next attempt of a certificate that is due and not already renewing: after a failover the new
//! leader submits what the old one did not, and never a second copy of what it did.

use std::sync::Arc;
use std::time::Duration;

use certplane_core::apply::{get_certificate, get_request, RENEWAL_WORKER};
use certplane_core::command::SubmitRequest;
use certplane_core::deploy::renewal_request_id;
use certplane_core::keys::{expiry_key, id_of_expiry_key};
use certplane_core::request::RequestSpec;
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{Command, Principal, Timestamp};
use certplane_raft::node::RaftNode;
use tokio::sync::{watch, Semaphore};

use crate::workers::batch::Batcher;
use crate::workers::issuance::SignerCache;
use crate::workers::signing::presign;
use certplane_pki::Kek;

const EVERY: Duration = Duration::from_millis(500);
const BATCH: usize = 4096;
/// Renewal submissions in flight at once; the committer packs them into shared log entries.
const IN_FLIGHT: usize = 256;

pub fn worker_principal() -> Principal {
    Principal::system(RENEWAL_WORKER, "renewal worker")
}

/// Ids of certificates whose renewal is due at or before `now`, oldest first.
pub fn due(view: &impl StateRead, now: Timestamp, limit: usize) -> Vec<String> {
    let end = expiry_key(Timestamp(now.0.saturating_add(1)), "");
    match view.scan(Keyspace::RenewalQueue, b"", &end, limit) {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(key, _)| id_of_expiry_key(&key).map(str::to_string))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "renewal worker cannot read its queue");
            Vec::new()
        }
    }
}

/// The renewal request for certificate `id`: the request that issued it, with the validity capped at
/// the zone's current maximum; the successor keeps the destinations (and ARNs).
pub fn renewal_spec(view: &impl StateRead, id: &str) -> Result<(String, RequestSpec), String> {
    let cert = get_certificate(view, id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no certificate {id}"))?;
    let schedule = cert
        .renewal
        .as_ref()
        .ok_or_else(|| format!("certificate {id} is not scheduled for renewal"))?;
    let link = cert
        .issuance
        .as_ref()
        .ok_or_else(|| format!("certificate {id} was not issued by certplane"))?;
    let original = get_request(view, &link.request_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "the request {} that issued {id} is missing",
                link.request_id
            )
        })?;
    let effective = certplane_core::zone::effective_for(view, &original.spec.zone)
        .map_err(|e| e.to_string())?
        .0;
    let mut spec = original.spec.clone();
    spec.renewal_of = Some(id.to_string());
    spec.destinations = None;
    spec.issuer = Some(original.issuer.clone());
    if spec.validity > effective.max_validity.value {
        spec.validity = effective.max_validity.value;
    }
    Ok((renewal_request_id(id, schedule.attempts + 1), spec))
}

/// What the worker needs to sign renewals ahead (decision 0015): the node's signers and its
/// key-encryption key. Signing takes the node's signing slots ([`SignerCache::run_blocking`]).
#[derive(Clone)]
pub struct Signing {
    pub signers: Arc<SignerCache>,
    pub kek: Option<Arc<Kek>>,
}

async fn submit_one(node: &RaftNode, submissions: &Batcher, signing: &Signing, id: &str) {
    let view = node.view();
    let (request_id, spec) = match renewal_spec(&view, id) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(certificate = %id, error = %e, "cannot build the renewal");
            return;
        }
    };
    // A renewal the zone approves at once is signed here and issued by its own submission.
    let (signers, kek) = (signing.signers.clone(), signing.kek.clone());
    let (ahead_id, ahead_spec) = (request_id.clone(), spec.clone());
    let presigned = signing
        .signers
        .run_blocking(move || {
            presign(
                &view,
                &ahead_id,
                &ahead_spec,
                &signers,
                kek.as_deref(),
                crate::api::now_ms(),
            )
        })
        .await
        .flatten();
    let command = Command::SubmitRequest(Box::new(SubmitRequest {
        id: request_id.clone(),
        spec,
        presigned,
    }));
    match submissions.write(command).await {
        Ok(result) => match result {
            Ok(_) => {
                metrics::counter!("certplane_renewal_started_total").increment(1);
            }
            Err(r) if r.object_id.is_some() => {
                // Recorded, but refused by policy: the certificate waits out a back-off.
                metrics::counter!("certplane_renewal_failed_total", "reason" => "policy")
                    .increment(1);
                tracing::warn!(certificate = %id, request = %request_id, error = %r.message, "renewal refused by policy");
            }
            Err(r) => {
                tracing::debug!(certificate = %id, error = %r.message, "renewal not submitted");
            }
        },
        Err(e) => tracing::debug!(certificate = %id, error = %e, "renewal not submitted; retrying"),
    }
}

pub async fn run(
    node: Arc<RaftNode>,
    signing: Signing,
    rate: f64,
    clock: crate::workers::clock::SchedulerClock,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    // Proposals carry the scheduler's clock, so `apply` agrees with the worker that a renewal is due.
    let stamp = clock.clone();
    let submissions = Batcher::start(node.clone(), worker_principal(), move || {
        Timestamp(stamp.now_ms())
    });
    let spacing = Duration::from_secs_f64(1.0 / rate.max(0.001));
    loop {
        if *shutdown.borrow() {
            return;
        }
        if node.is_leader() {
            let ids = due(&node.view(), Timestamp(clock.now_ms()), BATCH);
            let mut next = tokio::time::Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for id in ids {
                if !node.is_leader() || *shutdown.borrow() {
                    break;
                }
                tokio::time::sleep_until(next).await;
                next += spacing;
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let node = node.clone();
                let submissions = submissions.clone();
                let signing = signing.clone();
                tasks.spawn(async move {
                    submit_one(&node, &submissions, &signing, &id).await;
                    drop(permit);
                });
            }
            while tasks.join_next().await.is_some() {}
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

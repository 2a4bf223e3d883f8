//! The leader's issuance worker: turns approved requests (intents in the issuance queue) into signed
//! certificates (effects) and proposes each result back through Raft (outcomes), DESIGN.md section 3.
//!
//! ```text
//!  SubmitRequest applied ──► IssuanceQueue[id]      (intent, replicated)
//!          leader wakes ──► keygen / CSR key, serial, sign with the built-in CA   (effect, local)
//!                       ──► CompleteIssuance { id, generation, certificate }   (outcome, replicated)
//! ```
//!
//! The built-in CA's signature is only an effect once it is committed: a leader that dies between
//! signing and commit leaves nothing behind that anyone received, and the next leader signs again from
//! the same intent. `apply` accepts one outcome per request generation, so a request never yields two
//! certificates, and the issuer's issued-serial record holds exactly the certificates in the inventory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certplane_core::apply::{get_issuer, get_request, ISSUANCE_WORKER};
use certplane_core::certificate::CertificateDetails;
use certplane_core::certificate::RevocationReason;
use certplane_core::issuer::IssuerRecord;
use certplane_core::request::RequestState;
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{Command, EncryptedKey, Principal, Proposal, Timestamp};
use certplane_pki::Kek;
use certplane_raft::node::RaftNode;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::{watch, Semaphore};

use crate::api::now_ms;

/// AWS calls (issuance steps, revocations, ACM checks) in flight at once.
const CONCURRENCY: usize = 32;
/// Built-in issuances between reading the queue and their committed outcome: bounds the signed
/// certificates held in memory whatever the backlog.
const PENDING: usize = 1024;
/// Queue entries read per pass: bounded work per wake-up whatever the backlog.
const SCAN_LIMIT: usize = 1024;
/// How often the worker looks again without being woken (retries after transient failures).
const IDLE_RECHECK: Duration = Duration::from_millis(500);

pub fn worker_principal() -> Principal {
    Principal::system(ISSUANCE_WORKER, "issuance worker")
}

/// Signers built from issuers' sealed keys, keyed by issuer name and record revision; and the
/// node's signing slots. Every signer on the node shares one cache: the API (signing ahead), the
/// issuance worker and the renewal worker.
pub struct SignerCache {
    signers: Mutex<HashMap<String, (u64, Arc<certplane_pki::ca::Signer>)>>,
    /// Signing is CPU-bound: one blocking task per core at a time, whoever asks; the rest wait.
    cores: Arc<Semaphore>,
}

impl Default for SignerCache {
    fn default() -> Self {
        SignerCache {
            signers: Mutex::new(HashMap::new()),
            cores: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }
}

impl SignerCache {
    /// Run CPU-bound signing `work` on a blocking thread once a core is free; `None` when the
    /// task could not run to the end (the runtime is shutting down).
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _core = self.cores.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }

    pub fn get(
        &self,
        issuer: &IssuerRecord,
        kek: Option<&Kek>,
    ) -> Result<Arc<certplane_pki::ca::Signer>, String> {
        let mut map = self.signers.lock().map_err(|_| "signer cache poisoned")?;
        // The CA key and certificate never change for a name; the cache survives counter updates.
        if let Some((_, signer)) = map.get(&issuer.name) {
            return Ok(signer.clone());
        }
        let kek = kek.ok_or(
            "this node has no key-encryption key (--kek-file), so it cannot use the CA key",
        )?;
        let ca = open_issuer(issuer, kek)?;
        let signer = Arc::new(
            certplane_pki::ca::Signer::new(&ca)
                .map_err(|e| format!("issuer {}: {e}", issuer.name))?,
        );
        map.insert(issuer.name.clone(), (issuer.revision, signer.clone()));
        Ok(signer)
    }
}

pub fn open_issuer(
    issuer: &IssuerRecord,
    kek: &Kek,
) -> Result<certplane_pki::ca::CaCertificate, String> {
    let sealed = to_sealed(
        issuer
            .key
            .as_ref()
            .ok_or_else(|| format!("issuer {} holds no key in certplane", issuer.name))?,
    );
    let key = certplane_pki::open(kek, &sealed, IssuerRecord::key_aad(&issuer.name).as_bytes())
        .map_err(|e| format!("cannot open the key of issuer {}: {e}", issuer.name))?;
    certplane_pki::ca::CaCertificate::from_parts(&issuer.ca_cert_pem, key)
        .map_err(|e| format!("issuer {}: {e}", issuer.name))
}

pub fn to_sealed(key: &EncryptedKey) -> certplane_pki::SealedKey {
    certplane_pki::SealedKey {
        v: key.v,
        algorithm: key.algorithm.clone(),
        kek_id: key.kek_id.clone(),
        wrapped_data_key: key.wrapped_data_key.clone(),
        sealed_key: key.sealed_key.clone(),
    }
}

pub fn from_sealed(sealed: certplane_pki::SealedKey) -> EncryptedKey {
    EncryptedKey {
        v: sealed.v,
        algorithm: sealed.algorithm,
        kek_id: sealed.kek_id,
        wrapped_data_key: sealed.wrapped_data_key,
        sealed_key: sealed.sealed_key,
    }
}

/// The CRL reason as the pki crate writes it.
pub fn pki_reason(reason: RevocationReason) -> certplane_pki::RevocationReason {
    use certplane_pki::RevocationReason as P;
    match reason {
        RevocationReason::Unspecified => P::Unspecified,
        RevocationReason::KeyCompromise => P::KeyCompromise,
        RevocationReason::CaCompromise => P::CaCompromise,
        RevocationReason::AffiliationChanged => P::AffiliationChanged,
        RevocationReason::Superseded => P::Superseded,
        RevocationReason::CessationOfOperation => P::CessationOfOperation,
        RevocationReason::CertificateHold => P::CertificateHold,
        RevocationReason::PrivilegeWithdrawn => P::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => P::AaCompromise,
    }
}

pub fn details_of(info: certplane_pki::CertificateInfo) -> CertificateDetails {
    CertificateDetails {
        fingerprint_sha256: info.fingerprint_sha256,
        subject: info.subject,
        common_name: info.common_name,
        issuer: info.issuer,
        serial: info.serial,
        sans: info.sans,
        not_before: Timestamp(info.not_before_ms),
        not_after: Timestamp(info.not_after_ms),
        key_algorithm: info.key_algorithm,
        key_bits: info.key_bits,
        signature_algorithm: info.signature_algorithm,
        is_ca: info.is_ca,
        self_signed: info.self_signed,
    }
}

/// A permit of `limit`, or why there is none (the semaphore closed).
async fn take_permit(limit: &Arc<Semaphore>) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
    limit
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| e.to_string())
}

/// Where the worker's next pass over the queue starts.
struct QueueCursor {
    /// The queue key after the last one seen; empty means from the start.
    next: Vec<u8>,
    /// The term the cursor belongs to: a new leadership starts from the start of the queue.
    term: u64,
    /// An issuance failed and must be retried: the next full pass picks it up again.
    retry: bool,
    last_full_pass: std::time::Instant,
}

pub struct IssuanceWorker {
    node: Arc<RaftNode>,
    kek: Option<Arc<Kek>>,
    signers: Arc<SignerCache>,
    pca: Arc<super::pca::PcaClients>,
    acm_check_interval_ms: u64,
    /// The node's shutdown signal, set when `run` starts: per-request tasks (some wait on AWS for
    /// many seconds) end with the node instead of keeping it open.
    stop: Mutex<Option<watch::Receiver<bool>>>,
    in_flight: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    /// Outcomes signed at the same time share one log entry.
    outcomes: super::batch::Batcher,
    cursor: Mutex<QueueCursor>,
}

/// A full pass (from the start of the queue) at least this often, and at most this often for retries.
const FULL_PASS_EVERY: Duration = Duration::from_secs(5);
const RETRY_AFTER: Duration = Duration::from_millis(500);

impl IssuanceWorker {
    pub fn new(
        node: Arc<RaftNode>,
        kek: Option<Arc<Kek>>,
        signers: Arc<SignerCache>,
        aws_endpoint_url: Option<String>,
        acm_check_interval_ms: u64,
    ) -> Arc<Self> {
        let outcomes =
            super::batch::Batcher::start(node.clone(), worker_principal(), || Timestamp(now_ms()));
        Arc::new(IssuanceWorker {
            node,
            kek,
            signers,
            pca: Arc::new(super::pca::PcaClients::new(aws_endpoint_url)),
            acm_check_interval_ms,
            stop: Mutex::new(None),
            in_flight: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            pending: Arc::new(Semaphore::new(PENDING)),
            outcomes,
            cursor: Mutex::new(QueueCursor {
                next: Vec::new(),
                term: 0,
                retry: false,
                last_full_pass: std::time::Instant::now(),
            }),
        })
    }

    /// Run `task` unless the node shuts down first (then `None`: the task is dropped).
    async fn unless_stopped<F: std::future::Future>(&self, task: F) -> Option<F::Output> {
        let stop = self.stop.lock().ok().and_then(|s| s.clone());
        match stop {
            None => Some(task.await),
            Some(mut stop) => tokio::select! {
                out = task => Some(out),
                _ = stop.wait_for(|s| *s) => None,
            },
        }
    }

    /// Run until `shutdown` turns true. Only the leader does work; followers wait.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Ok(mut stop) = self.stop.lock() {
            *stop = Some(shutdown.clone());
        }
        let mut applied = self.node.sm.subscribe_applied();
        let mut metrics = self.node.raft.metrics();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.node.is_leader() {
                let term = metrics.borrow_watched().current_term;
                self.clone().revocations();
                self.clone().acm_checks();
                if self.clone().work(term) {
                    // A full batch: there is more queued; look again at once.
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = applied.changed() => {}
                _ = metrics.changed() => {}
                _ = tokio::time::sleep(IDLE_RECHECK) => {}
            }
        }
    }

    /// One pass over the queue from the cursor: start a task for every queued request not already
    /// being signed. Queue keys grow with the log index, so a pass reads only intents added since the
    /// previous one, never the (deleted) entries behind it; a new term, a failure to retry, or a
    /// periodic full pass starts from the beginning. Returns true when the batch was full.
    fn work(self: Arc<Self>, term: u64) -> bool {
        let from = {
            let Ok(mut cursor) = self.cursor.lock() else {
                return false;
            };
            let since = cursor.last_full_pass.elapsed();
            if cursor.term != term
                || since >= FULL_PASS_EVERY
                || (cursor.retry && since >= RETRY_AFTER)
            {
                cursor.next.clear();
                cursor.term = term;
                cursor.retry = false;
                cursor.last_full_pass = std::time::Instant::now();
            }
            cursor.next.clone()
        };
        let view = self.node.view();
        let queued = match view.scan(Keyspace::IssuanceQueue, &from, b"", SCAN_LIMIT) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the issuance queue");
                return false;
            }
        };
        let full = queued.len() >= SCAN_LIMIT;
        if let Some((last, _)) = queued.last() {
            if let Ok(mut cursor) = self.cursor.lock() {
                cursor.next = last.clone();
                cursor.next.push(0);
            }
        }
        for (_, value) in queued {
            let Ok(id) = String::from_utf8(value) else {
                continue;
            };
            {
                let Ok(mut in_flight) = self.in_flight.lock() else {
                    return false;
                };
                if !in_flight.insert(id.clone()) {
                    continue;
                }
            }
            let worker = self.clone();
            tokio::spawn(async move {
                let result = worker.unless_stopped(worker.issue_one(&id)).await;
                if let Some(Err(e)) = result {
                    tracing::debug!(request = %id, error = %e, "issuance will be retried");
                    if let Ok(mut cursor) = worker.cursor.lock() {
                        cursor.retry = true;
                    }
                }
                if let Ok(mut in_flight) = worker.in_flight.lock() {
                    in_flight.remove(&id);
                }
            });
        }
        full
    }

    /// Start a task for every revocation that still has to reach AWS Private CA.
    fn revocations(self: Arc<Self>) {
        let view = self.node.view();
        let prefix = certplane_core::keys::index_key("revoke", "");
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let queued = match view.scan(Keyspace::AwsQueue, &prefix, &end, SCAN_LIMIT) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the AWS revocation queue");
                return;
            }
        };
        for (key, _) in queued {
            let Ok(id) = String::from_utf8(key[prefix.len()..].to_vec()) else {
                continue;
            };
            self.clone().spawn_once(
                format!("revoke/{id}"),
                "revocation",
                id,
                |w, id| async move { w.revoke_one(&id).await },
            );
        }
    }

    /// Run `task` for certificate `id` unless a task holding `slot` is still running. A failure is logged and
    /// keeps the slot for `RETRY_AFTER`, so the pass after that tries again; the task ends with the
    /// node.
    fn spawn_once<F, Fut>(self: Arc<Self>, slot: String, what: &'static str, id: String, task: F)
    where
        F: FnOnce(Arc<Self>, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        {
            let Ok(mut in_flight) = self.in_flight.lock() else {
                return;
            };
            if !in_flight.insert(slot.clone()) {
                return;
            }
        }
        tokio::spawn(async move {
            let worker = self.clone();
            let attempt = async {
                if let Err(e) = task(worker, id.clone()).await {
                    tracing::warn!(certificate = %id, error = %e, "the {what} will be retried");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            };
            self.unless_stopped(attempt).await;
            if let Ok(mut in_flight) = self.in_flight.lock() {
                in_flight.remove(&slot);
            }
        });
    }

    /// Start a check for every acm-native certificate whose next check is due.
    fn acm_checks(self: Arc<Self>) {
        let view = self.node.view();
        let from = certplane_core::apply::TRACK_PREFIX.to_vec();
        let until = certplane_core::apply::track_key(Timestamp(now_ms() + 1), "");
        let due = match view.scan(Keyspace::AwsQueue, &from, &until, SCAN_LIMIT) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ACM check queue");
                return;
            }
        };
        for (key, _) in due {
            let Some(id) = key
                .get(from.len() + 8..)
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
            else {
                continue;
            };
            self.clone()
                .spawn_once(format!("check/{id}"), "ACM check", id, |w, id| async move {
                    w.check_one(&id).await
                });
        }
    }

    async fn check_one(&self, id: &str) -> Result<(), String> {
        let _permit = take_permit(&self.permits).await?;
        let view = self.node.view();
        let Some(record) =
            certplane_core::apply::get_certificate(&view, id).map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let Some(link) = &record.issuance else {
            return Ok(());
        };
        let Some(issuer) = get_issuer(&view, &link.issuer).map_err(|e| e.to_string())? else {
            return Err(format!("issuer {} does not exist", link.issuer));
        };
        let next = now_ms().saturating_add(self.acm_check_interval_ms as i64);
        let Some(command) = super::pca::check_native(&self.pca, &record, &issuer, next).await?
        else {
            return Ok(());
        };
        let renewed = matches!(&command, Command::RecordAcmCheck(c) if c.renewed.is_some());
        let proposal = Proposal::new(Timestamp(now_ms()), worker_principal(), command);
        let outcome = self.node.write(proposal).await.map_err(|e| e.to_string())?;
        match outcome.result {
            Ok(_) => {
                if renewed {
                    metrics::counter!("certplane_acm_native_renewals_total").increment(1);
                }
                Ok(())
            }
            Err(r) => Err(format!("ACM check not applied: {}", r.message)),
        }
    }

    async fn revoke_one(&self, id: &str) -> Result<(), String> {
        let _permit = take_permit(&self.permits).await?;
        let view = self.node.view();
        let Some(record) =
            certplane_core::apply::get_certificate(&view, id).map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let Some(link) = &record.issuance else {
            return Ok(());
        };
        let Some(issuer) = get_issuer(&view, &link.issuer).map_err(|e| e.to_string())? else {
            return Err(format!("issuer {} does not exist", link.issuer));
        };
        let Some(command) = super::pca::revoke(&self.pca, &record, &issuer).await? else {
            return Ok(());
        };
        let proposal = Proposal::new(Timestamp(now_ms()), worker_principal(), command);
        let outcome = self.node.write(proposal).await.map_err(|e| e.to_string())?;
        match outcome.result {
            Ok(_) => {
                metrics::counter!("certplane_acmpca_revocations_total").increment(1);
                Ok(())
            }
            Err(r) => Err(format!("revocation outcome not applied: {}", r.message)),
        }
    }

    /// Drive an AWS issuance step by step until it waits on AWS or reaches a final state.
    async fn aws_issue(&self, id: &str) -> Result<(), String> {
        // Begin, call, record, fetch: at most four steps before the request is final.
        for _ in 0..4 {
            let view = self.node.view();
            let Some(request) = get_request(&view, id).map_err(|e| e.to_string())? else {
                return Ok(());
            };
            if !matches!(
                request.state,
                RequestState::Approved | RequestState::Issuing
            ) {
                return Ok(());
            }
            let Some(issuer) = get_issuer(&view, &request.issuer).map_err(|e| e.to_string())?
            else {
                return Err(format!("issuer {} does not exist", request.issuer));
            };
            let command =
                match super::pca::issuance_step(&self.pca, &request, &issuer, now_ms()).await {
                    super::pca::Step::Propose(c) => c,
                    super::pca::Step::Later(why) => return Err(why),
                };
            let completes = matches!(command, Command::CompleteIssuance(_));
            let proposal = Proposal::new(Timestamp(now_ms()), worker_principal(), command);
            let outcome = self.node.write(proposal).await.map_err(|e| e.to_string())?;
            if let Err(r) = outcome.result {
                return Err(format!("AWS issuance step not applied: {}", r.message));
            }
            if completes {
                metrics::counter!("certplane_issuance_completed_total").increment(1);
            }
        }
        Ok(())
    }

    async fn issue_one(&self, id: &str) -> Result<(), String> {
        let _pending = take_permit(&self.pending).await?;
        let view = self.node.view();
        let Some(request) = get_request(&view, id).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let issuer = get_issuer(&view, &request.issuer).map_err(|e| e.to_string())?;
        if issuer.as_ref().is_some_and(|i| i.acm_pca.is_some()) {
            let _permit = take_permit(&self.permits).await?;
            return self.aws_issue(id).await;
        }
        if request.state != RequestState::Approved {
            return Ok(());
        }
        let command = match issuer {
            None => Command::FailIssuance {
                request_id: request.id.clone(),
                generation: request.generation,
                error: format!("issuer {} does not exist", request.issuer),
            },
            Some(issuer) => {
                let signers = self.signers.clone();
                let kek = self.kek.clone();
                let req = request.clone();
                let signed = self
                    .signers
                    .run_blocking(move || {
                        super::signing::sign(
                            &req.id,
                            req.generation,
                            &req.spec,
                            &issuer,
                            &signers,
                            kek.as_deref(),
                            now_ms(),
                        )
                    })
                    .await
                    .ok_or("signing was interrupted")?;
                match signed {
                    Ok(done) => Command::CompleteIssuance(done),
                    Err(error) => {
                        metrics::counter!("certplane_issuance_failed_total").increment(1);
                        Command::FailIssuance {
                            request_id: request.id.clone(),
                            generation: request.generation,
                            error,
                        }
                    }
                }
            }
        };
        let started = std::time::Instant::now();
        let result = self.outcomes.write(command).await?;
        metrics::histogram!("certplane_issuance_outcome_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => {
                metrics::counter!("certplane_issuance_completed_total").increment(1);
                Ok(())
            }
            // Stale: another leader's outcome landed first. Conflict: a serial collision, sign again.
            Err(r) => Err(format!("outcome not applied: {}", r.message)),
        }
    }
}

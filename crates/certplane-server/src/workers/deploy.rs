//! The leader's deploy worker: imports certificates into ACM (Pattern 1) and records each outcome.
//!
//! ```text
//!  DeploymentQueue[next_attempt ++ cert ++ i] (intent)
//!    ─► zone maintenance window open? ─► rate limit per account and region (ImportCertificate quota)
//!    ─► no ARN yet: RecordDeployment(Importing), or, if an earlier first import may have happened,
//!       look for the certificate tagged certplane:deployment=<lineage>.<i> and adopt it
//!    ─► ImportCertificate (to the ARN) ─► DescribeCertificate: serial and NotAfter ─► tags  (effect)
//!    ─► RecordDeployment(Deployed | Failed { retry_at })                             (outcome)
//! ```
//!
//! Throttling and transient errors are retried within the attempt with a growing pause, and slow the
//! rate limiter down; an attempt that still fails, or that does not verify, is recorded failed with a
//! retry time and is tried again then. A re-import to the recorded ARN is idempotent, so a leader
//! that dies before its outcome commits leaves nothing the next leader's attempt does not repair.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certplane_aws::acm::{
    AcmDestination, AcmDriver, AcmError, AcmTarget, Deployment as AcmDeployment,
};
use certplane_core::apply::{get_certificate, DEPLOY_WORKER};
use certplane_core::command::RecordDeployment;
use certplane_core::deploy::{
    backoff_ms, windows_open, DeploymentOutcome, DeploymentState, DEPLOYMENT_TAG,
};
use certplane_core::keys::expiry_key;
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::{CertificateRecord, Command, Principal, Proposal, Timestamp};
use certplane_pki::Kek;
use certplane_raft::node::RaftNode;
use tokio::sync::{watch, Semaphore};

use crate::api::now_ms;
use crate::config::DeploySettings;

const EVERY: Duration = Duration::from_millis(250);
const BATCH: usize = 512;
/// Tries within one attempt for throttling and transient errors before the attempt is recorded failed.
const TRIES: u32 = 12;

pub fn worker_principal() -> Principal {
    Principal::system(DEPLOY_WORKER, "deploy worker")
}

/// (certificate id, destination index, queued time) of each deployment-queue row.
pub fn parse_queue(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, usize, Timestamp)> {
    rows.into_iter()
        .filter_map(|(key, _)| {
            let at = u64::from_be_bytes(key.get(..8)?.try_into().ok()?) ^ (1 << 63);
            let rest = std::str::from_utf8(key.get(8..)?).ok()?;
            let (id, index) = rest.split_once('\0')?;
            Some((id.to_string(), index.parse().ok()?, Timestamp(at as i64)))
        })
        .collect()
}

/// Every deployment due at or before `now`, oldest first.
pub fn due(view: &impl StateRead, now: Timestamp, limit: usize) -> Vec<(String, usize, Timestamp)> {
    let end = expiry_key(Timestamp(now.0.saturating_add(1)), "");
    match view.scan(Keyspace::DeploymentQueue, b"", &end, limit) {
        Ok(rows) => parse_queue(rows),
        Err(e) => {
            tracing::warn!(error = %e, "deploy worker cannot read its queue");
            Vec::new()
        }
    }
}

/// ImportCertificate calls spaced to the configured rate, per account and region: each caller gets
/// the next free slot. A throttled call pushes the next slot back.
#[derive(Default)]
pub struct RateLimiter {
    next: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl RateLimiter {
    pub async fn acquire(&self, key: &str, interval: Duration) {
        let slot = {
            let Ok(mut next) = self.next.lock() else {
                return;
            };
            let now = tokio::time::Instant::now();
            let entry = next.entry(key.to_string()).or_insert(now);
            let slot = (*entry).max(now);
            *entry = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    pub fn slow_down(&self, key: &str, pause: Duration) {
        if let Ok(mut next) = self.next.lock() {
            let until = tokio::time::Instant::now() + pause;
            let entry = next.entry(key.to_string()).or_insert(until);
            *entry = (*entry).max(until);
        }
    }
}

pub struct DeployWorker {
    node: Arc<RaftNode>,
    kek: Option<Arc<Kek>>,
    settings: DeploySettings,
    drivers: tokio::sync::Mutex<HashMap<AcmTarget, AcmDriver>>,
    limiter: RateLimiter,
    in_flight: Mutex<HashSet<(String, usize)>>,
    permits: Arc<Semaphore>,
}

/// The leaf and the rest of the chain, from certplane's `chain_pem` (leaf first).
fn split_chain(chain_pem: &str) -> (String, String) {
    const END: &str = "-----END CERTIFICATE-----";
    match chain_pem.find(END) {
        Some(pos) => {
            let cut = pos + END.len();
            (
                format!("{}\n", chain_pem[..cut].trim()),
                chain_pem[cut..].trim().to_string(),
            )
        }
        None => (chain_pem.to_string(), String::new()),
    }
}

enum Attempt {
    Deployed {
        arn: String,
        observed_serial: String,
        tags_restored: bool,
    },
    Failed {
        error: String,
        arn: Option<String>,
    },
    /// No longer the leader, or the deployment changed under us: record nothing.
    Abandoned,
}

impl DeployWorker {
    pub fn new(node: Arc<RaftNode>, kek: Option<Arc<Kek>>, settings: DeploySettings) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(settings.concurrency));
        Arc::new(DeployWorker {
            node,
            kek,
            settings,
            drivers: tokio::sync::Mutex::new(HashMap::new()),
            limiter: RateLimiter::default(),
            in_flight: Mutex::new(HashSet::new()),
            permits,
        })
    }

    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.node.is_leader() {
                let now = Timestamp(now_ms());
                for (id, index, queued_for) in due(&self.node.view(), now, BATCH) {
                    {
                        let Ok(mut in_flight) = self.in_flight.lock() else {
                            return;
                        };
                        if !in_flight.insert((id.clone(), index)) {
                            continue;
                        }
                    }
                    let worker = self.clone();
                    tokio::spawn(async move {
                        worker.deploy_one(&id, index, queued_for).await;
                        if let Ok(mut in_flight) = worker.in_flight.lock() {
                            in_flight.remove(&(id, index));
                        }
                    });
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    /// Back-off before attempt `attempt + 1`: the core schedule, scaled to `--deploy-retry-base-ms`.
    fn retry_after_ms(&self, attempt: u32) -> i64 {
        let scaled = backoff_ms(attempt) / 30_000 * self.settings.retry_base_ms as i64;
        scaled.clamp(1, 3_600_000)
    }

    async fn driver(&self, region: &str, role_arn: Option<&str>) -> AcmDriver {
        let target = AcmTarget {
            region: region.to_string(),
            role_arn: role_arn.map(str::to_string),
            endpoint_url: self.settings.aws_endpoint_url.clone(),
        };
        let mut drivers = self.drivers.lock().await;
        if let Some(d) = drivers.get(&target) {
            return d.clone();
        }
        let d = AcmDriver::connect(&target).await;
        drivers.insert(target, d.clone());
        d
    }

    async fn propose(&self, rec: RecordDeployment) -> Result<CertificateRecord, String> {
        let proposal = Proposal::new(
            Timestamp(now_ms()),
            worker_principal(),
            Command::RecordDeployment(Box::new(rec)),
        );
        let outcome = self.node.write(proposal).await.map_err(|e| e.to_string())?;
        match outcome.result {
            Ok(certplane_core::Applied::DeploymentRecorded { record, .. }) => Ok(*record),
            Ok(other) => Err(format!("unexpected outcome {other:?}")),
            Err(r) => Err(r.message),
        }
    }

    async fn deploy_one(&self, id: &str, index: usize, queued_for: Timestamp) {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let view = self.node.view();
        let Ok(Some(cert)) = get_certificate(&view, id) else {
            return;
        };
        let Some(d) = cert.deployments.get(index).cloned() else {
            return;
        };
        if !d.state.is_queued(cert.is_live()) || d.next_attempt_at != queued_for {
            return;
        }
        if d.state == DeploymentState::Deleting {
            self.delete_one(&cert, index).await;
            return;
        }
        let windows = certplane_core::zone::effective_for(&view, &cert.zone)
            .map(|(p, _)| p.deploy_windows.value)
            .unwrap_or_default();
        if !windows_open(&windows, Timestamp(now_ms())) {
            return;
        }
        let started = std::time::Instant::now();
        let mut attempt = d.attempts + 1;
        let result = self.attempt(&cert, index, &mut attempt).await;
        let outcome = match result {
            Attempt::Abandoned => return,
            Attempt::Deployed {
                arn,
                observed_serial,
                tags_restored,
            } => {
                metrics::counter!("certplane_deployments_total", "outcome" => "deployed")
                    .increment(1);
                metrics::histogram!("certplane_deployment_lag_seconds")
                    .record(((now_ms() - cert.created_at.0).max(0) as f64) / 1000.0);
                DeploymentOutcome::Deployed {
                    arn,
                    observed_serial,
                    tags_restored,
                }
            }
            Attempt::Failed { error, arn } => {
                metrics::counter!(
                    "certplane_deployment_failed_total",
                    "destination" => format!("acm:{}", d.destination.region)
                )
                .increment(1);
                tracing::warn!(certificate = %id, destination = index, error = %error, "deployment failed; will retry");
                DeploymentOutcome::Failed {
                    error,
                    arn,
                    retry_at: Timestamp(now_ms() + self.retry_after_ms(attempt)),
                }
            }
        };
        metrics::histogram!("certplane_deployment_attempt_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = self
            .propose(RecordDeployment {
                certificate_id: id.to_string(),
                destination: index,
                attempt,
                outcome,
            })
            .await
        {
            tracing::debug!(certificate = %id, error = %e, "deployment outcome not applied");
        }
    }

    /// A retired certificate in a zone with `acm_cleanup`: delete its ACM certificate once ACM
    /// says nothing uses it; while something does, try again later.
    async fn delete_one(&self, cert: &CertificateRecord, index: usize) {
        let d = &cert.deployments[index];
        let Some(arn) = d.arn.clone() else {
            return;
        };
        if !self.node.is_leader() {
            return;
        }
        let driver = self
            .driver(&d.destination.region, d.destination.role_arn.as_deref())
            .await;
        let limit_key = format!("cleanup|{}", d.destination.region);
        let outcome = match self
            .retrying(&limit_key, false, true, || driver.delete_if_unused(&arn))
            .await
        {
            Ok(Ok(())) => DeploymentOutcome::Deleted,
            Ok(Err(users)) => DeploymentOutcome::Failed {
                error: format!("{arn} is still in use by {}", users.join(", ")),
                arn: None,
                retry_at: Timestamp(now_ms() + self.retry_after_ms(d.attempts + 1)),
            },
            Err(e) => DeploymentOutcome::Failed {
                error: e.to_string(),
                arn: None,
                retry_at: Timestamp(now_ms() + self.retry_after_ms(d.attempts + 1)),
            },
        };
        if let Err(e) = self
            .propose(RecordDeployment {
                certificate_id: cert.id.clone(),
                destination: index,
                attempt: d.attempts + 1,
                outcome,
            })
            .await
        {
            tracing::debug!(certificate = %cert.id, error = %e, "cleanup outcome not applied");
        }
    }

    /// One attempt: returns what to record. `attempt` is advanced when an `Importing` outcome is
    /// recorded first.
    async fn attempt(&self, cert: &CertificateRecord, index: usize, attempt: &mut u32) -> Attempt {
        let d = &cert.deployments[index];
        let Some(kek) = self.kek.as_deref() else {
            return Attempt::Failed {
                error: "this node has no key-encryption key (--kek-file) to open the private key"
                    .into(),
                arn: d.arn.clone(),
            };
        };
        let Some(sealed) = &cert.private_key else {
            return Attempt::Failed {
                error: "certplane holds no private key for this certificate; ACM import needs it"
                    .into(),
                arn: d.arn.clone(),
            };
        };
        let key_pem = match certplane_pki::open(
            kek,
            &crate::workers::issuance::to_sealed(sealed),
            cert.details.fingerprint_sha256.as_bytes(),
        )
        .map_err(|e| e.to_string())
        .and_then(|der| {
            certplane_pki::inspect::private_key_from_der(&der)
                .map(|k| k.to_pem().to_string())
                .map_err(|e| e.to_string())
        }) {
            Ok(pem) => pem,
            Err(e) => {
                return Attempt::Failed {
                    error: format!("cannot open the private key: {e}"),
                    arn: d.arn.clone(),
                }
            }
        };
        let (leaf, chain) = split_chain(&cert.chain_pem);
        let driver = self
            .driver(&d.destination.region, d.destination.role_arn.as_deref())
            .await;
        let limit_key = format!(
            "{}|{}",
            d.destination
                .account()
                .or_else(|| d.destination.role_arn.clone())
                .unwrap_or_else(|| "default".into()),
            d.destination.region
        );
        let mut tags = d.destination.tags.clone();
        tags.insert(DEPLOYMENT_TAG.to_string(), d.tag_value(index));
        let destination = AcmDestination {
            region: d.destination.region.clone(),
            tags,
        };
        let mut arn = d.arn.clone();
        if arn.is_none() {
            if d.import_started {
                // An earlier first import may have created the certificate: find it by its tag.
                let tag_value = d.tag_value(index);
                match self
                    .retrying(&limit_key, false, true, || {
                        driver.find_by_tag(DEPLOYMENT_TAG, &tag_value)
                    })
                    .await
                {
                    Ok(found) => arn = found,
                    Err(e) => {
                        return Attempt::Failed {
                            error: e.to_string(),
                            arn: None,
                        }
                    }
                }
            }
            if arn.is_none() && !d.import_started {
                if !self.node.is_leader() {
                    return Attempt::Abandoned;
                }
                if self
                    .propose(RecordDeployment {
                        certificate_id: cert.id.clone(),
                        destination: index,
                        attempt: *attempt,
                        outcome: DeploymentOutcome::Importing,
                    })
                    .await
                    .is_err()
                {
                    return Attempt::Abandoned;
                }
                *attempt += 1;
            }
        }
        let deployment = AcmDeployment {
            certificate_pem: &leaf,
            private_key_pem: &key_pem,
            chain_pem: &chain,
            serial_hex: &cert.details.serial,
            not_after_ms: cert.details.not_after.0,
            arn: arn.as_deref(),
        };
        // A first import is retried only when throttled (ACM refused it, so nothing was created);
        // any other failure may have created the certificate, and the next attempt looks for it by
        // its tag instead. A re-import to a known ARN is idempotent and is retried freely.
        let first = arn.is_none();
        let arn = match self
            .retrying(&limit_key, true, !first, || {
                driver.import(&destination, &deployment)
            })
            .await
        {
            Ok(arn) => arn,
            Err(AcmError::NotVerified { arn: got, reason }) => {
                return Attempt::Failed {
                    error: format!("the import did not verify: {reason}"),
                    arn: Some(got).filter(|a| !a.is_empty()).or(arn),
                }
            }
            Err(e) => {
                return Attempt::Failed {
                    error: e.to_string(),
                    arn,
                }
            }
        };
        match self
            .retrying(&limit_key, false, true, || {
                driver.check(&arn, &destination, &deployment)
            })
            .await
        {
            Ok(done) => Attempt::Deployed {
                arn: done.arn,
                observed_serial: done.observed_serial,
                tags_restored: done.tags_restored,
            },
            Err(e) => Attempt::Failed {
                error: e.to_string(),
                arn: Some(arn),
            },
        }
    }

    /// Run `call` until it succeeds, is refused, or has failed [`TRIES`] times. Throttling is
    /// always retried; other transient errors only with `transient`. With `quota`, each try first
    /// takes an ImportCertificate slot, and throttling pushes the next slot back.
    async fn retrying<T, F, Fut>(
        &self,
        limit_key: &str,
        quota: bool,
        transient: bool,
        mut call: F,
    ) -> Result<T, AcmError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AcmError>>,
    {
        // Spaced 3 % wider than the configured rate: the service's own token bucket and ours never
        // tick in step, and a call that arrives a few milliseconds early is throttled.
        let interval = Duration::from_secs_f64(1.03 / self.settings.acm_import_rate);
        let mut pause = Duration::from_millis(200);
        let mut tries = 0;
        loop {
            tries += 1;
            if quota {
                self.limiter.acquire(limit_key, interval).await;
            }
            match call().await {
                Ok(v) => return Ok(v),
                Err(e)
                    if tries < TRIES
                        && (e.is_throttle()
                            || (transient && matches!(e, AcmError::Retryable { .. }))) =>
                {
                    // Only ImportCertificate draws on the import quota; other calls' throttling
                    // is their own and does not hold imports back.
                    if quota && e.is_throttle() {
                        self.limiter.slow_down(limit_key, pause.max(interval));
                    }
                    tracing::debug!(error = %e, tries, "ACM call will be retried");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

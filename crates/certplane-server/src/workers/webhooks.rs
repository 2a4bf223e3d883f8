//! The leader's webhook delivery worker.
//!
//! It reads the delivery queue (intents written by `apply`), POSTs each due delivery with an
//! HMAC-SHA256 signature, and proposes the attempt's outcome. A failed attempt is retried with
//! exponential backoff up to the configured number of attempts. The outcome names the attempt
//! number, so an outcome from a leader that lost its leadership meanwhile is refused as stale.
//!
//! Headers (docs/webhooks.md):
//!
//! ```text
//!  Certplane-Delivery:  dlv_…            (deduplicate on this: a delivery may arrive twice)
//!  Certplane-Event:     request.issued
//!  Certplane-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certplane_core::apply::{get_delivery, get_webhook, DELIVERY_WORKER};
use certplane_core::store::{Keyspace, StateRead};
use certplane_core::webhook::{AttemptOutcome, DeliveryRecord, DeliveryState, WebhookRecord};
use certplane_core::{Command, Principal, Proposal, Timestamp};
use certplane_pki::Kek;
use certplane_raft::node::RaftNode;
use tokio::sync::{watch, Semaphore};

use crate::config::WebhookSettings;

const CONCURRENCY: usize = 8;
const SCAN: usize = 1024;
const TICK: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;

pub fn worker_principal() -> Principal {
    Principal::system(DELIVERY_WORKER, "webhook delivery worker")
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature_header(secret: &[u8], unix_seconds: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix_seconds.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    format!("t={unix_seconds},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Delay before attempt `attempt + 1`, after `attempt` failures.
pub fn backoff_ms(settings: &WebhookSettings, attempt: u32) -> u64 {
    let factor = 1u64 << attempt.saturating_sub(1).min(20);
    settings
        .retry_base_ms
        .saturating_mul(factor)
        .min(MAX_BACKOFF_MS)
}

pub struct DeliveryWorker {
    node: Arc<RaftNode>,
    kek: Option<Arc<Kek>>,
    settings: WebhookSettings,
    http: reqwest::Client,
    in_flight: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
}

impl DeliveryWorker {
    pub fn new(node: Arc<RaftNode>, kek: Option<Arc<Kek>>, settings: WebhookSettings) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new(DeliveryWorker {
            node,
            kek,
            settings,
            http,
            in_flight: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
        })
    }

    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut applied = self.node.sm.subscribe_applied();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if self.node.is_leader() {
                self.clone().pass();
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = applied.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Start a task for every due delivery not already in flight.
    fn pass(self: Arc<Self>) {
        let view = self.node.view();
        let rows = match view.scan(Keyspace::DeliveryQueue, b"", b"", SCAN) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "delivery worker cannot read its queue");
                return;
            }
        };
        let now = crate::api::now_ms();
        for (key, _) in rows {
            let id = String::from_utf8_lossy(&key).to_string();
            let Ok(Some(delivery)) = get_delivery(&view, &id) else {
                continue;
            };
            if delivery.state != DeliveryState::Pending || delivery.next_attempt_at.0 > now {
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return;
            };
            {
                let Ok(mut set) = self.in_flight.lock() else {
                    return;
                };
                if !set.insert(id.clone()) {
                    continue;
                }
            }
            let hook = get_webhook(&view, &delivery.webhook_id).ok().flatten();
            let worker = self.clone();
            tokio::spawn(async move {
                worker.attempt(delivery, hook).await;
                if let Ok(mut set) = worker.in_flight.lock() {
                    set.remove(&id);
                }
                drop(permit);
            });
        }
    }

    async fn attempt(&self, delivery: DeliveryRecord, hook: Option<WebhookRecord>) {
        let attempt = delivery.attempts + 1;
        let outcome = match hook {
            None => AttemptOutcome::Failed {
                status: None,
                error: "the webhook was deleted".into(),
                retry_at: None,
            },
            Some(hook) => self.send(&hook, &delivery, attempt).await,
        };
        // Fencing: an effect is only recorded by the leader, and the attempt number makes a
        // deposed leader's late outcome stale.
        if !self.node.is_leader() {
            return;
        }
        let proposal = Proposal::new(
            Timestamp(crate::api::now_ms()),
            worker_principal(),
            Command::RecordDelivery {
                delivery_id: delivery.id.clone(),
                attempt,
                outcome: outcome.clone(),
            },
        );
        match self.node.write(proposal).await {
            Ok(_) => {
                let result = match outcome {
                    AttemptOutcome::Delivered { .. } => "delivered",
                    AttemptOutcome::Failed {
                        retry_at: Some(_), ..
                    } => "retry",
                    AttemptOutcome::Failed { retry_at: None, .. } => "failed",
                };
                metrics::counter!("certplane_webhook_attempts_total", "result" => result)
                    .increment(1);
            }
            Err(e) => {
                tracing::debug!(delivery = %delivery.id, error = %e, "delivery outcome not recorded; it will be sent again");
            }
        }
    }

    async fn send(
        &self,
        hook: &WebhookRecord,
        delivery: &DeliveryRecord,
        attempt: u32,
    ) -> AttemptOutcome {
        let give_up_or_retry = |status: Option<u16>, error: String| {
            let retry_at = (attempt < self.settings.max_attempts).then(|| {
                Timestamp(crate::api::now_ms() + backoff_ms(&self.settings, attempt) as i64)
            });
            AttemptOutcome::Failed {
                status,
                error,
                retry_at,
            }
        };
        let Some(kek) = &self.kek else {
            return give_up_or_retry(
                None,
                "the leader has no key-encryption key to open the webhook secret".into(),
            );
        };
        let secret = match certplane_pki::open(
            kek,
            &crate::workers::issuance::to_sealed(&hook.secret),
            WebhookRecord::secret_aad(&hook.id).as_bytes(),
        ) {
            Ok(s) => s,
            Err(e) => {
                return give_up_or_retry(None, format!("cannot open the webhook secret: {e}"))
            }
        };
        let t = crate::api::now_ms() / 1000;
        let signature = signature_header(&secret, t, &delivery.body);
        let response = self
            .http
            .post(&hook.url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("certplane/", env!("CARGO_PKG_VERSION")),
            )
            .header("certplane-delivery", &delivery.id)
            .header("certplane-event", delivery.event.as_str())
            .header("certplane-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => AttemptOutcome::Delivered {
                status: r.status().as_u16(),
            },
            Ok(r) => give_up_or_retry(
                Some(r.status().as_u16()),
                format!("the receiver answered {}", r.status()),
            ),
            Err(e) => give_up_or_retry(None, format!("cannot reach the receiver: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_an_independent_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let header = signature_header(b"Jefe", 0, "what do ya want for nothing?");
        // The signed text is "0." + body, so compare with ring over the same bytes.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let expected = ring::hmac::sign(&key, b"0.what do ya want for nothing?");
        assert_eq!(header, format!("t=0,v1={}", hex::encode(expected.as_ref())));
        let rfc = ring::hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(rfc.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = WebhookSettings {
            retry_base_ms: 100,
            max_attempts: 5,
        };
        assert_eq!(backoff_ms(&s, 1), 100);
        assert_eq!(backoff_ms(&s, 2), 200);
        assert_eq!(backoff_ms(&s, 3), 400);
        assert_eq!(backoff_ms(&s, 40), MAX_BACKOFF_MS);
    }
}

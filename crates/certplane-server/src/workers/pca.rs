//! The issuance worker's AWS side: approved requests of ACM PCA issuers, and revocations of
//! certificates AWS issued. Each step performs at most one kind of AWS call and proposes what it
//! learnt before the next step starts (DESIGN.md section 3):
//!
//! ```text
//!  approved                 ─► BeginAwsIssuance                   (no AWS call yet)
//!  issuing, no ARN          ─► IssueCertificate / RequestCertificate (same token every try)
//!                           ─► RecordAwsIssuance { arn }
//!  issuing, ARN             ─► GetCertificate (poll) ─► CompleteIssuance | FailIssuance
//!  AwsQueue revoke/<cert>   ─► RevokeCertificate ─► RecordAwsRevocation
//! ```
//!
//! A try whose answer was lost is repeated with the same token while AWS still remembers it
//! ([`AWS_TOKEN_WINDOW_MS`]); after that the request fails with the facts an operator needs rather
//! than risking a second certificate.

use std::collections::HashMap;

use certplane_aws::acm::{AcmError, AcmTarget};
use certplane_aws::pca::{CsrIssue, Fetched, NativeRequest, PcaDriver};
use certplane_core::certificate::{CertificateRecord, RevocationReason};
use certplane_core::command::CompleteIssuance;
use certplane_core::issuer::{AcmPcaSettings, IssuerRecord, PcaMode};
use certplane_core::names::San;
use certplane_core::request::{KeySource, RequestRecord, RequestState, AWS_TOKEN_WINDOW_MS};
use certplane_core::Command;

/// Clients per region, role and endpoint, made on first use.
pub struct PcaClients {
    endpoint_url: Option<String>,
    drivers: tokio::sync::Mutex<HashMap<AcmTarget, PcaDriver>>,
}

impl PcaClients {
    pub fn new(endpoint_url: Option<String>) -> Self {
        PcaClients {
            endpoint_url,
            drivers: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn target(&self, settings: &AcmPcaSettings) -> AcmTarget {
        AcmTarget {
            region: settings.region.clone(),
            role_arn: settings.role_arn.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }

    pub async fn driver(&self, settings: &AcmPcaSettings) -> PcaDriver {
        let target = self.target(settings);
        let mut drivers = self.drivers.lock().await;
        if let Some(d) = drivers.get(&target) {
            return d.clone();
        }
        let driver = PcaDriver::connect(&target).await;
        drivers.insert(target, driver.clone());
        driver
    }
}

/// What one step decided: a command to propose, or wait and try again (a retryable AWS error or a
/// certificate still being issued).
pub enum Step {
    Propose(Command),
    Later(String),
}

fn fail(request: &RequestRecord, error: String) -> Step {
    metrics::counter!("certplane_issuance_failed_total").increment(1);
    Step::Propose(Command::FailIssuance {
        request_id: request.id.clone(),
        generation: request.generation,
        error,
    })
}

fn aws_failure(request: &RequestRecord, e: AcmError) -> Step {
    if e.is_retryable() {
        Step::Later(e.to_string())
    } else {
        fail(request, e.to_string())
    }
}

/// The next step of an AWS issuance for `request` (approved or issuing) through `issuer`.
pub async fn issuance_step(
    clients: &PcaClients,
    request: &RequestRecord,
    issuer: &IssuerRecord,
    now_ms: i64,
) -> Step {
    let Some(settings) = &issuer.acm_pca else {
        return fail(
            request,
            format!("issuer {} is not an ACM PCA issuer", issuer.name),
        );
    };
    if request.state == RequestState::Approved {
        return Step::Propose(Command::BeginAwsIssuance {
            request_id: request.id.clone(),
            generation: request.generation,
        });
    }
    let Some(aws) = &request.aws else {
        return fail(
            request,
            "the request is issuing with no AWS call recorded".into(),
        );
    };
    let driver = clients.driver(settings).await;
    let Some(arn) = &aws.certificate_arn else {
        if now_ms - aws.started_at.millis() > AWS_TOKEN_WINDOW_MS {
            return fail(
                request,
                format!(
                    "the AWS issuance call first tried at {} (token {}) has no recorded answer, and AWS no longer remembers the token; check the CA's audit report for a certificate issued with that token, revoke it if it exists, and submit again",
                    aws.started_at.millis(),
                    aws.token
                ),
            );
        }
        return match call(&driver, settings, request, &aws.token, now_ms).await {
            Ok(issued) => Step::Propose(Command::RecordAwsIssuance {
                request_id: request.id.clone(),
                generation: request.generation,
                certificate_arn: issued.certificate_arn,
                aws_request_id: issued.aws_request_id,
            }),
            Err(e) => aws_failure(request, e),
        };
    };
    let fetched = match settings.mode {
        PcaMode::Csr => driver.fetch(&settings.ca_arn, arn).await,
        PcaMode::AcmNative => driver.fetch_native(arn).await,
    };
    match fetched {
        Ok(Some(fetched)) => complete(request, settings, arn, fetched),
        Ok(None) => Step::Later(format!("{arn} is still being issued")),
        Err(e) => aws_failure(request, e),
    }
}

fn split_names(request: &RequestRecord) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for san in &request.spec.sans {
        match san {
            San::Dns(name) => dns.push(name.clone()),
            San::Ip(ip) => ips.push(*ip),
        }
    }
    (dns, ips)
}

/// The issuance call itself, with the request's token.
async fn call(
    driver: &PcaDriver,
    settings: &AcmPcaSettings,
    request: &RequestRecord,
    token: &str,
    now_ms: i64,
) -> Result<certplane_aws::pca::Issued, AcmError> {
    let refused = |message: String| AcmError::Refused {
        operation: "issuance",
        code: "NotIssuable".into(),
        message,
    };
    let (dns, ips) = split_names(request);
    match (&request.spec.key, settings.mode) {
        (KeySource::Csr { csr_pem }, PcaMode::Csr) => {
            let not_before = now_ms.div_euclid(1000);
            let not_after = not_before.saturating_add(request.spec.validity.0);
            driver
                .issue(&CsrIssue {
                    ca_arn: &settings.ca_arn,
                    csr_pem,
                    signing_algorithm: &settings.signing_algorithm,
                    template_arn: settings.template_arn.as_deref(),
                    common_name: request.spec.common_name.as_deref(),
                    dns_names: &dns,
                    ip_addresses: &ips,
                    not_before_secs: not_before,
                    not_after_secs: not_after,
                    token,
                })
                .await
        }
        (KeySource::Generate { spec }, PcaMode::AcmNative) => {
            let key_algorithm = certplane_core::apply::acm_key_algorithm(*spec)
                .ok_or_else(|| refused("ACM cannot generate this key type".into()))?;
            let domain = request
                .spec
                .common_name
                .clone()
                .or_else(|| dns.first().cloned())
                .ok_or_else(|| refused("ACM needs a DNS name".into()))?;
            let others: Vec<String> = dns.iter().filter(|d| **d != domain).cloned().collect();
            driver
                .request_native(&NativeRequest {
                    ca_arn: &settings.ca_arn,
                    domain_name: &domain,
                    subject_alternative_names: &others,
                    key_algorithm,
                    token,
                    tags: &request.spec.tags,
                })
                .await
        }
        _ => Err(refused(format!(
            "a {} issuer cannot take this request's key source",
            settings.mode.as_str()
        ))),
    }
}

/// Check what AWS issued against what was approved, then propose it.
fn complete(
    request: &RequestRecord,
    settings: &AcmPcaSettings,
    arn: &str,
    fetched: Fetched,
) -> Step {
    // csr mode: the chain from the CA must link up (leaf, CA, ...). acm-native: only the leaf is
    // parsed; the chain is stored as ACM served it.
    let parsed = match settings.mode {
        PcaMode::Csr => certplane_pki::parse_chain_pem(&format!(
            "{}\n{}",
            fetched.certificate_pem.trim_end(),
            fetched.chain_pem
        )),
        PcaMode::AcmNative => certplane_pki::parse_chain_pem(&fetched.certificate_pem),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            return fail(
                request,
                format!("the certificate AWS returned for {arn} is not usable: {e}"),
            )
        }
    };
    let details = super::issuance::details_of(parsed.leaf);
    let mut wanted: Vec<String> = request.spec.sans.iter().map(San::to_string).collect();
    let mut got = details.sans.clone();
    wanted.sort();
    got.sort();
    if wanted != got || request.spec.common_name != details.common_name {
        return fail(
            request,
            format!(
                "AWS issued {arn} for CN {:?} and names {got:?}, not the approved CN {:?} and names {wanted:?}; it was not accepted (revoke it at the CA)",
                details.common_name, request.spec.common_name
            ),
        );
    }
    let validity_ms = details.not_after.millis() - details.not_before.millis();
    if validity_ms > request.spec.validity.0.saturating_mul(1000) {
        return fail(
            request,
            format!(
                "AWS issued {arn} valid for {} s, more than the approved {} s; it was not accepted (revoke it at the CA)",
                validity_ms / 1000,
                request.spec.validity.0
            ),
        );
    }
    let chain_pem = match settings.mode {
        PcaMode::Csr => parsed.chain_pem,
        PcaMode::AcmNative => {
            let mut chain = parsed.chain_pem;
            if !fetched.chain_pem.trim().is_empty() {
                chain.push_str(fetched.chain_pem.trim_end());
                chain.push('\n');
            }
            chain
        }
    };
    Step::Propose(Command::CompleteIssuance(Box::new(CompleteIssuance {
        request_id: request.id.clone(),
        generation: request.generation,
        certificate_id: crate::api::certificates::record_id(&details.fingerprint_sha256),
        details,
        chain_pem,
        private_key: None,
        aws_request_id: fetched.aws_request_id,
    })))
}

/// AWS Private CA's name for a revocation reason (it has no certificateHold).
fn pca_reason(reason: RevocationReason) -> &'static str {
    match reason {
        RevocationReason::Unspecified | RevocationReason::CertificateHold => "UNSPECIFIED",
        RevocationReason::KeyCompromise => "KEY_COMPROMISE",
        RevocationReason::CaCompromise => "CERTIFICATE_AUTHORITY_COMPROMISE",
        RevocationReason::AffiliationChanged => "AFFILIATION_CHANGED",
        RevocationReason::Superseded => "SUPERSEDED",
        RevocationReason::CessationOfOperation => "CESSATION_OF_OPERATION",
        RevocationReason::PrivilegeWithdrawn => "PRIVILEGE_WITHDRAWN",
        RevocationReason::AaCompromise => "A_A_COMPROMISE",
    }
}

/// Carry a recorded revocation to the CA. `Ok(None)`: nothing to do (already recorded).
pub async fn revoke(
    clients: &PcaClients,
    record: &CertificateRecord,
    issuer: &IssuerRecord,
) -> Result<Option<Command>, String> {
    let Some(settings) = &issuer.acm_pca else {
        return Ok(None);
    };
    let Some(aws) = record.issuance.as_ref().and_then(|l| l.aws.as_ref()) else {
        return Ok(None);
    };
    if !aws.revocation_pending {
        return Ok(None);
    }
    let reason = record
        .revocation
        .as_ref()
        .map(|r| r.reason)
        .unwrap_or(RevocationReason::Unspecified);
    let driver = clients.driver(settings).await;
    match driver
        .revoke(&aws.ca_arn, &record.details.serial, pca_reason(reason))
        .await
    {
        Ok(aws_request_id) => Ok(Some(Command::RecordAwsRevocation {
            certificate_id: record.id.clone(),
            aws_request_id,
        })),
        Err(e) => Err(e.to_string()),
    }
}

/// Check an acm-native certificate with ACM: its status, and whether ACM renewed it (another
/// serial at the same ARN), in which case the renewal is fetched and recorded as the successor.
pub async fn check_native(
    clients: &PcaClients,
    record: &CertificateRecord,
    issuer: &IssuerRecord,
    next_check_at_ms: i64,
) -> Result<Option<Command>, String> {
    let Some(settings) = &issuer.acm_pca else {
        return Ok(None);
    };
    let Some(aws) = record.issuance.as_ref().and_then(|l| l.aws.as_ref()) else {
        return Ok(None);
    };
    if aws.mode != PcaMode::AcmNative || record.superseded_by.is_some() {
        return Ok(None);
    }
    let driver = clients.driver(settings).await;
    let status = driver
        .describe_native(&aws.certificate_arn)
        .await
        .map_err(|e| e.to_string())?;
    let mut renewed = None;
    if status.status == "ISSUED"
        && !status.serial.is_empty()
        && !certplane_aws::serial::same_serial(&record.details.serial, &status.serial)
    {
        let fetched = driver
            .fetch_native(&aws.certificate_arn)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("ACM reports a new serial but serves no certificate yet")?;
        let parsed = certplane_pki::parse_chain_pem(&fetched.certificate_pem)
            .map_err(|e| format!("ACM's renewal of {} does not parse: {e}", record.id))?;
        let details = super::issuance::details_of(parsed.leaf);
        let mut chain = parsed.chain_pem;
        if !fetched.chain_pem.trim().is_empty() {
            chain.push_str(fetched.chain_pem.trim_end());
            chain.push('\n');
        }
        renewed = Some(certplane_core::command::AcmRenewed {
            certificate_id: crate::api::certificates::record_id(&details.fingerprint_sha256),
            details,
            chain_pem: chain,
            aws_request_id: fetched.aws_request_id,
        });
    }
    Ok(Some(Command::RecordAcmCheck(Box::new(
        certplane_core::command::RecordAcmCheck {
            certificate_id: record.id.clone(),
            generation: record.generation,
            status: status.status,
            renewal_status: status.renewal_status,
            next_check_at: certplane_core::Timestamp(next_check_at_ms),
            renewed,
        },
    ))))
}

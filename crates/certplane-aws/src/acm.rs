//! The ACM destination driver (Pattern 1): import a certificate, re-import renewals to the same ARN,
//! and verify what ACM then serves.
//!
//! ```text
//!  deploy(cert, key, chain, arn?) ─► ImportCertificate (to arn when known) ─► DescribeCertificate
//!      serial and NotAfter must be the new certificate's ─► ListTagsForCertificate ─► re-add lost tags
//! ```
//!
//! A deployment that cannot be verified is an error, never a success: the caller records it failed
//! and retries it. Tags are passed only on the first import (ACM refuses tags on a re-import) and
//! re-applied when a re-import lost them.

use std::collections::BTreeMap;

use aws_sdk_acm::error::ProvideErrorMetadata;
use aws_sdk_acm::primitives::Blob;
use aws_sdk_acm::types::Tag;

use crate::serial::same_serial;

/// Where a certificate goes in ACM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmDestination {
    pub region: String,
    pub tags: BTreeMap<String, String>,
}

/// What to deploy: PEM certificate, its private key (PKCS#8 PEM), the issuer chain, and the ARN of
/// an earlier deployment to re-import to.
pub struct Deployment<'a> {
    pub certificate_pem: &'a str,
    pub private_key_pem: &'a str,
    pub chain_pem: &'a str,
    /// certplane's serial of the certificate (lowercase hex).
    pub serial_hex: &'a str,
    /// Milliseconds since the epoch.
    pub not_after_ms: i64,
    pub arn: Option<&'a str>,
}

/// A verified deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub arn: String,
    /// ACM's spelling of the serial it serves.
    pub observed_serial: String,
    pub tags_restored: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AcmError {
    /// Throttling, a 5xx or a transport failure: try again later.
    #[error("ACM {operation} failed ({code}); retryable: {message}")]
    Retryable {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// The input or the state is wrong: retrying the same call will not help.
    #[error("ACM {operation} refused it ({code}): {message}")]
    Refused {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// ACM answered, but does not serve what was deployed.
    #[error("deployment to {arn} did not verify: {reason}")]
    NotVerified { arn: String, reason: String },
}

impl AcmError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AcmError::Retryable { .. } | AcmError::NotVerified { .. }
        )
    }

    pub fn is_throttle(&self) -> bool {
        matches!(self, AcmError::Retryable { code, .. } if code.contains("Throttl"))
    }
}

pub(crate) fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
    operation: &'static str,
    err: aws_sdk_acm::error::SdkError<E>,
) -> AcmError {
    use aws_sdk_acm::error::SdkError;
    let retryable_transport = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or("unknown").to_string();
    let message = err
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{err:?}").chars().take(300).collect());
    let retryable = retryable_transport
        || status.is_some_and(|s| s >= 500 || s == 429)
        || code.contains("Throttl")
        || code == "RequestInProgressException";
    if retryable {
        AcmError::Retryable {
            operation,
            code,
            message,
        }
    } else {
        AcmError::Refused {
            operation,
            code,
            message,
        }
    }
}

/// Where a driver talks: the region, an optional role to assume (another account), and an endpoint
/// override (tests point it at moto).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcmTarget {
    pub region: String,
    pub role_arn: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Every ACM operation the driver can call: the IAM policy certplane prints lists exactly these.
pub const OPERATIONS: [&str; 5] = [
    "ImportCertificate",
    "DescribeCertificate",
    "ListTagsForCertificate",
    "AddTagsToCertificate",
    "ListCertificates",
];

/// Called only when a zone turns on `acm_cleanup`: the IAM policy grants it only then.
pub const CLEANUP_OPERATIONS: [&str; 1] = ["DeleteCertificate"];

/// Count one ACM call by operation and outcome (`ok`, `throttled`, `retryable`, `refused`);
/// throttles also by region, where the quota applies.
pub(crate) fn observe<T>(
    operation: &'static str,
    region: &str,
    result: Result<T, AcmError>,
) -> Result<T, AcmError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.is_throttle() => "throttled",
        Err(AcmError::Retryable { .. }) => "retryable",
        Err(_) => "refused",
    };
    metrics::counter!("certplane_acm_calls_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    if outcome == "throttled" {
        metrics::counter!("certplane_acm_throttled_total", "operation" => operation, "region" => region.to_string())
            .increment(1);
    }
    result
}

/// The SDK configuration for `target`, shared by the ACM and ACM PCA clients: the default credential
/// chain (assuming `role_arn` through STS when set), one attempt per call (callers retry, so their
/// limiters see every call), and timeouts so a hung call never holds a worker slot.
pub async fn sdk_config(target: &AcmTarget) -> aws_config::SdkConfig {
    let region = aws_config::Region::new(target.region.clone());
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region.clone())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .build(),
        );
    if let Some(url) = &target.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let base = loader.load().await;
    match &target.role_arn {
        None => base,
        Some(role) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("certplane")
                .region(region)
                .configure(&base)
                .build()
                .await;
            base.into_builder()
                .credentials_provider(aws_sdk_acm::config::SharedCredentialsProvider::new(
                    provider,
                ))
                .build()
        }
    }
}

/// One region's ACM client.
#[derive(Clone)]
pub struct AcmDriver {
    client: aws_sdk_acm::Client,
    region: String,
}

impl AcmDriver {
    /// A client for `region` from the default credential chain and endpoint settings.
    pub async fn for_region(region: &str) -> AcmDriver {
        AcmDriver::connect(&AcmTarget {
            region: region.to_string(),
            role_arn: None,
            endpoint_url: None,
        })
        .await
    }

    /// A client for `target`: credentials from the default chain (assuming `role_arn` through STS
    /// when set), no static keys. The SDK does not retry by itself: the caller's rate limiter sees
    /// every call, and throttling comes back to it to slow down.
    pub async fn connect(target: &AcmTarget) -> AcmDriver {
        AcmDriver {
            client: aws_sdk_acm::Client::new(&sdk_config(target).await),
            region: target.region.clone(),
        }
    }

    /// The imported certificate tagged `key=value`, if there is one: how a first import whose
    /// answer was lost is found again instead of being imported twice. Pages through every
    /// certificate of the account and region, so it is only used in that case.
    pub async fn find_by_tag(&self, key: &str, value: &str) -> Result<Option<String>, AcmError> {
        use aws_sdk_acm::types::{Filters, KeyAlgorithm};
        // Without a key-type filter ListCertificates answers only RSA-2048 certificates.
        let filters = Filters::builder()
            .set_key_types(Some(vec![
                KeyAlgorithm::Rsa2048,
                KeyAlgorithm::Rsa3072,
                KeyAlgorithm::Rsa4096,
                KeyAlgorithm::EcPrime256v1,
                KeyAlgorithm::EcSecp384r1,
                KeyAlgorithm::EcSecp521r1,
            ]))
            .build();
        let mut token: Option<String> = None;
        loop {
            let page = observe(
                "ListCertificates",
                &self.region,
                self.client
                    .list_certificates()
                    .includes(filters.clone())
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| classify("ListCertificates", e)),
            )?;
            for summary in page.certificate_summary_list() {
                let Some(arn) = summary.certificate_arn() else {
                    continue;
                };
                let tags = self.list_tags(arn).await?;
                if tags.get(key).map(String::as_str) == Some(value) {
                    return Ok(Some(arn.to_string()));
                }
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => return Ok(None),
            }
        }
    }

    /// Delete the ACM certificate at `arn` unless something uses it (DescribeCertificate's
    /// `InUseBy`). `Ok(Ok(()))`: deleted or already gone; `Ok(Err(users))`: still in use.
    pub async fn delete_if_unused(&self, arn: &str) -> Result<Result<(), Vec<String>>, AcmError> {
        let described = self
            .client
            .describe_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| classify("DescribeCertificate", e));
        let described = match observe("DescribeCertificate", &self.region, described) {
            Ok(d) => d,
            Err(AcmError::Refused { code, .. }) if code == "ResourceNotFoundException" => {
                return Ok(Ok(()))
            }
            Err(e) => return Err(e),
        };
        let users: Vec<String> = described
            .certificate()
            .map(|c| c.in_use_by().to_vec())
            .unwrap_or_default();
        if !users.is_empty() {
            return Ok(Err(users));
        }
        let deleted = self
            .client
            .delete_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| classify("DeleteCertificate", e));
        match observe("DeleteCertificate", &self.region, deleted) {
            Ok(_) => Ok(Ok(())),
            Err(AcmError::Refused { code, .. }) if code == "ResourceNotFoundException" => {
                Ok(Ok(()))
            }
            Err(AcmError::Refused { code, message, .. }) if code == "ResourceInUseException" => {
                Ok(Err(vec![message]))
            }
            Err(e) => Err(e),
        }
    }

    async fn list_tags(&self, arn: &str) -> Result<BTreeMap<String, String>, AcmError> {
        let listed = observe(
            "ListTagsForCertificate",
            &self.region,
            self.client
                .list_tags_for_certificate()
                .certificate_arn(arn)
                .send()
                .await
                .map_err(|e| classify("ListTagsForCertificate", e)),
        )?;
        Ok(listed
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().unwrap_or("").to_string()))
            .collect())
    }

    pub fn client(&self) -> &aws_sdk_acm::Client {
        &self.client
    }

    /// Import (or re-import to `deployment.arn`), verify, restore tags.
    pub async fn deploy(
        &self,
        destination: &AcmDestination,
        deployment: &Deployment<'_>,
    ) -> Result<Deployed, AcmError> {
        let arn = self.import(destination, deployment).await?;
        self.check(&arn, destination, deployment).await
    }

    /// ImportCertificate alone: the ARN ACM answered (the same as `deployment.arn` on a re-import).
    /// A first import that fails with anything but throttling may still have created the
    /// certificate: the caller must not simply send it again.
    pub async fn import(
        &self,
        destination: &AcmDestination,
        deployment: &Deployment<'_>,
    ) -> Result<String, AcmError> {
        let mut import = self
            .client
            .import_certificate()
            .certificate(Blob::new(deployment.certificate_pem.as_bytes()))
            .private_key(Blob::new(deployment.private_key_pem.as_bytes()));
        if !deployment.chain_pem.trim().is_empty() {
            import = import.certificate_chain(Blob::new(deployment.chain_pem.as_bytes()));
        }
        match deployment.arn {
            Some(arn) => import = import.certificate_arn(arn),
            None => {
                for tag in tags_of(&destination.tags) {
                    import = import.tags(tag);
                }
            }
        }
        let imported = observe(
            "ImportCertificate",
            &self.region,
            import
                .send()
                .await
                .map_err(|e| classify("ImportCertificate", e)),
        )?;
        let arn = imported
            .certificate_arn()
            .map(str::to_string)
            .or_else(|| deployment.arn.map(str::to_string))
            .ok_or_else(|| AcmError::NotVerified {
                arn: String::new(),
                reason: "ImportCertificate returned no ARN".into(),
            })?;
        if let Some(expected) = deployment.arn {
            if expected != arn {
                return Err(AcmError::NotVerified {
                    arn,
                    reason: format!("the re-import answered another ARN than {expected}"),
                });
            }
        }
        Ok(arn)
    }

    /// After an import: DescribeCertificate must show the deployed serial and NotAfter, and lost
    /// tags are re-added.
    pub async fn check(
        &self,
        arn: &str,
        destination: &AcmDestination,
        deployment: &Deployment<'_>,
    ) -> Result<Deployed, AcmError> {
        let observed_serial = self.verify(arn, deployment).await?;
        let tags_restored = self.restore_tags(arn, &destination.tags).await?;
        Ok(Deployed {
            arn: arn.to_string(),
            observed_serial,
            tags_restored,
        })
    }

    /// DescribeCertificate must show the deployed serial and NotAfter.
    async fn verify(&self, arn: &str, deployment: &Deployment<'_>) -> Result<String, AcmError> {
        let described = observe(
            "DescribeCertificate",
            &self.region,
            self.client
                .describe_certificate()
                .certificate_arn(arn)
                .send()
                .await
                .map_err(|e| classify("DescribeCertificate", e)),
        )?;
        let detail = described
            .certificate()
            .ok_or_else(|| AcmError::NotVerified {
                arn: arn.to_string(),
                reason: "DescribeCertificate returned no certificate".into(),
            })?;
        let serial = detail.serial().unwrap_or("").to_string();
        if !same_serial(deployment.serial_hex, &serial) {
            return Err(AcmError::NotVerified {
                arn: arn.to_string(),
                reason: format!(
                    "ACM serves serial {serial:?}, not the deployed {}",
                    deployment.serial_hex
                ),
            });
        }
        let not_after = detail
            .not_after()
            .map(|t| t.secs() * 1000)
            .unwrap_or_default();
        // X.509 times have one-second resolution.
        if not_after / 1000 != deployment.not_after_ms / 1000 {
            return Err(AcmError::NotVerified {
                arn: arn.to_string(),
                reason: format!(
                    "ACM says NotAfter {not_after}, the deployed certificate {}",
                    deployment.not_after_ms
                ),
            });
        }
        Ok(serial)
    }

    /// Re-add any of `wanted` that ACM no longer has (moto drops tags on re-import). True when it
    /// had to.
    async fn restore_tags(
        &self,
        arn: &str,
        wanted: &BTreeMap<String, String>,
    ) -> Result<bool, AcmError> {
        if wanted.is_empty() {
            return Ok(false);
        }
        let have = self.list_tags(arn).await?;
        let missing: BTreeMap<String, String> = wanted
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        let mut add = self.client.add_tags_to_certificate().certificate_arn(arn);
        for tag in tags_of(&missing) {
            add = add.tags(tag);
        }
        observe(
            "AddTagsToCertificate",
            &self.region,
            add.send()
                .await
                .map_err(|e| classify("AddTagsToCertificate", e)),
        )?;
        Ok(true)
    }
}

fn tags_of(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

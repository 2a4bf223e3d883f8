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

fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
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

/// One region's ACM client.
#[derive(Clone)]
pub struct AcmDriver {
    client: aws_sdk_acm::Client,
}

impl AcmDriver {
    /// A client for `region` from the default credential chain and endpoint settings.
    pub async fn for_region(region: &str) -> AcmDriver {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .load()
            .await;
        AcmDriver {
            client: aws_sdk_acm::Client::new(&config),
        }
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
        let imported = import
            .send()
            .await
            .map_err(|e| classify("ImportCertificate", e))?;
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
        let observed_serial = self.verify(&arn, deployment).await?;
        let tags_restored = self.restore_tags(&arn, &destination.tags).await?;
        Ok(Deployed {
            arn,
            observed_serial,
            tags_restored,
        })
    }

    /// DescribeCertificate must show the deployed serial and NotAfter.
    async fn verify(&self, arn: &str, deployment: &Deployment<'_>) -> Result<String, AcmError> {
        let described = self
            .client
            .describe_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| classify("DescribeCertificate", e))?;
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
        let listed = self
            .client
            .list_tags_for_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| classify("ListTagsForCertificate", e))?;
        let have: BTreeMap<String, String> = listed
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().unwrap_or("").to_string()))
            .collect();
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
        add.send()
            .await
            .map_err(|e| classify("AddTagsToCertificate", e))?;
        Ok(true)
    }
}

fn tags_of(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
        .collect()
}

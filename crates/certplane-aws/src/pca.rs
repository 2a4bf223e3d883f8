//! The ACM Private CA issuer (Pattern 2): certplane decides, AWS signs.
//!
//! ```text
//!  csr mode:        IssueCertificate(CSR, names, validity, token) ─► ARN ─► GetCertificate (poll)
//!  acm-native mode: ACM RequestCertificate(CA ARN, names, key type, token) ─► ARN
//!                     ─► DescribeCertificate (status ISSUED) ─► ACM GetCertificate
//!  revoke:          RevokeCertificate(CA ARN, serial, reason)
//! ```
//!
//! Every issuance call carries the request's idempotency token, so a repeated call (a retry, a new
//! leader) gets the certificate the first call created. The caller records each answer in the
//! replicated state before the next step, which is what keeps a request to one certificate once AWS
//! has forgotten the token.

use aws_sdk_acm::operation::RequestId as _;
use aws_sdk_acmpca::primitives::Blob;

use crate::acm::{classify, sdk_config, AcmError, AcmTarget};

/// Every ACM PCA operation the issuer calls: the IAM policy certplane prints lists exactly these.
pub const PCA_OPERATIONS: [&str; 5] = [
    "IssueCertificate",
    "GetCertificate",
    "RevokeCertificate",
    "GetCertificateAuthorityCertificate",
    "DescribeCertificateAuthority",
];

/// The ACM operations an `acm-native` issuer calls (on certificates in the CA's region).
pub const NATIVE_ACM_OPERATIONS: [&str; 3] = [
    "RequestCertificate",
    "DescribeCertificate",
    "GetCertificate",
];

/// The end-entity template that takes the subject and names from the API call (certplane's
/// approved request), never from the CSR.
pub fn default_template_arn(ca_arn: &str) -> String {
    let partition = ca_arn.split(':').nth(1).unwrap_or("aws");
    format!("arn:{partition}:acm-pca:::template/EndEntityCertificate_APIPassthrough/V1")
}

fn observe<T>(operation: &'static str, result: Result<T, AcmError>) -> Result<T, AcmError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.is_throttle() => "throttled",
        Err(AcmError::Retryable { .. }) => "retryable",
        Err(_) => "refused",
    };
    metrics::counter!("certplane_acmpca_calls_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    result
}

/// What DescribeCertificateAuthority says about a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// `ACTIVE`, `DISABLED`, `PENDING_CERTIFICATE`, ...
    pub status: String,
    /// `ROOT` or `SUBORDINATE`.
    pub kind: String,
    pub key_algorithm: String,
    pub signing_algorithm: String,
    pub certificate_pem: String,
    /// The CA's chain above it (empty for a root).
    pub chain_pem: String,
}

/// A call's answer: the certificate ARN and the AWS request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub certificate_arn: String,
    pub aws_request_id: Option<String>,
}

/// A fetched certificate: leaf PEM, chain PEM, the AWS request id of the fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub certificate_pem: String,
    pub chain_pem: String,
    pub aws_request_id: Option<String>,
}

/// DescribeCertificate's view of an `acm-native` certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeStatus {
    pub status: String,
    /// As ACM writes it (colon hex in AWS, decimal in moto): compare with [`crate::serial`].
    pub serial: String,
    pub renewal_status: Option<String>,
}

/// What certplane asks the CA to sign (`csr` mode).
pub struct CsrIssue<'a> {
    pub ca_arn: &'a str,
    pub csr_pem: &'a str,
    pub signing_algorithm: &'a str,
    /// `None`: [`default_template_arn`].
    pub template_arn: Option<&'a str>,
    pub common_name: Option<&'a str>,
    pub dns_names: &'a [String],
    pub ip_addresses: &'a [std::net::IpAddr],
    pub not_before_secs: i64,
    pub not_after_secs: i64,
    pub token: &'a str,
}

/// What certplane asks ACM to request (`acm-native` mode).
pub struct NativeRequest<'a> {
    pub ca_arn: &'a str,
    pub domain_name: &'a str,
    pub subject_alternative_names: &'a [String],
    /// ACM's key algorithm name (`RSA_2048`, `EC_prime256v1`, `EC_secp384r1`).
    pub key_algorithm: &'a str,
    pub token: &'a str,
    pub tags: &'a std::collections::BTreeMap<String, String>,
}

/// One region's (and role's) ACM PCA and ACM clients.
#[derive(Clone)]
pub struct PcaDriver {
    pca: aws_sdk_acmpca::Client,
    acm: aws_sdk_acm::Client,
    region: String,
}

fn request_id_of(id: Option<&str>) -> Option<String> {
    id.filter(|s| !s.is_empty()).map(str::to_string)
}

impl PcaDriver {
    pub async fn connect(target: &AcmTarget) -> PcaDriver {
        let config = sdk_config(target).await;
        PcaDriver {
            pca: aws_sdk_acmpca::Client::new(&config),
            acm: aws_sdk_acm::Client::new(&config),
            region: target.region.clone(),
        }
    }

    /// The CA's status, type, algorithms and certificate (with its chain).
    pub async fn describe_ca(&self, ca_arn: &str) -> Result<CaInfo, AcmError> {
        let described = observe(
            "DescribeCertificateAuthority",
            self.pca
                .describe_certificate_authority()
                .certificate_authority_arn(ca_arn)
                .send()
                .await
                .map_err(|e| classify("PCA DescribeCertificateAuthority", e)),
        )?;
        let ca = described
            .certificate_authority()
            .ok_or_else(|| AcmError::Refused {
                operation: "PCA DescribeCertificateAuthority",
                code: "NoCertificateAuthority".into(),
                message: format!("no certificate authority {ca_arn}"),
            })?;
        let config = ca.certificate_authority_configuration();
        let cert = observe(
            "GetCertificateAuthorityCertificate",
            self.pca
                .get_certificate_authority_certificate()
                .certificate_authority_arn(ca_arn)
                .send()
                .await
                .map_err(|e| classify("PCA GetCertificateAuthorityCertificate", e)),
        )?;
        Ok(CaInfo {
            status: ca
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            kind: ca
                .r#type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            key_algorithm: config
                .map(|c| c.key_algorithm().as_str().to_string())
                .unwrap_or_default(),
            signing_algorithm: config
                .map(|c| c.signing_algorithm().as_str().to_string())
                .unwrap_or_default(),
            certificate_pem: cert.certificate().unwrap_or_default().to_string(),
            chain_pem: cert.certificate_chain().unwrap_or_default().to_string(),
        })
    }

    /// IssueCertificate with the request's CSR, names, validity and token.
    pub async fn issue(&self, issue: &CsrIssue<'_>) -> Result<Issued, AcmError> {
        use aws_sdk_acmpca::types::{
            ApiPassthrough, Asn1Subject, Extensions, GeneralName, SigningAlgorithm, Validity,
            ValidityPeriodType,
        };
        let refused = |message: String| AcmError::Refused {
            operation: "PCA IssueCertificate",
            code: "InvalidInput".into(),
            message,
        };
        let validity = |secs: i64| {
            Validity::builder()
                .value(secs)
                .r#type(ValidityPeriodType::Absolute)
                .build()
                .map_err(|e| refused(e.to_string()))
        };
        let mut names = Vec::new();
        for dns in issue.dns_names {
            names.push(GeneralName::builder().dns_name(dns).build());
        }
        for ip in issue.ip_addresses {
            names.push(GeneralName::builder().ip_address(ip.to_string()).build());
        }
        let mut subject = Asn1Subject::builder();
        if let Some(cn) = issue.common_name {
            subject = subject.common_name(cn);
        }
        let passthrough = ApiPassthrough::builder()
            .subject(subject.build())
            .extensions(
                Extensions::builder()
                    .set_subject_alternative_names(Some(names))
                    .build(),
            )
            .build();
        let template = issue
            .template_arn
            .map(str::to_string)
            .unwrap_or_else(|| default_template_arn(issue.ca_arn));
        let answer = observe(
            "IssueCertificate",
            self.pca
                .issue_certificate()
                .certificate_authority_arn(issue.ca_arn)
                .csr(Blob::new(issue.csr_pem.as_bytes()))
                .signing_algorithm(SigningAlgorithm::from(issue.signing_algorithm))
                .template_arn(template)
                .api_passthrough(passthrough)
                .validity_not_before(validity(issue.not_before_secs)?)
                .validity(validity(issue.not_after_secs)?)
                .idempotency_token(issue.token)
                .send()
                .await
                .map_err(|e| classify("PCA IssueCertificate", e)),
        )?;
        let arn = answer
            .certificate_arn()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| refused("IssueCertificate answered no certificate ARN".into()))?;
        Ok(Issued {
            certificate_arn: arn.to_string(),
            aws_request_id: request_id_of(answer.request_id()),
        })
    }

    /// GetCertificate: `None` while the CA is still issuing it.
    pub async fn fetch(&self, ca_arn: &str, arn: &str) -> Result<Option<Fetched>, AcmError> {
        let got = self
            .pca
            .get_certificate()
            .certificate_authority_arn(ca_arn)
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| classify("PCA GetCertificate", e));
        match observe("GetCertificate", got) {
            Ok(got) => Ok(got
                .certificate()
                .filter(|c| !c.is_empty())
                .map(|c| Fetched {
                    certificate_pem: c.to_string(),
                    chain_pem: got.certificate_chain().unwrap_or_default().to_string(),
                    aws_request_id: request_id_of(got.request_id()),
                })),
            Err(AcmError::Retryable { code, .. }) if code == "RequestInProgressException" => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// RevokeCertificate by serial (lowercase hex). A revocation the CA already has counts as done.
    pub async fn revoke(
        &self,
        ca_arn: &str,
        serial_hex: &str,
        reason: &str,
    ) -> Result<Option<String>, AcmError> {
        use aws_sdk_acmpca::types::RevocationReason;
        let revoked = self
            .pca
            .revoke_certificate()
            .certificate_authority_arn(ca_arn)
            .certificate_serial(crate::serial::colon_hex(serial_hex))
            .revocation_reason(RevocationReason::from(reason))
            .send()
            .await
            .map_err(|e| classify("PCA RevokeCertificate", e));
        match observe("RevokeCertificate", revoked) {
            Ok(out) => Ok(request_id_of(out.request_id())),
            Err(AcmError::Refused { code, .. }) if code == "RequestAlreadyProcessedException" => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// ACM RequestCertificate for a private certificate signed by `ca_arn` (`acm-native`).
    pub async fn request_native(&self, req: &NativeRequest<'_>) -> Result<Issued, AcmError> {
        use aws_sdk_acm::types::{KeyAlgorithm, Tag};
        let mut call = self
            .acm
            .request_certificate()
            .domain_name(req.domain_name)
            .certificate_authority_arn(req.ca_arn)
            .idempotency_token(req.token)
            .key_algorithm(KeyAlgorithm::from(req.key_algorithm));
        for san in req.subject_alternative_names {
            call = call.subject_alternative_names(san);
        }
        for (k, v) in req.tags {
            if let Ok(tag) = Tag::builder().key(k).value(v).build() {
                call = call.tags(tag);
            }
        }
        let answer = crate::acm::observe(
            "RequestCertificate",
            &self.region,
            call.send()
                .await
                .map_err(|e| classify("RequestCertificate", e)),
        )?;
        let arn = answer
            .certificate_arn()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| AcmError::Refused {
                operation: "RequestCertificate",
                code: "NoArn".into(),
                message: "RequestCertificate answered no certificate ARN".into(),
            })?;
        Ok(Issued {
            certificate_arn: arn.to_string(),
            aws_request_id: request_id_of(answer.request_id()),
        })
    }

    /// What ACM says about an `acm-native` certificate now.
    pub async fn describe_native(&self, arn: &str) -> Result<NativeStatus, AcmError> {
        let described = crate::acm::observe(
            "DescribeCertificate",
            &self.region,
            self.acm
                .describe_certificate()
                .certificate_arn(arn)
                .send()
                .await
                .map_err(|e| classify("DescribeCertificate", e)),
        )?;
        let detail = described.certificate();
        Ok(NativeStatus {
            status: detail
                .and_then(|c| c.status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            serial: detail
                .and_then(|c| c.serial())
                .unwrap_or_default()
                .to_string(),
            renewal_status: detail
                .and_then(|c| c.renewal_summary())
                .map(|r| r.renewal_status().as_str().to_string()),
        })
    }

    /// An `acm-native` certificate once ACM has issued it: `None` while it is pending.
    pub async fn fetch_native(&self, arn: &str) -> Result<Option<Fetched>, AcmError> {
        use aws_sdk_acm::types::CertificateStatus;
        let described = crate::acm::observe(
            "DescribeCertificate",
            &self.region,
            self.acm
                .describe_certificate()
                .certificate_arn(arn)
                .send()
                .await
                .map_err(|e| classify("DescribeCertificate", e)),
        )?;
        let status = described
            .certificate()
            .and_then(|c| c.status())
            .cloned()
            .unwrap_or(CertificateStatus::PendingValidation);
        match status {
            CertificateStatus::Issued => {}
            CertificateStatus::PendingValidation => return Ok(None),
            other => {
                return Err(AcmError::Refused {
                    operation: "DescribeCertificate",
                    code: other.as_str().to_string(),
                    message: format!("ACM certificate {arn} is {}", other.as_str()),
                })
            }
        }
        let got = self
            .acm
            .get_certificate()
            .certificate_arn(arn)
            .send()
            .await
            .map_err(|e| classify("GetCertificate", e));
        match crate::acm::observe("GetCertificate", &self.region, got) {
            Ok(got) => Ok(got
                .certificate()
                .filter(|c| !c.is_empty())
                .map(|c| Fetched {
                    certificate_pem: c.to_string(),
                    chain_pem: got.certificate_chain().unwrap_or_default().to_string(),
                    aws_request_id: request_id_of(got.request_id()),
                })),
            Err(AcmError::Retryable { code, .. }) if code == "RequestInProgressException" => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

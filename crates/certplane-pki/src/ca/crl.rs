//! Certificate revocation lists for the built-in CA (RFC 5280 section 5), built by rcgen.
//!
//! A CRL is a function of the revoked set, the CRL number and the two times, all of which the caller
//! takes from replicated state; so two nodes asked for CRL number N produce the same content (ECDSA
//! signatures still differ, which relying parties do not care about).
//!
//! Each CRL carries the version 2 header, the authority key identifier (the CA's own subject key
//! identifier, so it matches the certificate) and the CRL number. Entries carry their revocation time
//! and, except for `unspecified` (RFC 5280 5.3.1: SHOULD be absent), a reasonCode.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateRevocationListParams, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};

use super::{datetime_from_ms, Signer};
use crate::{pem_blocks, PkiError};

/// RFC 5280 limits serials to 20 octets.
const MAX_SERIAL_BYTES: usize = 20;

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedEntry {
    /// Hex as in `IssuedCertificate::serial_hex` / `CertificateInfo::serial`; case and `:` separators
    /// are forgiven.
    pub serial_hex: String,
    /// Unix epoch milliseconds (whole seconds in the CRL).
    pub revoked_at_ms: i64,
    pub reason: RevocationReason,
}

/// RFC 5280 CRLReason. `removeFromCRL` (8) is deliberately absent: it only appears in delta CRLs to
/// release a certificate from hold, and is never the reason a certificate is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 9] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The CRLReason code written into the CRL.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    /// The name RFC 5280 uses (`keyCompromise`, `cACompromise`, ...).
    pub fn rfc_name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::CertificateHold => rcgen::RevocationReason::CertificateHold,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => rcgen::RevocationReason::AaCompromise,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rfc_name())
    }
}

/// Accepts the snake_case API names (`key_compromise`) and the RFC names in any case
/// (`keyCompromise`, `cACompromise`, `CACompromise`).
impl FromStr for RevocationReason {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folded: String = s
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        if folded == "removefromcrl" {
            return Err(PkiError::InvalidArgument(
                "removeFromCRL is not a revocation reason: it only appears in delta CRLs to \
                 release a certificate from hold"
                    .to_string(),
            ));
        }
        RevocationReason::ALL
            .into_iter()
            .find(|reason| reason.rfc_name().to_lowercase() == folded)
            .ok_or_else(|| {
                PkiError::InvalidArgument(format!(
                    "\"{}\" is not a revocation reason; use one of: {}",
                    s.escape_debug(),
                    RevocationReason::ALL
                        .iter()
                        .map(|r| r.rfc_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

impl Signer {
    /// Sign a CRL listing `revoked`, numbered `crl_number` (must grow with every CRL this CA
    /// publishes), valid from `this_update_ms` until `next_update_ms`. Returns DER; see [`crl_pem`].
    ///
    /// Duplicate serials are refused rather than silently merged: they mean the caller's revocation
    /// state is inconsistent.
    pub fn crl(
        &self,
        revoked: &[RevokedEntry],
        crl_number: u64,
        this_update_ms: i64,
        next_update_ms: i64,
    ) -> Result<Vec<u8>, PkiError> {
        if !self.can_sign_crl {
            return Err(PkiError::NotACa {
                reason: "its keyUsage extension does not allow signing CRLs (cRLSign)".to_string(),
            });
        }
        let this_update = datetime_from_ms(this_update_ms, "the CRL's thisUpdate")?;
        let next_update = datetime_from_ms(next_update_ms, "the CRL's nextUpdate")?;
        if next_update <= this_update {
            return Err(PkiError::InvalidArgument(
                "the CRL's nextUpdate must be at least one second after its thisUpdate".to_string(),
            ));
        }
        let mut seen = HashSet::with_capacity(revoked.len());
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for entry in revoked {
            let serial = parse_serial_hex(&entry.serial_hex)?;
            if !seen.insert(serial.clone()) {
                return Err(PkiError::InvalidArgument(format!(
                    "serial {} is listed twice",
                    entry.serial_hex
                )));
            }
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: datetime_from_ms(entry.revoked_at_ms, "a revocation time")?,
                // rcgen leaves the extension out for unspecified, as RFC 5280 asks.
                reason_code: Some(entry.reason.to_rcgen()),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            // The CRL's authority key identifier must equal the CA certificate's subject key
            // identifier, so reuse the signer's (pre-specified from the certificate when present).
            key_identifier_method: self.issuer_key_identifier_method(),
        };
        let crl = params
            .signed_by(&self.issuer())
            .map_err(|e| PkiError::GenerateCrl(e.to_string()))?;
        Ok(crl.der().to_vec())
    }
}

/// PEM (`-----BEGIN X509 CRL-----`) for a DER CRL, as OpenSSL and most web servers expect it.
pub fn crl_pem(crl_der: &[u8]) -> String {
    pem_blocks::encode("X509 CRL", crl_der)
}

/// The magnitude bytes of a hex serial, without leading zero bytes (the CRL writes a positive
/// INTEGER, as the certificate did).
fn parse_serial_hex(serial_hex: &str) -> Result<Vec<u8>, PkiError> {
    let digits: String = serial_hex.chars().filter(|c| *c != ':').collect();
    let invalid = || {
        PkiError::InvalidArgument(format!(
            "\"{}\" is not a certificate serial number in hex",
            serial_hex.escape_debug()
        ))
    };
    if digits.is_empty() {
        return Err(invalid());
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes = hex::decode(padded).map_err(|_| invalid())?;
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let magnitude = bytes[first..].to_vec();
    if magnitude.len() > MAX_SERIAL_BYTES {
        return Err(PkiError::InvalidArgument(format!(
            "serial {serial_hex} is longer than the {MAX_SERIAL_BYTES} bytes RFC 5280 allows"
        )));
    }
    Ok(magnitude)
}

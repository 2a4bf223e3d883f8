//! Destinations, deployments and automatic renewal: the replicated half of Pattern 1.
//!
//! ```text
//!  zone policy `destinations` ─┐
//!  request `destinations` ─────┴─► certificate.deployments[i] { destination, arn, state, attempts }
//!                                        │ pending/failed, due ─► DeploymentQueue (intent)
//!        leader's deploy worker ─► ImportCertificate (to the recorded ARN) ─► verify   (effect)
//!                               ─► RecordDeployment { cert, i, attempt, outcome }      (outcome)
//!
//!  issued certificate ─► renewal { due_at } ─► RenewalQueue (intent)
//!        leader's renewal worker ─► SubmitRequest { id: renew-<cert>-<n>, renewal_of } ─► issuance
//!        the successor inherits every destination with its ARN, so the re-import goes to the same ARN
//! ```
//!
//! Every decision here is a pure function of the log: the proposer supplies the time, and the renewal
//! request id is derived from the certificate and the attempt number, so a second leader's copy of the
//! same renewal is refused as a duplicate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Most destinations one certificate (or zone) may name.
pub const MAX_DESTINATIONS: usize = 8;
/// ACM allows 50 tags per certificate; certplane keeps one for itself.
pub const MAX_DESTINATION_TAGS: usize = 49;
/// The tag certplane puts on every certificate it imports into ACM: `<lineage>.<index>`. A first
/// import whose outcome was lost is found again by it instead of being imported a second time.
pub const DEPLOYMENT_TAG: &str = "certplane:deployment";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// AWS Certificate Manager: ImportCertificate, then re-import to the same ARN on renewal.
    Acm,
}

/// Where a certificate is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(rename = "type")]
    pub kind: DestinationKind,
    /// AWS region, e.g. `eu-west-1` (CloudFront reads certificates from `us-east-1`).
    pub region: String,
    /// A role to assume for another account; absent: the node's own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// An existing ACM certificate to adopt: the first deployment re-imports to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

fn is_region(text: &str) -> bool {
    // `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`.
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() >= 3
        && parts.len() <= 4
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
        && parts[parts.len() - 1].len() <= 2
}

fn is_partition(text: &str) -> bool {
    matches!(text, "aws" | "aws-cn" | "aws-us-gov")
}

fn is_account(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// `arn:<partition>:iam::<account>:role/<path/name>` -> the account.
pub fn role_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || !is_partition(parts[1]) || parts[2] != "iam" {
        return None;
    }
    let name = parts[5].strip_prefix("role/")?;
    let name_ok = !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
    (parts[3].is_empty() && is_account(parts[4]) && name_ok).then_some(parts[4])
}

/// `arn:<partition>:acm:<region>:<account>:certificate/<id>` -> (region, account).
pub fn certificate_arn_parts(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || !is_partition(parts[1]) || parts[2] != "acm" {
        return None;
    }
    let id = parts[5].strip_prefix("certificate/")?;
    let id_ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (is_region(parts[3]) && is_account(parts[4]) && id_ok).then_some((parts[3], parts[4]))
}

fn check_tag(key: &str, value: &str) -> Result<(), String> {
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c))
    };
    if key.is_empty() || key.chars().count() > 128 || !allowed(key) {
        return Err(format!(
            "tag key {key:?} must be 1 to 128 letters, digits, spaces or _.:/=+-@"
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") || key.starts_with("certplane:") {
        return Err(format!(
            "tag key {key:?} uses a reserved prefix (aws:, certplane:)"
        ));
    }
    if value.chars().count() > 256 || !allowed(value) {
        return Err(format!(
            "tag {key:?}: the value must be at most 256 letters, digits, spaces or _.:/=+-@"
        ));
    }
    Ok(())
}

impl Destination {
    /// The first reason the destination cannot be used, checked at intake and again in `apply`.
    pub fn validate(&self) -> Result<(), String> {
        if !is_region(&self.region) {
            return Err(format!(
                "region {:?} is not an AWS region name (like eu-west-1)",
                self.region
            ));
        }
        if let Some(role) = &self.role_arn {
            if role_account(role).is_none() {
                return Err(format!(
                    "role_arn {role:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
                ));
            }
        }
        if let Some(arn) = &self.arn {
            let Some((region, account)) = certificate_arn_parts(arn) else {
                return Err(format!(
                    "arn {arn:?} is not an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)"
                ));
            };
            if region != self.region {
                return Err(format!(
                    "arn {arn:?} is in region {region}, the destination in {}",
                    self.region
                ));
            }
            if let Some(role_account) = self.role_arn.as_deref().and_then(role_account) {
                if role_account != account {
                    return Err(format!(
                        "arn {arn:?} is in account {account}, the role in {role_account}"
                    ));
                }
            }
        }
        if self.tags.len() > MAX_DESTINATION_TAGS {
            return Err(format!(
                "at most {MAX_DESTINATION_TAGS} tags per destination"
            ));
        }
        for (k, v) in &self.tags {
            check_tag(k, v)?;
        }
        Ok(())
    }

    /// The AWS account the destination is in, when its role or adopted ARN names one.
    pub fn account(&self) -> Option<String> {
        self.role_arn
            .as_deref()
            .and_then(role_account)
            .or_else(|| {
                self.arn
                    .as_deref()
                    .and_then(certificate_arn_parts)
                    .map(|p| p.1)
            })
            .map(str::to_string)
    }

    /// Two destinations are the same place when type, region and role agree.
    pub fn same_place(&self, other: &Destination) -> bool {
        self.kind == other.kind && self.region == other.region && self.role_arn == other.role_arn
    }
}

/// Every reason a list of destinations cannot be stored.
pub fn validate_destinations(list: &[Destination]) -> Result<(), String> {
    if list.len() > MAX_DESTINATIONS {
        return Err(format!("at most {MAX_DESTINATIONS} destinations"));
    }
    for (i, d) in list.iter().enumerate() {
        d.validate().map_err(|e| format!("destination {i}: {e}"))?;
        if list[..i].iter().any(|o| o.same_place(d)) {
            return Err(format!(
                "destination {i}: {} in {} is named twice",
                "acm", d.region
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Waiting for the deploy worker (its time, the zone's maintenance window, the rate limit).
    Pending,
    /// ACM serves this certificate at `arn`, verified by serial and NotAfter.
    Deployed,
    /// The last attempt failed; the worker tries again at `next_attempt_at`.
    Failed,
    /// The certificate was superseded or left management before it was deployed; its successor
    /// deploys instead.
    Cancelled,
    /// The certificate left management in a zone with `acm_cleanup`: the ACM certificate is
    /// deleted once ACM says nothing uses it.
    Deleting,
    /// The ACM certificate was deleted.
    Deleted,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Pending => "pending",
            DeploymentState::Deployed => "deployed",
            DeploymentState::Failed => "failed",
            DeploymentState::Cancelled => "cancelled",
            DeploymentState::Deleting => "deleting",
            DeploymentState::Deleted => "deleted",
        }
    }

    /// Still owed a deployment attempt (while the certificate is managed).
    pub fn is_open(self) -> bool {
        matches!(self, DeploymentState::Pending | DeploymentState::Failed)
    }

    /// The deploy worker still has something to do: deploy, or delete after retirement.
    pub fn is_queued(self, certificate_live: bool) -> bool {
        (self.is_open() && certificate_live) || self == DeploymentState::Deleting
    }
}

/// One destination of one certificate and where its deployment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub destination: Destination,
    /// The first certificate of the renewal chain: with the index, the value of [`DEPLOYMENT_TAG`].
    pub lineage: String,
    /// The ACM certificate, once known (adopted, recorded by the first import, or inherited from the
    /// certificate this one renewed). It never changes once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    pub state: DeploymentState,
    /// Outcomes recorded so far; an outcome must name `attempts + 1`.
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    /// A first import (no ARN known) was started: before importing again, look for it in ACM.
    #[serde(default)]
    pub import_started: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<Timestamp>,
    /// ACM's spelling of the serial it served when the deployment verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_serial: Option<String>,
}

impl Deployment {
    pub fn tag_value(&self, index: usize) -> String {
        format!("{}.{index}", self.lineage)
    }
}

/// What one deployment attempt came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeploymentOutcome {
    /// A first import is about to be sent; nothing is known yet.
    Importing,
    /// ACM serves the certificate at `arn` (serial and NotAfter verified).
    Deployed {
        arn: String,
        observed_serial: String,
        #[serde(default)]
        tags_restored: bool,
    },
    /// The ACM certificate of a retired certificate was deleted (or was already gone).
    Deleted,
    /// The attempt failed; `arn` is set when ACM created or named the certificate anyway.
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arn: Option<String>,
        retry_at: Timestamp,
    },
}

/// The automatic renewal of an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalSchedule {
    /// When the renewal worker submits the renewal: the zone's `renew_before` threshold, spread.
    pub due_at: Timestamp,
    /// Renewal requests submitted so far (the next one is `renew-<cert>-<attempts + 1>`).
    pub attempts: u32,
    /// The renewal request in flight; while set the certificate is not queued again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The renewal request id for attempt `attempt` of certificate `id`.
pub fn renewal_request_id(id: &str, attempt: u32) -> String {
    format!("renew-{id}-{attempt}")
}

/// When a certificate renews: `renew_before` ahead of expiry, spread by a fixed offset from the
/// certificate id of up to a tenth of the window (at most six hours), so a batch issued at once does
/// not come due at once. A certificate that lives no longer than `renew_before` would renew at once,
/// and its successor too: it renews after two thirds of its lifetime instead.
pub fn renewal_due(
    id: &str,
    not_before: Timestamp,
    not_after: Timestamp,
    renew_before_s: i64,
) -> Timestamp {
    let lifetime_ms = not_after.0.saturating_sub(not_before.0).max(0);
    let renew_ms = renew_before_s.saturating_mul(1000);
    let window_ms = if renew_ms >= lifetime_ms {
        lifetime_ms - lifetime_ms * 2 / 3
    } else {
        renew_ms
    };
    let spread_ms = (window_ms / 10).clamp(0, 6 * 3600 * 1000);
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let offset = if spread_ms > 0 {
        (h % spread_ms as u64) as i64
    } else {
        0
    };
    Timestamp(not_after.0.saturating_sub(window_ms).saturating_add(offset))
}

/// Back-off after `attempts` failed renewals or deployments: 30 s doubling, at most an hour.
pub fn backoff_ms(attempts: u32) -> i64 {
    let exp = attempts.saturating_sub(1).min(7);
    (30_000i64 << exp).min(3_600_000)
}

/// A daily UTC maintenance window, `HH:MM-HH:MM` (it may wrap past midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_min: u32,
    pub end_min: u32,
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = || format!("window {text:?} is not HH:MM-HH:MM (UTC)");
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let minutes = |s: &str| -> Option<u32> {
            let (h, m) = s.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start_min, end_min) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start_min == end_min {
            return Err(format!("window {text:?} is empty"));
        }
        Ok(Window { start_min, end_min })
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        let minute = (at.0.rem_euclid(86_400_000) / 60_000) as u32;
        if self.start_min < self.end_min {
            minute >= self.start_min && minute < self.end_min
        } else {
            minute >= self.start_min || minute < self.end_min
        }
    }

    /// The next time at or after `at` that the window is open.
    pub fn next_open(&self, at: Timestamp) -> Timestamp {
        if self.contains(at) {
            return at;
        }
        let day_start = at.0 - at.0.rem_euclid(86_400_000);
        let mut open = day_start + i64::from(self.start_min) * 60_000;
        if open < at.0 {
            open += 86_400_000;
        }
        Timestamp(open)
    }
}

/// Open now, when no window is configured or one of them contains `at`.
pub fn windows_open(windows: &[String], at: Timestamp) -> bool {
    windows.is_empty()
        || windows
            .iter()
            .filter_map(|w| Window::parse(w).ok())
            .any(|w| w.contains(at))
}

/// When the windows next open (`at` itself when open now).
pub fn windows_next_open(windows: &[String], at: Timestamp) -> Timestamp {
    if windows_open(windows, at) {
        return at;
    }
    windows
        .iter()
        .filter_map(|w| Window::parse(w).ok())
        .map(|w| w.next_open(at))
        .min()
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acm(region: &str) -> Destination {
        Destination {
            kind: DestinationKind::Acm,
            region: region.into(),
            role_arn: None,
            arn: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn destinations_are_checked() {
        assert!(acm("eu-west-1").validate().is_ok());
        assert!(acm("us-gov-west-1").validate().is_ok());
        for bad in ["", "eu-west", "EU-WEST-1", "eu-west-1a", "x-y-1", "eu--1"] {
            assert!(acm(bad).validate().is_err(), "{bad}");
        }
        let mut d = acm("eu-west-1");
        d.role_arn = Some("arn:aws:iam::123456789012:role/certplane-deployer".into());
        assert!(d.validate().is_ok());
        assert_eq!(d.account().as_deref(), Some("123456789012"));
        d.arn = Some("arn:aws:acm:eu-west-1:210987654321:certificate/abc-123".into());
        assert!(d.validate().unwrap_err().contains("account"));
        d.arn = Some("arn:aws:acm:us-east-1:123456789012:certificate/abc-123".into());
        assert!(d.validate().unwrap_err().contains("region"));
        d.arn = Some("arn:aws:acm:eu-west-1:123456789012:certificate/abc-123".into());
        assert!(d.validate().is_ok());
        d.role_arn = Some("arn:aws:iam::12345:role/x".into());
        assert!(d.validate().is_err());
        let mut t = acm("eu-west-1");
        t.tags.insert("aws:owner".into(), "x".into());
        assert!(t.validate().is_err());
        t.tags.clear();
        t.tags.insert("certplane:deployment".into(), "x".into());
        assert!(t.validate().is_err());
        t.tags.clear();
        t.tags.insert("team".into(), "pay;ments".into());
        assert!(t.validate().is_err());
        assert!(validate_destinations(&[acm("eu-west-1"), acm("eu-west-1")]).is_err());
        assert!(validate_destinations(&[acm("eu-west-1"), acm("us-east-1")]).is_ok());
    }

    #[test]
    fn renewals_spread_within_a_tenth_of_the_window() {
        let not_after = Timestamp(1_000_000_000_000);
        let window = 30 * 86_400;
        let not_before = Timestamp(not_after.0 - 90 * 86_400_000);
        let mut dues: Vec<i64> = (0..200)
            .map(|i| renewal_due(&format!("c{i}"), not_before, not_after, window).0)
            .collect();
        let start = not_after.0 - window * 1000;
        assert!(dues
            .iter()
            .all(|d| *d >= start && *d < start + 6 * 3600 * 1000));
        dues.sort();
        dues.dedup();
        assert!(dues.len() > 190, "spread: {} distinct", dues.len());
        // Deterministic.
        assert_eq!(
            renewal_due("c1", not_before, not_after, window),
            renewal_due("c1", not_before, not_after, window)
        );
        // Shorter-lived than the window: renewed in the last third of its life, not at once.
        let short_start = Timestamp(not_after.0 - 600_000);
        let due = renewal_due("c1", short_start, not_after, 1800);
        assert!(
            due.0 >= short_start.0 + 400_000 && due.0 < not_after.0,
            "{due:?}"
        );
    }

    #[test]
    fn windows_open_and_wrap() {
        let w = Window::parse("22:00-02:00").unwrap();
        let at = |h: i64, m: i64| Timestamp(86_400_000 * 100 + h * 3_600_000 + m * 60_000);
        assert!(w.contains(at(23, 0)));
        assert!(w.contains(at(1, 59)));
        assert!(!w.contains(at(2, 0)));
        assert_eq!(w.next_open(at(12, 0)), at(22, 0));
        let d = Window::parse("02:00-04:00").unwrap();
        assert_eq!(d.next_open(at(5, 0)), Timestamp(at(2, 0).0 + 86_400_000));
        assert!(Window::parse("2:00-04:00").is_err());
        assert!(Window::parse("02:00-02:00").is_err());
        assert!(Window::parse("24:00-02:00").is_err());
        assert!(windows_open(&[], at(3, 0)));
        assert_eq!(
            windows_next_open(&["02:00-04:00".into()], at(1, 0)),
            at(2, 0)
        );
    }

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff_ms(1), 30_000);
        assert_eq!(backoff_ms(2), 60_000);
        assert_eq!(backoff_ms(30), 3_600_000);
    }
}

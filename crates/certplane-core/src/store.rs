//! The storage the state machine runs over.
//!
//! `apply` sees the state as named keyspaces of ordered byte keys. The RocksDB adapter maps each
//! keyspace to a column family; [`MemStore`] maps them to B-trees for tests. Writes made during one
//! apply batch must be visible to later reads in the same batch (read-your-writes), which both
//! implementations guarantee.

use std::collections::BTreeMap;

/// One ordered keyspace of the state machine. The names are the RocksDB column family names and are
/// part of the persisted format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keyspace {
    /// certificate id -> CertificateRecord
    Certificates,
    /// fingerprint -> certificate id
    ByFingerprint,
    /// not_after (8 bytes BE, offset) ++ id -> ()
    ByExpiry,
    /// owner ++ 0 ++ id -> ()
    ByOwner,
    /// zone ++ 0 ++ id -> ()
    ByZone,
    /// lowercased issuer ++ 0 ++ id -> ()
    ByIssuer,
    /// status ++ 0 ++ id -> ()
    ByStatus,
    /// name trigram ++ 0 ++ id -> (), for substring search over CN and SANs
    ByNameTrigram,
    /// token id -> TokenRecord
    Tokens,
    /// secret sha256 -> token id
    TokenBySecret,
    /// sequence (8 bytes BE) -> AuditRecord
    Audit,
    /// idempotency scope ++ 0 ++ key -> stored answer
    Idempotency,
    /// small singletons: initialisation, audit head, state digest, counters
    Meta,
    /// zone path -> ZoneRecord (the current policy of each zone)
    Zones,
    /// zone path ++ 0 ++ version (8 bytes BE) -> ZoneRecord: every policy version ever stored
    ZoneHistory,
    /// request id -> RequestRecord
    Requests,
    /// "state" or "zone" or "owner" ++ 0 ++ value ++ 0 ++ request id -> ()
    RequestIndex,
    /// request id -> (): approved requests whose certificate the leader still has to issue (intents)
    IssuanceQueue,
    /// issuer name -> IssuerRecord
    Issuers,
    /// issuer name ++ 0 ++ serial hex -> IssuedSerial: the CA's record of every serial it issued
    IssuedSerials,
    /// issuer name ++ 0 ++ serial hex -> RevocationRecord: what the issuer's CRL lists
    Revocations,
    /// webhook id -> WebhookRecord
    Webhooks,
    /// delivery id -> DeliveryRecord (every delivery, with its outcome)
    Deliveries,
    /// delivery id -> (): deliveries the leader still has to make (intents)
    DeliveryQueue,
    /// webhook id ++ 0 ++ delivery id -> (): a subscription's deliveries
    DeliveriesByWebhook,
    /// due_at (8 bytes BE, offset) ++ certificate id ++ 0 ++ threshold -> (): expiry notices to send
    NoticeQueue,
    /// next attempt (8 bytes BE, offset) ++ certificate id ++ 0 ++ destination index -> (): open
    /// deployments (intents)
    DeploymentQueue,
    /// due_at (8 bytes BE, offset) ++ certificate id -> (): certificates the renewal worker renews
    RenewalQueue,
    /// "revoke" ++ 0 ++ certificate id -> (): AWS Private CA revocations the leader still has to
    /// make (intents)
    AwsQueue,
}

impl Keyspace {
    pub const ALL: [Keyspace; 29] = [
        Keyspace::Certificates,
        Keyspace::ByFingerprint,
        Keyspace::ByExpiry,
        Keyspace::ByOwner,
        Keyspace::ByZone,
        Keyspace::ByIssuer,
        Keyspace::ByStatus,
        Keyspace::ByNameTrigram,
        Keyspace::Tokens,
        Keyspace::TokenBySecret,
        Keyspace::Audit,
        Keyspace::Idempotency,
        Keyspace::Meta,
        Keyspace::Zones,
        Keyspace::ZoneHistory,
        Keyspace::Requests,
        Keyspace::RequestIndex,
        Keyspace::IssuanceQueue,
        Keyspace::Issuers,
        Keyspace::IssuedSerials,
        Keyspace::Revocations,
        Keyspace::Webhooks,
        Keyspace::Deliveries,
        Keyspace::DeliveryQueue,
        Keyspace::DeliveriesByWebhook,
        Keyspace::NoticeQueue,
        Keyspace::DeploymentQueue,
        Keyspace::RenewalQueue,
        Keyspace::AwsQueue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Certificates => "sm_certificates",
            Keyspace::ByFingerprint => "sm_by_fingerprint",
            Keyspace::ByExpiry => "sm_by_expiry",
            Keyspace::ByOwner => "sm_by_owner",
            Keyspace::ByZone => "sm_by_zone",
            Keyspace::ByIssuer => "sm_by_issuer",
            Keyspace::ByStatus => "sm_by_status",
            Keyspace::ByNameTrigram => "sm_by_name_trigram",
            Keyspace::Tokens => "sm_tokens",
            Keyspace::TokenBySecret => "sm_token_by_secret",
            Keyspace::Audit => "sm_audit",
            Keyspace::Idempotency => "sm_idempotency",
            Keyspace::Meta => "sm_meta",
            Keyspace::Zones => "sm_zones",
            Keyspace::ZoneHistory => "sm_zone_history",
            Keyspace::Requests => "sm_requests",
            Keyspace::RequestIndex => "sm_request_index",
            Keyspace::IssuanceQueue => "sm_issuance_queue",
            Keyspace::Issuers => "sm_issuers",
            Keyspace::IssuedSerials => "sm_issued_serials",
            Keyspace::Revocations => "sm_revocations",
            Keyspace::Webhooks => "sm_webhooks",
            Keyspace::Deliveries => "sm_deliveries",
            Keyspace::DeliveryQueue => "sm_delivery_queue",
            Keyspace::DeliveriesByWebhook => "sm_deliveries_by_webhook",
            Keyspace::NoticeQueue => "sm_notice_queue",
            Keyspace::DeploymentQueue => "sm_deployment_queue",
            Keyspace::RenewalQueue => "sm_renewal_queue",
            Keyspace::AwsQueue => "sm_aws_queue",
        }
    }

    pub fn from_name(name: &str) -> Option<Keyspace> {
        Keyspace::ALL.into_iter().find(|ks| ks.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O: {0}")]
    Io(String),
}

pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Read access to the state. `scan` yields keys in `[from, to)` in ascending order (`to` empty means
/// unbounded), at most `limit` of them.
pub trait StateRead {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Like `scan`, newest first: keys in `[from, to)` in descending order.
    fn scan_rev(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// How many keys `[from, to)` holds, counting at most `limit`. Stores override it to count
    /// without copying keys or values (metrics count whole index ranges).
    fn count(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<usize, StoreError> {
        Ok(self.scan(ks, from, to, limit)?.len())
    }
}

/// Read and write access, as `apply` needs it.
pub trait StateStore: StateRead {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]);
    fn delete(&mut self, ks: Keyspace, key: &[u8]);
}

/// The upper bound of all keys starting with `prefix` (empty when there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// An in-memory store for unit and property tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStore {
    data: BTreeMap<Keyspace, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every (keyspace, key, value), in order: lets tests compare two stores.
    pub fn dump(&self) -> Vec<(Keyspace, Vec<u8>, Vec<u8>)> {
        self.data
            .iter()
            .flat_map(|(ks, m)| m.iter().map(move |(k, v)| (*ks, k.clone(), v.clone())))
            .collect()
    }

    fn range<'a>(
        &'a self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
    ) -> Box<dyn DoubleEndedIterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a> {
        use std::ops::Bound;
        let Some(map) = self.data.get(&ks) else {
            return Box::new(std::iter::empty());
        };
        let upper = if to.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(to.to_vec())
        };
        Box::new(map.range::<Vec<u8>, _>((Bound::Included(from.to_vec()), upper)))
    }
}

impl StateRead for MemStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data.get(&ks).and_then(|m| m.get(key)).cloned())
    }

    fn scan(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self
            .range(ks, from, to)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_rev(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self
            .range(ks, from, to)
            .rev()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl StateStore for MemStore {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.data
            .entry(ks)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        if let Some(m) = self.data.get_mut(&ks) {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_rolls_over_max_bytes() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 255]), vec![2]);
        assert_eq!(prefix_end(&[255, 255]), Vec::<u8>::new());
    }

    #[test]
    fn keyspace_names_round_trip() {
        for ks in Keyspace::ALL {
            assert_eq!(Keyspace::from_name(ks.name()), Some(ks));
        }
    }
}

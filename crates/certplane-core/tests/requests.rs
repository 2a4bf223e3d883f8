//! State machine tests for zones, certificate requests, issuance outcomes and revocation, over the
//! in-memory store: no I/O, no runtime. Every proposal round-trips through the log encoding first.

use std::collections::{BTreeMap, BTreeSet};

use certplane_core::apply::{
    counts, get_certificate, get_issuer, get_request, state_digest, track_key, ISSUANCE_WORKER,
    TRACK_PREFIX,
};
use certplane_core::audit::verify_chain;
use certplane_core::certificate::{IssuanceLink, RevocationReason};
use certplane_core::command::{
    AcmRenewed, CompleteIssuance, DecideApproval, PutZone, RecordAcmCheck, SubmitRequest,
};
use certplane_core::issuer::{
    AcmPcaSettings, IssuedSerial, IssuerKind, IssuerRecord, PcaMode, RevocationRecord,
};
use certplane_core::keys::{decode_record, index_key, index_prefix, meta};
use certplane_core::names::{normalize_san, San};
use certplane_core::policy::{KeyFacts, KeyType, Span, ZonePolicy};
use certplane_core::request::{
    aws_idempotency_token, Decision, KeySource, KeySpec, RequestRecord, RequestSpec, RequestState,
};
use certplane_core::store::prefix_end;
use certplane_core::zone::{get_zone, history_key, ZoneRecord};
use certplane_core::{
    Applied, CertificateDetails, CertificateRecord, CertificateStatus, Command, EncryptedKey,
    ImportCertificate, Keyspace, MemStore, Outcome, Principal, Proposal, RejectCode, Rejection,
    Role, StateRead, Timestamp,
};
use proptest::prelude::*;

mod support;
use support::{admin, Log};

// ---------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------

fn who(id: &str, roles: &[Role], zones: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        name: id.into(),
        roles: roles.to_vec(),
        zones: zones.iter().map(|z| z.to_string()).collect(),
        ..Principal::default()
    }
}

/// The principal the leader's issuance worker proposes outcomes as.
fn worker() -> Principal {
    Principal {
        id: ISSUANCE_WORKER.into(),
        name: "issuance worker".into(),
        roles: vec![Role::Admin],
        zones: vec![],
        ..Principal::default()
    }
}

fn sealed(tag: &str) -> EncryptedKey {
    EncryptedKey {
        v: 1,
        algorithm: "aes-256-gcm".into(),
        kek_id: "kek-1".into(),
        wrapped_data_key: format!("wrapped-{tag}"),
        sealed_key: format!("sealed-{tag}"),
    }
}

/// An issuer as a proposer would send it, with counters that `apply` must not trust.
fn issuer(name: &str) -> IssuerRecord {
    IssuerRecord {
        name: name.into(),
        kind: IssuerKind::Builtin,
        subject: format!("CN={name} CA"),
        ca_cert_pem: format!("-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n"),
        chain_pem: format!("-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n"),
        key: Some(sealed(name)),
        key_algorithm: "EC".into(),
        not_after: Timestamp(i64::MAX / 2),
        imported: false,
        created_at: Timestamp(1),
        created_by: "system:init".into(),
        issued_count: 7,
        revoked_count: 3,
        crl_number: 5,
        revision: 99,
        acm_pca: None,
    }
}

/// A zone policy from JSON, in canonical form.
fn policy(json: &str) -> ZonePolicy {
    let raw: ZonePolicy = serde_json::from_str(json).expect("policy JSON");
    raw.normalized().expect("valid policy")
}

fn put(path: &str, policy: ZonePolicy, expected_version: Option<u64>) -> Command {
    Command::PutZone(Box::new(PutZone {
        path: path.into(),
        policy,
        expected_version,
    }))
}

fn san(name: &str) -> San {
    normalize_san(name).expect("valid SAN")
}

/// A compliant request for the default policy: the first name is the CN, ECDSA P-256, 90 days.
fn spec(zone: &str, names: &[&str]) -> RequestSpec {
    RequestSpec {
        zone: zone.into(),
        common_name: names.first().map(|n| n.to_string()),
        sans: names.iter().map(|n| san(n)).collect(),
        key: KeySource::Generate {
            spec: KeySpec::EcdsaP256,
        },
        key_facts: KeyFacts {
            algorithm: KeyType::EcdsaP256,
            bits: 256,
        },
        validity: Span::days(90),
        issuer: None,
        owner: Some("team-a".into()),
        tags: BTreeMap::from([("env".to_string(), "test".to_string())]),
        renewal_of: None,
        destinations: None,
    }
}

fn submit(id: &str, spec: RequestSpec) -> Command {
    Command::SubmitRequest(Box::new(SubmitRequest {
        id: id.into(),
        spec,
        presigned: None,
    }))
}

fn cert_id(n: u32) -> String {
    format!("crt_{n:024x}")
}

/// What the worker read back from the certificate it signed for `request`: exactly the approved
/// names and validity; `n` picks the serial and fingerprint.
fn issued_details(request: &RequestRecord, n: u32) -> CertificateDetails {
    CertificateDetails {
        fingerprint_sha256: format!("{n:064x}"),
        subject: request
            .spec
            .common_name
            .as_ref()
            .map_or(String::new(), |cn| format!("CN={cn}")),
        common_name: request.spec.common_name.clone(),
        issuer: "CN=builtin CA".into(),
        serial: format!("{n:x}"),
        sans: request.spec.sans.iter().map(San::to_string).collect(),
        not_before: Timestamp(0),
        not_after: Timestamp(request.spec.validity.millis()),
        key_algorithm: "EC".into(),
        key_bits: 256,
        signature_algorithm: "ecdsa-with-SHA256".into(),
        is_ca: false,
        self_signed: false,
    }
}

fn complete_with(
    request_id: &str,
    generation: u64,
    certificate_id: String,
    details: CertificateDetails,
) -> Command {
    Command::CompleteIssuance(Box::new(CompleteIssuance {
        request_id: request_id.into(),
        generation,
        certificate_id,
        chain_pem: format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            details.serial
        ),
        details,
        private_key: Some(sealed(request_id)),
        aws_request_id: None,
    }))
}

fn complete(request: &RequestRecord, n: u32) -> Command {
    complete_with(
        &request.id,
        request.generation,
        cert_id(n),
        issued_details(request, n),
    )
}

fn fail(request_id: &str, generation: u64) -> Command {
    Command::FailIssuance {
        request_id: request_id.into(),
        generation,
        error: "the issuer refused to sign".into(),
    }
}

fn revoke(id: &str, reason: RevocationReason) -> Command {
    Command::RevokeCertificate {
        id: id.into(),
        reason,
    }
}

impl Log {
    /// Initialised with the built-in issuer `builtin`.
    fn initialized() -> Self {
        Log::init(Some(issuer("builtin")))
    }

    /// Propose as admin and expect success.
    fn ok(&mut self, command: Command) -> Applied {
        let out = self.propose(admin(), command);
        match out.result {
            Ok(applied) => applied,
            Err(r) => panic!("refused: {r:?}"),
        }
    }

    fn zone(&mut self, path: &str, json: &str) -> ZoneRecord {
        match self.ok(put(path, policy(json), None)) {
            Applied::ZoneStored { zone } => *zone,
            other => panic!("{other:?}"),
        }
    }

    /// Submit as admin and expect the request to be approved.
    fn approved(&mut self, id: &str, spec: RequestSpec) -> RequestRecord {
        let request = recorded(&self.propose(admin(), submit(id, spec)));
        assert_eq!(request.state, RequestState::Approved, "{request:?}");
        request
    }

    /// Complete an approved request as the worker and return the certificate.
    fn issue(&mut self, request: &RequestRecord, n: u32) -> CertificateRecord {
        let out = self.propose(worker(), complete(request, n));
        let updated = updated(&out);
        assert_eq!(updated.state, RequestState::Issued);
        certificate(&self.store, updated.certificate_id.as_deref().unwrap())
    }
}

fn code(out: &Outcome) -> Option<RejectCode> {
    out.result.as_ref().err().map(|r| r.code)
}

fn rejection(out: &Outcome) -> &Rejection {
    match &out.result {
        Err(r) => r,
        Ok(applied) => panic!("expected a rejection, got {applied:?}"),
    }
}

fn recorded(out: &Outcome) -> RequestRecord {
    match &out.result {
        Ok(Applied::RequestRecorded { request }) => (**request).clone(),
        other => panic!("expected RequestRecorded, got {other:?}"),
    }
}

fn updated(out: &Outcome) -> RequestRecord {
    match &out.result {
        Ok(Applied::RequestUpdated { request }) => (**request).clone(),
        other => panic!("expected RequestUpdated, got {other:?}"),
    }
}

fn request(store: &MemStore, id: &str) -> RequestRecord {
    get_request(store, id).unwrap().expect("request stored")
}

fn certificate(store: &MemStore, id: &str) -> CertificateRecord {
    get_certificate(store, id)
        .unwrap()
        .expect("certificate stored")
}

/// Every key of a keyspace (below `prefix`).
fn keys_of(store: &MemStore, ks: Keyspace, prefix: &[u8]) -> Vec<Vec<u8>> {
    store
        .scan(ks, prefix, &prefix_end(prefix), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// The request ids in the issuance queue, in queue order.
fn queue(store: &MemStore) -> Vec<String> {
    store
        .scan(Keyspace::IssuanceQueue, b"", b"", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect()
}

/// Every record of a keyspace, decoded, in key order.
fn records<T: serde::de::DeserializeOwned>(
    store: &MemStore,
    ks: Keyspace,
    what: &'static str,
) -> Vec<T> {
    store
        .scan(ks, b"", b"", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, v)| decode_record(what, &v).unwrap())
        .collect()
}

fn all_requests(store: &MemStore) -> Vec<RequestRecord> {
    records(store, Keyspace::Requests, "request")
}

fn all_certificates(store: &MemStore) -> Vec<CertificateRecord> {
    records(store, Keyspace::Certificates, "certificate")
}

/// The request-index `state` entries naming `id`.
fn indexed_states(store: &MemStore, id: &str) -> Vec<String> {
    RequestState::ALL
        .into_iter()
        .filter(|s| {
            store
                .get(
                    Keyspace::RequestIndex,
                    &index_key(&format!("state\0{}", s.as_str()), id),
                )
                .unwrap()
                .is_some()
        })
        .map(|s| s.as_str().to_string())
        .collect()
}

fn zone_history(store: &MemStore, path: &str) -> Vec<ZoneRecord> {
    store
        .scan(
            Keyspace::ZoneHistory,
            &index_prefix(path),
            &prefix_end(&index_prefix(path)),
            usize::MAX,
        )
        .unwrap()
        .into_iter()
        .map(|(_, v)| decode_record("zone", &v).unwrap())
        .collect()
}

/// The state without the bookkeeping every entry advances (audit chain, its head, the digest): what
/// a rejected command must leave untouched.
fn domain_state(store: &MemStore) -> Vec<(Keyspace, Vec<u8>, Vec<u8>)> {
    store
        .dump()
        .into_iter()
        .filter(|(ks, key, _)| {
            *ks != Keyspace::Audit
                && !(*ks == Keyspace::Meta
                    && (key.as_slice() == meta::AUDIT_HEAD || key.as_slice() == meta::STATE_DIGEST))
        })
        .collect()
}

/// Propose, expect `code`, and check the command changed nothing but the audit log.
fn refused(log: &mut Log, actor: Principal, command: Command, expected: RejectCode) -> Rejection {
    let before = domain_state(&log.store);
    let out = log.propose(actor, command);
    assert_eq!(code(&out), Some(expected), "{out:?}");
    assert_eq!(
        domain_state(&log.store),
        before,
        "a refused {expected:?} changed state"
    );
    rejection(&out).clone()
}

fn violation_triples(
    violations: &[certplane_core::policy::Violation],
) -> BTreeSet<(String, String, String)> {
    violations
        .iter()
        .map(|v| (v.rule.clone(), v.zone.clone(), v.value.clone()))
        .collect()
}

fn triple(rule: &str, zone: &str, value: &str) -> (String, String, String) {
    (rule.into(), zone.into(), value.into())
}

// ---------------------------------------------------------------------------------------------------
// 1. Initialisation
// ---------------------------------------------------------------------------------------------------

#[test]
fn initialize_creates_root_zone_at_version_1_and_stores_the_builtin_issuer() {
    let log = Log::initialized();
    let root = get_zone(&log.store, "/").unwrap().expect("root zone");
    assert_eq!(root.path, "/");
    assert_eq!(root.version, 1);
    assert_eq!(root.policy, ZonePolicy::default());
    assert_eq!(root.updated_by, Principal::bootstrap().id);
    assert_eq!(root.revision, 1);
    let history = zone_history(&log.store, "/");
    assert_eq!(history, vec![root.clone()]);
    let at_v1: ZoneRecord = decode_record(
        "zone",
        &log.store
            .get(Keyspace::ZoneHistory, &history_key("/", 1))
            .unwrap()
            .expect("history v1"),
    )
    .unwrap();
    assert_eq!(at_v1, root);

    let stored = get_issuer(&log.store, "builtin").unwrap().expect("issuer");
    let sent = issuer("builtin");
    // Counters are reset: the proposer's are never trusted.
    assert_eq!(
        (stored.issued_count, stored.revoked_count, stored.crl_number),
        (0, 0, 0)
    );
    assert_eq!(stored.revision, 1);
    assert_eq!(
        IssuerRecord {
            issued_count: sent.issued_count,
            revoked_count: sent.revoked_count,
            crl_number: sent.crl_number,
            revision: sent.revision,
            ..stored
        },
        sent
    );
}

#[test]
fn initialize_without_an_issuer_leaves_requests_without_one() {
    let mut log = Log::init(None);
    assert_eq!(get_zone(&log.store, "/").unwrap().unwrap().version, 1);
    assert!(get_issuer(&log.store, "builtin").unwrap().is_none());
    let out = log.propose(admin(), submit("req_1", spec("/", &["a.corp.example"])));
    let r = rejection(&out);
    assert_eq!(r.code, RejectCode::PolicyViolation);
    assert_eq!(
        violation_triples(&r.violations),
        BTreeSet::from([triple("issuer", "(system)", "builtin")])
    );
    // An admin may add the issuer afterwards; proposer counters are reset there too.
    assert!(matches!(
        log.ok(Command::CreateIssuer(Box::new(issuer("builtin")))),
        Applied::IssuerCreated { .. }
    ));
    assert_eq!(
        get_issuer(&log.store, "builtin")
            .unwrap()
            .unwrap()
            .issued_count,
        0
    );
    log.approved("req_2", spec("/", &["a.corp.example"]));
}

#[test]
fn create_issuer_is_admin_only_and_names_are_unique() {
    let mut log = Log::initialized();
    refused(
        &mut log,
        who("tok_zo", &[Role::ZoneOwner], &[]),
        Command::CreateIssuer(Box::new(issuer("other"))),
        RejectCode::Forbidden,
    );
    refused(
        &mut log,
        who("tok_scoped_admin", &[Role::Admin], &["/prod"]),
        Command::CreateIssuer(Box::new(issuer("other"))),
        RejectCode::Forbidden,
    );
    refused(
        &mut log,
        admin(),
        Command::CreateIssuer(Box::new(issuer("builtin"))),
        RejectCode::Conflict,
    );
    log.ok(Command::CreateIssuer(Box::new(issuer("other"))));
    assert!(get_issuer(&log.store, "other").unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------------
// 2. Zones
// ---------------------------------------------------------------------------------------------------

#[test]
fn put_zone_requires_a_canonical_path_and_an_existing_parent() {
    let mut log = Log::initialized();
    for bad in [
        "prod", "/prod/", "/Prod", "", " /prod", "/a//b", "/a b", "//",
    ] {
        let r = refused(
            &mut log,
            admin(),
            put(bad, ZonePolicy::default(), None),
            RejectCode::InvalidArgument,
        );
        assert!(!r.message.is_empty(), "{bad:?}");
    }
    let r = refused(
        &mut log,
        admin(),
        put("/prod/payments", ZonePolicy::default(), None),
        RejectCode::NotFound,
    );
    assert!(r.message.contains("/prod"), "{r:?}");
    assert!(get_zone(&log.store, "/prod/payments").unwrap().is_none());

    let prod = log.zone("/prod", "{}");
    assert_eq!((prod.path.as_str(), prod.version), ("/prod", 1));
    let payments = log.zone("/prod/payments", "{}");
    assert_eq!(payments.version, 1);
    // Three levels down needs the middle one.
    refused(
        &mut log,
        admin(),
        put("/dev/x/y", ZonePolicy::default(), None),
        RejectCode::NotFound,
    );
    // The root itself can be changed.
    let root = log.zone("/", r#"{"max_sans":{"value":10}}"#);
    assert_eq!(root.version, 2);
}

#[test]
fn put_zone_expected_version_guards_against_lost_updates() {
    let mut log = Log::initialized();
    // Version 0 means "does not exist yet".
    let created = log.ok(put("/prod", policy(r#"{"max_sans":{"value":5}}"#), Some(0)));
    let Applied::ZoneStored { zone } = created else {
        panic!()
    };
    assert_eq!(zone.version, 1);
    let r = refused(
        &mut log,
        admin(),
        put("/prod", policy(r#"{"max_sans":{"value":6}}"#), Some(0)),
        RejectCode::StaleGeneration,
    );
    assert!(r.message.contains("version 1"), "{r:?}");
    refused(
        &mut log,
        admin(),
        put("/prod", policy(r#"{"max_sans":{"value":6}}"#), Some(2)),
        RejectCode::StaleGeneration,
    );
    let Applied::ZoneStored { zone } =
        log.ok(put("/prod", policy(r#"{"max_sans":{"value":6}}"#), Some(1)))
    else {
        panic!()
    };
    assert_eq!(zone.version, 2);
    // Without a guard the write goes ahead.
    let Applied::ZoneStored { zone } =
        log.ok(put("/prod", policy(r#"{"max_sans":{"value":7}}"#), None))
    else {
        panic!()
    };
    assert_eq!(zone.version, 3);
    // The root is at version 1 after initialisation.
    refused(
        &mut log,
        admin(),
        put("/", ZonePolicy::default(), Some(0)),
        RejectCode::StaleGeneration,
    );
    assert!(log
        .propose(
            admin(),
            put("/", policy(r#"{"max_sans":{"value":9}}"#), Some(1))
        )
        .result
        .is_ok());
}

#[test]
fn put_zone_versions_each_change_and_keeps_history_but_not_for_identical_policies() {
    let mut log = Log::initialized();
    let p1 = policy(r#"{"allowed_domains":{"value":[".corp.example"]}}"#);
    let p2 = policy(r#"{"allowed_domains":{"value":[".corp.example", "corp.example"]}}"#);
    let v1 = match log.ok(put("/prod", p1.clone(), None)) {
        Applied::ZoneStored { zone } => *zone,
        other => panic!("{other:?}"),
    };
    assert_eq!(v1.version, 1);
    assert_eq!(v1.updated_by, "tok_root");

    // The identical policy again: same record, same version, no history entry, nothing changed.
    for expected in [None, Some(1)] {
        let before = domain_state(&log.store);
        let again = log.ok(put("/prod", p1.clone(), expected));
        assert_eq!(
            again,
            Applied::ZoneStored {
                zone: Box::new(v1.clone())
            }
        );
        assert_eq!(domain_state(&log.store), before);
    }
    assert_eq!(zone_history(&log.store, "/prod"), vec![v1.clone()]);

    let v2 = match log.ok(put("/prod", p2.clone(), None)) {
        Applied::ZoneStored { zone } => *zone,
        other => panic!("{other:?}"),
    };
    assert_eq!(v2.version, 2);
    assert_eq!(v2.policy, p2);
    assert!(v2.revision > v1.revision);
    // Changing back is a change too.
    let v3 = match log.ok(put("/prod", p1.clone(), None)) {
        Applied::ZoneStored { zone } => *zone,
        other => panic!("{other:?}"),
    };
    assert_eq!(v3.version, 3);
    assert_eq!(get_zone(&log.store, "/prod").unwrap().unwrap(), v3);
    assert_eq!(
        zone_history(&log.store, "/prod"),
        vec![v1.clone(), v2.clone(), v3.clone()]
    );
    for z in [&v1, &v2, &v3] {
        let bytes = log
            .store
            .get(Keyspace::ZoneHistory, &history_key("/prod", z.version))
            .unwrap()
            .expect("history entry");
        assert_eq!(&decode_record::<ZoneRecord>("zone", &bytes).unwrap(), z);
    }
    // A child zone's history is its own.
    log.zone("/prod/payments", "{}");
    assert_eq!(zone_history(&log.store, "/prod").len(), 3);
    assert_eq!(zone_history(&log.store, "/prod/payments").len(), 1);
}

#[test]
fn put_zone_refuses_fields_an_ancestor_locked_naming_the_locking_zone() {
    let mut log = Log::initialized();
    log.zone(
        "/",
        r#"{"max_validity":{"value":"90d","locked":true},
            "rules":[{"name":"corp","expression":"request.sans.all(s, s.endsWith(\".corp.example\"))","message":"corp names only","locked":true}]}"#,
    );
    log.zone(
        "/prod",
        r#"{"allow_wildcards":{"value":false,"locked":true}}"#,
    );

    let r = refused(
        &mut log,
        admin(),
        put("/prod", policy(r#"{"max_validity":{"value":"30d"}}"#), None),
        RejectCode::PolicyViolation,
    );
    assert_eq!(
        violation_triples(&r.violations),
        BTreeSet::from([triple("max_validity", "/", "\"30d\"")])
    );

    let r = refused(
        &mut log,
        admin(),
        put(
            "/prod/payments",
            policy(
                r#"{"max_validity":{"value":"200d"},
                    "allow_wildcards":{"value":true},
                    "rules":[{"name":"corp","expression":"true","message":"anything goes"}]}"#,
            ),
            None,
        ),
        RejectCode::PolicyViolation,
    );
    assert_eq!(r.violations.len(), 3, "{r:?}");
    assert_eq!(
        violation_triples(&r.violations),
        BTreeSet::from([
            triple("max_validity", "/", "\"200d\""),
            triple("allow_wildcards", "/prod", "true"),
            triple("rule:corp", "/", "true"),
        ])
    );
    for v in &r.violations {
        assert!(v.message.contains(&v.zone), "{v:?}");
    }
    assert!(get_zone(&log.store, "/prod/payments").unwrap().is_none());

    // Restating a locked value, or adding an unlocked field or a new rule, is allowed.
    log.zone(
        "/prod/payments",
        r#"{"max_validity":{"value":"90d"},"allow_wildcards":{"value":false},"max_sans":{"value":3},
            "rules":[{"name":"short","expression":"request.validity_days <= 90","message":"90 days at most"}]}"#,
    );
    // A zone never locks itself out: the root may change its own lock.
    log.zone("/", r#"{"max_validity":{"value":"60d","locked":true}}"#);
}

#[test]
fn put_zone_refuses_more_rules_in_force_than_are_evaluated() {
    let mut log = Log::initialized();
    let rules = |prefix: &str| -> String {
        let list: Vec<String> = (0..30)
            .map(|i| format!(r#"{{"name":"{prefix}{i}","expression":"true","message":"m"}}"#))
            .collect();
        format!(r#"{{"rules":[{}]}}"#, list.join(","))
    };
    log.zone("/a", &rules("a"));
    log.zone("/a/b", &rules("b"));
    let r = refused(
        &mut log,
        admin(),
        put("/a/b/c", policy(&rules("c")), None),
        RejectCode::InvalidArgument,
    );
    assert!(r.message.contains("90 custom rules"), "{}", r.message);
    assert!(get_zone(&log.store, "/a/b/c").unwrap().is_none());
}

#[test]
fn put_zone_refuses_non_canonical_or_invalid_policies() {
    let mut log = Log::initialized();
    let raw = |json: &str| -> ZonePolicy { serde_json::from_str(json).unwrap() };
    for bad in [
        r#"{"allowed_domains":{"value":["Example.COM"]}}"#,
        r#"{"allowed_domains":{"value":["corp.example", "corp.example"]}}"#,
        r#"{"allowed_issuers":{"value":[" builtin"]}}"#,
        r#"{"max_sans":{"value":0}}"#,
        r#"{"allowed_key_types":{"value":[{"type":"rsa","min_bits":1024}]}}"#,
        r#"{"default_issuer":{"value":"Not An Issuer"}}"#,
        r#"{"max_validity":{"value":"0s"}}"#,
        r#"{"notify_before":{"value":"10d"},"renew_before":{"value":"20d"}}"#,
        r#"{"common_name_pattern":{"value":"("}}"#,
        r#"{"rules":[{"name":"broken","expression":"request.sans.all(s,","message":"m"}]}"#,
        r#"{"rules":[{"name":"a","expression":"true","message":"m"},{"name":"a","expression":"false","message":"m"}]}"#,
    ] {
        let r = refused(
            &mut log,
            admin(),
            put("/prod", raw(bad), None),
            RejectCode::InvalidArgument,
        );
        assert!(!r.message.is_empty(), "{bad}");
    }
    assert!(get_zone(&log.store, "/prod").unwrap().is_none());
    // The canonical form of the first one is accepted and stored as such.
    let stored = log.zone("/prod", r#"{"allowed_domains":{"value":["Example.COM"]}}"#);
    assert_eq!(
        stored.policy.allowed_domains.unwrap().value,
        vec!["example.com".to_string()]
    );
}

#[test]
fn put_zone_requires_a_zone_owner_or_admin_covering_the_zone() {
    let mut log = Log::initialized();
    log.zone("/prod", "{}");
    log.zone("/dev", "{}");
    let change = || put("/prod", policy(r#"{"max_sans":{"value":4}}"#), None);
    for actor in [
        who("tok_req", &[Role::Requester], &[]),
        who("tok_aud", &[Role::Auditor], &[]),
        who("tok_app", &[Role::Approver], &["/prod"]),
        who("tok_ops", &[Role::Operator], &[]),
        who("tok_dev_owner", &[Role::ZoneOwner], &["/dev"]),
        who("tok_pro_owner", &[Role::ZoneOwner], &["/pro"]),
        who("tok_dev_admin", &[Role::Admin], &["/dev"]),
        who("tok_child_owner", &[Role::ZoneOwner], &["/prod/payments"]),
    ] {
        let r = refused(&mut log, actor.clone(), change(), RejectCode::Forbidden);
        assert!(r.message.contains(&actor.id), "{r:?}");
    }
    let prod_owner = who("tok_prod_owner", &[Role::ZoneOwner], &["/prod"]);
    // A scope is a path prefix on segment boundaries: /prod does not cover /production or the root.
    refused(
        &mut log,
        prod_owner.clone(),
        put("/production", ZonePolicy::default(), None),
        RejectCode::Forbidden,
    );
    refused(
        &mut log,
        prod_owner.clone(),
        put("/", policy(r#"{"max_sans":{"value":4}}"#), None),
        RejectCode::Forbidden,
    );
    assert!(log.propose(prod_owner.clone(), change()).result.is_ok());
    assert!(log
        .propose(
            prod_owner,
            put("/prod/payments", ZonePolicy::default(), None)
        )
        .result
        .is_ok());
    assert!(log
        .propose(
            who("tok_owner", &[Role::ZoneOwner], &[]),
            put("/", policy(r#"{"max_sans":{"value":4}}"#), None)
        )
        .result
        .is_ok());
    assert!(log
        .propose(
            who(
                "tok_multi",
                &[Role::Requester, Role::ZoneOwner],
                &["/dev", "/prod"]
            ),
            put("/dev", policy(r#"{"max_sans":{"value":2}}"#), None)
        )
        .result
        .is_ok());
}

// ---------------------------------------------------------------------------------------------------
// 3. Requests
// ---------------------------------------------------------------------------------------------------

#[test]
fn a_compliant_request_is_approved_and_queued() {
    let mut log = Log::initialized();
    log.zone(
        "/prod",
        r#"{"allowed_domains":{"value":[".corp.example"]}}"#,
    );
    let at = log.now();
    let out = log.propose(
        admin(),
        submit(
            "req_1",
            spec("/prod", &["api.corp.example", "www.corp.example"]),
        ),
    );
    let record = recorded(&out);
    assert_eq!(record.id, "req_1");
    assert_eq!(record.state, RequestState::Approved);
    assert_eq!(record.issuer, "builtin", "the zone's default issuer");
    assert!(record.violations.is_empty());
    assert_eq!(record.generation, 1);
    assert_eq!(record.requested_by, "tok_root");
    assert_eq!((record.created_at, record.updated_at), (at, at));
    assert_eq!(record.revision, out.index);
    assert_eq!(record.certificate_id, None);
    assert_eq!(
        record.policy_versions,
        vec![("/".to_string(), 1), ("/prod".to_string(), 1)]
    );
    assert_eq!(request(&log.store, "req_1"), record);
    assert_eq!(queue(&log.store), vec!["req_1".to_string()]);
    assert_eq!(indexed_states(&log.store, "req_1"), vec!["approved"]);

    // A requester scoped to the zone may submit; one scoped elsewhere, or without the role, may not.
    let requester = who("tok_req", &[Role::Requester], &["/prod"]);
    let mine = recorded(&log.propose(
        requester,
        submit("req_2", spec("/prod", &["b.corp.example"])),
    ));
    assert_eq!(mine.requested_by, "tok_req");
    assert_eq!(mine.state, RequestState::Approved);
    for actor in [
        who("tok_dev", &[Role::Requester], &["/dev"]),
        who("tok_aud", &[Role::Auditor], &[]),
        who("tok_app", &[Role::Approver], &[]),
    ] {
        refused(
            &mut log,
            actor,
            submit("req_3", spec("/prod", &["c.corp.example"])),
            RejectCode::Forbidden,
        );
    }
    assert!(get_request(&log.store, "req_3").unwrap().is_none());
    assert_eq!(queue(&log.store).len(), 2);
}

#[test]
fn a_request_in_an_approval_zone_waits_and_is_not_queued() {
    let mut log = Log::initialized();
    log.zone("/gated", r#"{"approval_required":{"value":true}}"#);
    let record = recorded(&log.propose(
        admin(),
        submit("req_1", spec("/gated", &["a.corp.example"])),
    ));
    assert_eq!(record.state, RequestState::PendingApproval);
    assert!(queue(&log.store).is_empty());
    assert_eq!(
        indexed_states(&log.store, "req_1"),
        vec!["pending_approval"]
    );
    // The worker cannot issue or fail a request nobody approved.
    refused(
        &mut log,
        worker(),
        complete(&record, 1),
        RejectCode::StaleGeneration,
    );
    refused(
        &mut log,
        worker(),
        fail("req_1", 1),
        RejectCode::StaleGeneration,
    );
    // A violating request in an approval zone is still simply rejected.
    let mut bad = spec("/gated", &["a.corp.example"]);
    bad.validity = Span::days(1000);
    let out = log.propose(admin(), submit("req_2", bad));
    assert_eq!(code(&out), Some(RejectCode::PolicyViolation));
    assert_eq!(request(&log.store, "req_2").state, RequestState::Rejected);
}

#[test]
fn a_violating_request_is_recorded_rejected_with_every_violation() {
    let mut log = Log::initialized();
    log.zone(
        "/prod",
        r#"{"allowed_domains":{"value":[".corp.example"]},
            "max_validity":{"value":"30d"},
            "owner_required":{"value":true},
            "required_tags":{"value":["cost_center"]},
            "rules":[{"name":"no-test","expression":"!request.sans.exists(s, s.startsWith(\"test\"))","message":"no test names in prod"}]}"#,
    );
    let mut bad = spec(
        "/prod",
        &[
            "test.corp.example",
            "evil.example",
            "*.corp.example",
            "10.0.0.1",
        ],
    );
    bad.key_facts = KeyFacts {
        algorithm: KeyType::Rsa,
        bits: 1024,
    };
    bad.key = KeySource::Generate {
        spec: KeySpec::Rsa { bits: 1024 },
    };
    bad.validity = Span::days(90);
    bad.owner = None;
    bad.tags = BTreeMap::new();
    let out = log.propose(admin(), submit("req_bad", bad.clone()));
    let r = rejection(&out).clone();
    assert_eq!(r.code, RejectCode::PolicyViolation);
    assert_eq!(r.object_id.as_deref(), Some("req_bad"));
    assert!(r.message.contains("8 violation"), "{}", r.message);
    let expected = BTreeSet::from([
        triple("allowed_domains", "/prod", "evil.example"),
        triple("allow_wildcards", "(built-in)", "*.corp.example"),
        triple("allow_ip_sans", "(built-in)", "10.0.0.1"),
        triple("allowed_key_types", "(built-in)", "rsa 1024"),
        triple("max_validity", "/prod", "90d"),
        triple("owner_required", "/prod", ""),
        triple("required_tags", "/prod", "cost_center"),
        triple(
            "rule:no-test",
            "/prod",
            "!request.sans.exists(s, s.startsWith(\"test\"))",
        ),
    ]);
    assert_eq!(r.violations.len(), expected.len(), "{:#?}", r.violations);
    assert_eq!(violation_triples(&r.violations), expected);
    let rule = r
        .violations
        .iter()
        .find(|v| v.rule == "rule:no-test")
        .unwrap();
    assert_eq!(rule.message, "no test names in prod");

    // The request is kept, rejected, with the same violations; it is not queued.
    let stored = request(&log.store, "req_bad");
    assert_eq!(stored.state, RequestState::Rejected);
    assert_eq!(stored.violations, r.violations);
    assert_eq!(stored.spec, bad);
    assert_eq!(stored.generation, 1);
    assert!(queue(&log.store).is_empty());
    assert_eq!(indexed_states(&log.store, "req_bad"), vec!["rejected"]);
    // A rejected request is final: the worker cannot touch it.
    refused(
        &mut log,
        worker(),
        fail("req_bad", 1),
        RejectCode::StaleGeneration,
    );
}

#[test]
fn unknown_zone_is_not_found_and_nothing_is_recorded() {
    let mut log = Log::initialized();
    for zone in ["/nope", "prod", "/prod/"] {
        refused(
            &mut log,
            admin(),
            submit("req_1", spec(zone, &["a.corp.example"])),
            RejectCode::NotFound,
        );
    }
    assert!(get_request(&log.store, "req_1").unwrap().is_none());
}

#[test]
fn an_unknown_issuer_is_a_violation_named_issuer() {
    let mut log = Log::initialized();
    let mut named = spec("/", &["a.corp.example"]);
    named.issuer = Some("pca-missing".into());
    let out = log.propose(admin(), submit("req_1", named));
    let r = rejection(&out);
    assert_eq!(r.code, RejectCode::PolicyViolation);
    assert_eq!(
        violation_triples(&r.violations),
        BTreeSet::from([triple("issuer", "(system)", "pca-missing")])
    );
    let stored = request(&log.store, "req_1");
    assert_eq!(stored.state, RequestState::Rejected);
    assert_eq!(stored.issuer, "pca-missing");

    // A zone whose default issuer is not configured refuses the same way...
    log.zone("/ext", r#"{"default_issuer":{"value":"other"}}"#);
    let out = log.propose(admin(), submit("req_2", spec("/ext", &["a.corp.example"])));
    assert_eq!(
        violation_triples(&rejection(&out).violations),
        BTreeSet::from([triple("issuer", "(system)", "other")])
    );
    // ...until an admin configures it.
    log.ok(Command::CreateIssuer(Box::new(issuer("other"))));
    let ok = log.approved("req_3", spec("/ext", &["a.corp.example"]));
    assert_eq!(ok.issuer, "other");
    // allowed_issuers is checked as well as existence.
    log.zone("/only", r#"{"allowed_issuers":{"value":["other"]}}"#);
    let out = log.propose(admin(), submit("req_4", spec("/only", &["a.corp.example"])));
    assert_eq!(
        violation_triples(&rejection(&out).violations),
        BTreeSet::from([triple("allowed_issuers", "/only", "builtin")])
    );
}

/// Request records and the answers kept for idempotency keys are stored and read back: a record
/// that cannot be decoded would stop the node.
#[test]
fn request_records_and_stored_answers_read_back() {
    let mut log = Log::initialized();
    log.ok(Command::CreateIssuer(Box::new(issuer("other"))));
    let mut named = spec("/", &["a.corp.example"]);
    named.issuer = Some("other".into());
    let p = Proposal::new(log.now(), admin(), submit("req_1", named.clone()))
        .with_idempotency(Some("key-1".into()), Some("hash-1".into()));
    let first = log.propose_full(p.clone());
    let record = recorded(&first);
    let stored = request(&log.store, "req_1");
    assert_eq!(stored, record);
    assert_eq!(stored.spec.issuer.as_deref(), Some("other"));
    assert_eq!(stored.issuer, "other");
    assert_eq!(stored.spec, named);
    let replay = log.propose_full(p);
    assert!(replay.replayed);
    assert_eq!((replay.index, &replay.result), (first.index, &first.result));

    // The same for a rejected request (the default issuer resolved, the spec naming none).
    let mut bad = spec("/", &["a.corp.example"]);
    bad.validity = Span::days(1000);
    let p = Proposal::new(log.now(), admin(), submit("req_2", bad))
        .with_idempotency(Some("key-2".into()), Some("hash-2".into()));
    let first = log.propose_full(p.clone());
    assert_eq!(code(&first), Some(RejectCode::PolicyViolation));
    let stored = request(&log.store, "req_2");
    assert_eq!(
        (stored.spec.issuer.as_deref(), stored.issuer.as_str()),
        (None, "builtin")
    );
    let replay = log.propose_full(p);
    assert!(replay.replayed);
    assert_eq!(replay.result, first.result);

    // And for the worker's outcome, which carries the updated record.
    let issued = log.propose(worker(), complete(&record, 1));
    assert_eq!(updated(&issued).issuer, "other");
    assert_eq!(request(&log.store, "req_1").state, RequestState::Issued);
}

#[test]
fn a_request_id_cannot_be_reused() {
    let mut log = Log::initialized();
    let first = log.approved("req_1", spec("/", &["a.corp.example"]));
    refused(
        &mut log,
        admin(),
        submit("req_1", spec("/", &["b.corp.example"])),
        RejectCode::Conflict,
    );
    assert_eq!(request(&log.store, "req_1"), first);
    // Also when the first was rejected.
    let mut bad = spec("/", &["a.corp.example"]);
    bad.validity = Span::days(1000);
    log.propose(admin(), submit("req_2", bad));
    refused(
        &mut log,
        admin(),
        submit("req_2", spec("/", &["a.corp.example"])),
        RejectCode::Conflict,
    );
    assert_eq!(request(&log.store, "req_2").state, RequestState::Rejected);
}

#[test]
fn requests_record_the_policy_versions_they_were_evaluated_against() {
    let mut log = Log::initialized();
    log.zone("/", r#"{"max_sans":{"value":50}}"#); // v2
    log.zone("/", r#"{"max_sans":{"value":40}}"#); // v3
    log.zone("/prod", "{}"); // v1
    log.zone("/prod/payments", "{}"); // v1
    let early = log.approved("req_1", spec("/prod/payments", &["a.corp.example"]));
    assert_eq!(
        early.policy_versions,
        vec![
            ("/".to_string(), 3),
            ("/prod".to_string(), 1),
            ("/prod/payments".to_string(), 1)
        ]
    );
    // A policy change between two submissions is honoured, and recorded.
    log.zone("/prod", r#"{"max_validity":{"value":"30d"}}"#); // v2
    let out = log.propose(
        admin(),
        submit("req_2", spec("/prod/payments", &["a.corp.example"])),
    );
    assert_eq!(
        violation_triples(&rejection(&out).violations),
        BTreeSet::from([triple("max_validity", "/prod", "90d")])
    );
    let late = request(&log.store, "req_2");
    assert_eq!(
        late.policy_versions,
        vec![
            ("/".to_string(), 3),
            ("/prod".to_string(), 2),
            ("/prod/payments".to_string(), 1)
        ]
    );
    // The earlier request keeps the versions it was evaluated against.
    assert_eq!(
        request(&log.store, "req_1").policy_versions,
        early.policy_versions
    );
    // Each recorded version is still in the history.
    for (path, version) in &late.policy_versions {
        assert!(log
            .store
            .get(Keyspace::ZoneHistory, &history_key(path, *version))
            .unwrap()
            .is_some());
    }
    let root = log.approved("req_3", spec("/", &["a.corp.example"]));
    assert_eq!(root.policy_versions, vec![("/".to_string(), 3)]);
}

// ---------------------------------------------------------------------------------------------------
// 4. Issuance outcomes
// ---------------------------------------------------------------------------------------------------

#[test]
fn only_the_issuance_worker_records_outcomes() {
    let mut log = Log::initialized();
    let r = log.approved("req_1", spec("/", &["a.corp.example"]));
    for actor in [
        admin(),
        who("system:renewal", &[Role::Admin], &[]),
        who("tok_zo", &[Role::ZoneOwner], &[]),
        Principal::bootstrap(),
    ] {
        refused(
            &mut log,
            actor.clone(),
            complete(&r, 1),
            RejectCode::Forbidden,
        );
        refused(&mut log, actor, fail("req_1", 1), RejectCode::Forbidden);
    }
    assert_eq!(request(&log.store, "req_1"), r);
    assert_eq!(queue(&log.store), vec!["req_1".to_string()]);
    log.issue(&r, 1);
}

#[test]
fn stale_or_unknown_outcomes_change_nothing() {
    let mut log = Log::initialized();
    let r = log.approved("req_1", spec("/", &["a.corp.example"]));
    assert_eq!(r.generation, 1);
    for generation in [0, 2, 99] {
        let stale = complete_with("req_1", generation, cert_id(1), issued_details(&r, 1));
        let rej = refused(&mut log, worker(), stale, RejectCode::StaleGeneration);
        assert!(rej.message.contains("generation"), "{rej:?}");
        refused(
            &mut log,
            worker(),
            fail("req_1", generation),
            RejectCode::StaleGeneration,
        );
    }
    refused(
        &mut log,
        worker(),
        complete_with("req_nope", 1, cert_id(1), issued_details(&r, 1)),
        RejectCode::NotFound,
    );
    refused(
        &mut log,
        worker(),
        fail("req_nope", 1),
        RejectCode::NotFound,
    );
    assert_eq!(request(&log.store, "req_1"), r);
    assert!(all_certificates(&log.store).is_empty());
}

#[test]
fn one_request_never_yields_two_certificates() {
    let mut log = Log::initialized();
    let r = log.approved("req_1", spec("/", &["a.corp.example"]));
    let first = log.issue(&r, 1);
    let now = request(&log.store, "req_1");
    assert_eq!(now.generation, 2);
    // The same outcome again (a retry from another leader), or a different certificate for the same
    // generation, or one naming the new generation: all refused, nothing changes.
    for n in [1, 2] {
        refused(
            &mut log,
            worker(),
            complete(&r, n),
            RejectCode::StaleGeneration,
        );
        refused(
            &mut log,
            worker(),
            complete_with("req_1", 2, cert_id(n + 10), issued_details(&r, n + 10)),
            RejectCode::StaleGeneration,
        );
    }
    refused(
        &mut log,
        worker(),
        fail("req_1", 1),
        RejectCode::StaleGeneration,
    );
    refused(
        &mut log,
        worker(),
        fail("req_1", 2),
        RejectCode::StaleGeneration,
    );
    let certs = all_certificates(&log.store);
    assert_eq!(certs, vec![first]);
    assert_eq!(keys_of(&log.store, Keyspace::IssuedSerials, b"").len(), 1);
    assert_eq!(
        get_issuer(&log.store, "builtin")
            .unwrap()
            .unwrap()
            .issued_count,
        1
    );
    assert_eq!(request(&log.store, "req_1"), now);
}

#[test]
fn a_failed_request_is_final() {
    let mut log = Log::initialized();
    let r = log.approved("req_1", spec("/", &["a.corp.example"]));
    let at = log.now();
    let failed = updated(&log.propose(worker(), fail("req_1", 1)));
    assert_eq!(failed.state, RequestState::Failed);
    assert_eq!(failed.error.as_deref(), Some("the issuer refused to sign"));
    assert_eq!(failed.generation, 2);
    assert_eq!(failed.updated_at, at);
    assert_eq!(failed.certificate_id, None);
    assert_eq!(request(&log.store, "req_1"), failed);
    assert!(queue(&log.store).is_empty());
    assert_eq!(indexed_states(&log.store, "req_1"), vec!["failed"]);
    for generation in [1, 2] {
        refused(
            &mut log,
            worker(),
            complete_with("req_1", generation, cert_id(1), issued_details(&r, 1)),
            RejectCode::StaleGeneration,
        );
        refused(
            &mut log,
            worker(),
            fail("req_1", generation),
            RejectCode::StaleGeneration,
        );
    }
    assert!(all_certificates(&log.store).is_empty());
    assert!(keys_of(&log.store, Keyspace::IssuedSerials, b"").is_empty());
}

#[test]
fn issued_names_and_validity_must_match_what_was_approved() {
    let mut log = Log::initialized();
    log.zone("/lab", r#"{"allow_ip_sans":{"value":true}}"#);
    let r = log.approved(
        "req_1",
        spec("/lab", &["a.corp.example", "b.corp.example", "10.0.0.1"]),
    );
    let good = issued_details(&r, 1);
    type Tamper = fn(&mut CertificateDetails);
    let tampered: [(&str, Tamper); 9] = [
        ("extra SAN", |d| d.sans.push("evil.example".into())),
        ("missing SAN", |d| {
            d.sans.pop();
        }),
        ("SAN swapped", |d| d.sans[1] = "c.corp.example".into()),
        ("SAN case", |d| d.sans[0] = "A.corp.example".into()),
        ("SAN duplicated", |d| d.sans.push("a.corp.example".into())),
        ("other CN", |d| {
            d.common_name = Some("b.corp.example".into())
        }),
        ("no CN", |d| d.common_name = None),
        ("validity 1ms too long", |d| {
            d.not_after = Timestamp(d.not_after.0 + 1)
        }),
        ("validity shifted too long", |d| {
            d.not_before = Timestamp(-1000);
        }),
    ];
    for (what, tamper) in tampered {
        let mut details = good.clone();
        tamper(&mut details);
        let rej = refused(
            &mut log,
            worker(),
            complete_with("req_1", 1, cert_id(1), details),
            RejectCode::InvalidArgument,
        );
        assert!(rej.message.contains("req_1"), "{what}: {rej:?}");
    }
    assert_eq!(request(&log.store, "req_1").state, RequestState::Approved);

    // SAN order does not matter, and a shorter validity than requested is fine.
    let mut reordered = good.clone();
    reordered.sans.reverse();
    reordered.not_before = Timestamp(5_000);
    let out = log.propose(worker(), complete_with("req_1", 1, cert_id(1), reordered));
    assert_eq!(updated(&out).state, RequestState::Issued);

    // Exactly the requested validity, and a request without a CN.
    let mut no_cn = spec("/lab", &["d.corp.example"]);
    no_cn.common_name = None;
    let r2 = log.approved("req_2", no_cn);
    let d2 = issued_details(&r2, 2);
    assert_eq!(d2.not_after.0 - d2.not_before.0, Span::days(90).millis());
    let out = log.propose(worker(), complete_with("req_2", 1, cert_id(2), d2.clone()));
    assert_eq!(updated(&out).state, RequestState::Issued);
    assert_eq!(certificate(&log.store, &cert_id(2)).details, d2);
}

#[test]
fn a_completed_issuance_updates_inventory_serials_issuer_and_queue() {
    let mut log = Log::initialized();
    log.zone("/prod", "{}");
    let mut s = spec("/prod", &["api.corp.example", "www.corp.example"]);
    s.owner = Some("team-payments".into());
    s.tags = BTreeMap::from([("cost_center".to_string(), "42".to_string())]);
    let r = log.approved("req_1", s.clone());
    let other = log.approved("req_2", spec("/prod", &["x.corp.example"]));
    assert_eq!(
        queue(&log.store),
        vec!["req_1".to_string(), "req_2".to_string()]
    );

    let at = log.now();
    let command = complete(&r, 0xabc);
    let Command::CompleteIssuance(done) = &command else {
        unreachable!()
    };
    let done = (**done).clone();
    let out = log.propose(worker(), command);
    let issued = updated(&out);
    assert_eq!(issued.state, RequestState::Issued);
    assert_eq!(
        issued.certificate_id.as_deref(),
        Some(cert_id(0xabc).as_str())
    );
    assert_eq!(issued.generation, 2);
    assert_eq!(issued.updated_at, at);
    assert_eq!(issued.revision, out.index);
    assert_eq!(request(&log.store, "req_1"), issued);
    assert_eq!(indexed_states(&log.store, "req_1"), vec!["issued"]);
    assert_eq!(queue(&log.store), vec!["req_2".to_string()]);

    let cert = certificate(&log.store, &cert_id(0xabc));
    assert_eq!(cert.status, CertificateStatus::Active);
    assert_eq!(
        cert.issuance,
        Some(IssuanceLink {
            request_id: "req_1".into(),
            issuer: "builtin".into(),
            aws: None,
        })
    );
    assert_eq!(cert.details, done.details);
    assert_eq!(cert.chain_pem, done.chain_pem);
    assert_eq!(cert.private_key, done.private_key);
    assert_eq!(cert.zone, "/prod");
    assert_eq!(cert.owner, "team-payments");
    assert_eq!(cert.tags, s.tags);
    assert_eq!((cert.created_at, cert.generation), (at, 1));
    assert_eq!(
        (cert.supersedes.clone(), cert.superseded_by.clone()),
        (None, None)
    );
    assert_eq!(
        log.store
            .get(
                Keyspace::ByFingerprint,
                done.details.fingerprint_sha256.as_bytes()
            )
            .unwrap(),
        Some(cert.id.as_bytes().to_vec())
    );

    let serial_key = index_key("builtin", &done.details.serial);
    let serial: IssuedSerial = decode_record(
        "serial",
        &log.store
            .get(Keyspace::IssuedSerials, &serial_key)
            .unwrap()
            .expect("serial recorded"),
    )
    .unwrap();
    assert_eq!(
        serial,
        IssuedSerial {
            certificate_id: cert.id.clone(),
            request_id: "req_1".into(),
            issued_at: at,
        }
    );
    let issuer = get_issuer(&log.store, "builtin").unwrap().unwrap();
    assert_eq!(issuer.issued_count, 1);
    assert_eq!(issuer.revision, out.index);
    let c = counts(&log.store).unwrap();
    assert_eq!((c.active, c.retired, c.revoked), (1, 0, 0));

    log.issue(&other, 0xdef);
    assert_eq!(
        get_issuer(&log.store, "builtin")
            .unwrap()
            .unwrap()
            .issued_count,
        2
    );
    assert!(queue(&log.store).is_empty());
    assert_eq!(counts(&log.store).unwrap().active, 2);
}

#[test]
fn a_serial_or_certificate_issued_before_cannot_be_recorded_again() {
    let mut log = Log::initialized();
    let r1 = log.approved("req_1", spec("/", &["a.corp.example"]));
    let r2 = log.approved("req_2", spec("/", &["b.corp.example"]));
    log.issue(&r1, 1);
    // Same serial from the same issuer, different certificate.
    let mut same_serial = issued_details(&r2, 2);
    same_serial.serial = "1".into();
    refused(
        &mut log,
        worker(),
        complete_with("req_2", 1, cert_id(2), same_serial),
        RejectCode::Conflict,
    );
    // Same certificate (fingerprint) under a fresh serial, or an id already taken.
    let mut same_fingerprint = issued_details(&r2, 3);
    same_fingerprint.fingerprint_sha256 = format!("{:064x}", 1);
    refused(
        &mut log,
        worker(),
        complete_with("req_2", 1, cert_id(3), same_fingerprint),
        RejectCode::Conflict,
    );
    refused(
        &mut log,
        worker(),
        complete_with("req_2", 1, cert_id(1), issued_details(&r2, 4)),
        RejectCode::Conflict,
    );
    assert_eq!(request(&log.store, "req_2").state, RequestState::Approved);
    log.issue(&r2, 5);
    assert_eq!(keys_of(&log.store, Keyspace::IssuedSerials, b"").len(), 2);
}

#[test]
fn a_renewal_links_the_certificates_and_a_certificate_is_renewed_once() {
    let mut log = Log::initialized();
    let r1 = log.approved("req_1", spec("/", &["a.corp.example"]));
    let a = log.issue(&r1, 1);

    let mut renewal = spec("/", &["a.corp.example"]);
    renewal.renewal_of = Some(a.id.clone());
    let r2 = log.approved("req_2", renewal.clone());
    // Until the renewal is issued, the old certificate only records that a renewal is running.
    let mut now_a = certificate(&log.store, &a.id);
    let schedule = now_a.renewal.take().expect("issued certificates renew");
    assert_eq!(schedule.request_id.as_deref(), Some("req_2"));
    assert_eq!(schedule.attempts, 1);
    now_a.revision = a.revision;
    let mut was = a.clone();
    was.renewal = None;
    assert_eq!(now_a, was);
    let at = log.now();
    let b = log.issue(&r2, 2);
    assert_eq!(b.supersedes.as_deref(), Some(a.id.as_str()));
    assert_eq!(b.superseded_by, None);
    let a_now = certificate(&log.store, &a.id);
    assert_eq!(a_now.superseded_by.as_deref(), Some(b.id.as_str()));
    assert_eq!(a_now.generation, a.generation + 1);
    assert_eq!(a_now.updated_at, at);
    assert_eq!(
        a_now.status,
        CertificateStatus::Active,
        "kept until it expires"
    );

    // Renewing the superseded certificate again is a conflict; nothing is recorded.
    let rej = refused(
        &mut log,
        admin(),
        submit("req_3", renewal),
        RejectCode::Conflict,
    );
    assert!(rej.message.contains(&b.id), "{rej:?}");
    assert!(get_request(&log.store, "req_3").unwrap().is_none());
    // Renewing a certificate that does not exist is not found.
    let mut missing = spec("/", &["a.corp.example"]);
    missing.renewal_of = Some("crt_missing".into());
    refused(
        &mut log,
        admin(),
        submit("req_4", missing),
        RejectCode::NotFound,
    );
    // The renewal can itself be renewed.
    let mut again = spec("/", &["a.corp.example"]);
    again.renewal_of = Some(b.id.clone());
    let r5 = log.approved("req_5", again);
    let c = log.issue(&r5, 5);
    assert_eq!(
        certificate(&log.store, &b.id).superseded_by.as_deref(),
        Some(c.id.as_str())
    );
    assert_eq!(counts(&log.store).unwrap().active, 3);
}

/// Records every write `apply` makes, on top of the in-memory store.
struct Recording<'a> {
    store: &'a mut MemStore,
    writes: Vec<(Keyspace, Vec<u8>, bool)>,
}

impl StateRead for Recording<'_> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, certplane_core::StoreError> {
        self.store.get(ks, key)
    }
    fn scan(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, certplane_core::StoreError> {
        self.store.scan(ks, from, to, limit)
    }
    fn scan_rev(
        &self,
        ks: Keyspace,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, certplane_core::StoreError> {
        self.store.scan_rev(ks, from, to, limit)
    }
}

impl certplane_core::StateStore for Recording<'_> {
    fn put(&mut self, ks: Keyspace, key: &[u8], value: &[u8]) {
        self.writes.push((ks, key.to_vec(), false));
        self.store.put(ks, key, value);
    }
    fn delete(&mut self, ks: Keyspace, key: &[u8]) {
        self.writes.push((ks, key.to_vec(), true));
        self.store.delete(ks, key);
    }
}

/// A renewal rewrites the superseded certificate's record, but none of its index entries that stay
/// the same (owner, zone, issuer, status, expiry, name trigrams): every node would otherwise delete
/// and write back dozens of keys per renewal. Only the notices it no longer sends leave their queue.
/// The issued request likewise keeps its unchanged index entries.
#[test]
fn a_renewal_writes_only_the_index_entries_that_change() {
    let mut log = Log::initialized();
    let r1 = log.approved("req_1", spec("/", &["www.payments.corp.example"]));
    let a = log.issue(&r1, 1);
    let mut renewal = spec("/", &["www.payments.corp.example"]);
    renewal.renewal_of = Some(a.id.clone());
    let r2 = log.approved("req_2", renewal);

    let proposal = Proposal::new(log.now(), worker(), complete(&r2, 2));
    let mut recording = Recording {
        store: &mut log.store,
        writes: Vec::new(),
    };
    let entry = certplane_core::EntryContext {
        index: log.next,
        term: 1,
        part: 0,
    };
    let out = certplane_core::apply(&mut recording, entry, &proposal).expect("applies");
    assert_eq!(updated(&out).state, RequestState::Issued);
    let writes = recording.writes;
    log.next += 1;

    let ends_with = |key: &[u8], id: &str| key.ends_with(id.as_bytes());
    let old: Vec<_> = writes
        .iter()
        .filter(|(ks, key, _)| *ks != Keyspace::Audit && ends_with(key, &a.id))
        .map(|(ks, _, deleted)| (*ks, *deleted))
        .collect();
    assert_eq!(
        old,
        vec![(Keyspace::Certificates, false)],
        "the superseded certificate: its record only"
    );
    let old_notices = writes
        .iter()
        .filter(|(ks, key, deleted)| {
            *ks == Keyspace::NoticeQueue && *deleted && key[8..].starts_with(a.id.as_bytes())
        })
        .count();
    assert_eq!(
        old_notices,
        a.notices.len(),
        "its unsent notices leave the queue"
    );
    let request_index: Vec<_> = writes
        .iter()
        .filter(|(ks, _, _)| *ks == Keyspace::RequestIndex)
        .map(|(_, key, deleted)| (String::from_utf8_lossy(key).into_owned(), *deleted))
        .collect();
    assert_eq!(
        request_index,
        vec![
            (
                String::from_utf8_lossy(&certplane_core::apply::request_index_key(
                    "state", "approved", "req_2"
                ))
                .into_owned(),
                true
            ),
            (
                String::from_utf8_lossy(&certplane_core::apply::request_index_key(
                    "state", "issued", "req_2"
                ))
                .into_owned(),
                false
            ),
        ],
        "the request changes state and nothing else it is indexed by"
    );
    // The new certificate is indexed in full, and the old one is still found by name.
    let b = certificate(&log.store, &updated(&out).certificate_id.unwrap());
    for id in [&a.id, &b.id] {
        let hits = keys_of(&log.store, Keyspace::ByNameTrigram, b"pay")
            .into_iter()
            .filter(|k| ends_with(k, id))
            .count();
        assert_eq!(hits, 1, "{id} is indexed under the trigram `pay`");
    }
}

/// Two renewals of one certificate approved before either is issued: only the first may supersede
/// it, so the links stay a chain (`a.superseded_by = b` exactly when `b.supersedes = a`).
#[test]
fn concurrent_renewals_of_one_certificate_supersede_it_once() {
    let mut log = Log::initialized();
    let r1 = log.approved("req_1", spec("/", &["a.corp.example"]));
    let a = log.issue(&r1, 1);
    let mut renewal = spec("/", &["a.corp.example"]);
    renewal.renewal_of = Some(a.id.clone());
    let first = log.approved("req_2", renewal.clone());
    let second = log.approved("req_3", renewal);
    let b = log.issue(&first, 2);

    let out = log.propose(worker(), complete(&second, 3));
    let rej = rejection(&out);
    assert_eq!(rej.code, RejectCode::Conflict, "{rej:?}");
    assert_eq!(rej.object_id.as_deref(), Some("req_3"));
    assert!(get_certificate(&log.store, &cert_id(3)).unwrap().is_none());
    assert_eq!(
        certificate(&log.store, &a.id).superseded_by.as_deref(),
        Some(b.id.as_str())
    );
    // The losing renewal is answered (failed), so the worker does not sign it again and again.
    let lost = request(&log.store, "req_3");
    assert_eq!(lost.state, RequestState::Failed);
    assert!(lost.error.as_deref().unwrap().contains(&b.id), "{lost:?}");
    assert_eq!(lost.generation, 2);
    assert!(queue(&log.store).is_empty());
    assert_eq!(keys_of(&log.store, Keyspace::IssuedSerials, b"").len(), 2);
    assert_eq!(
        get_issuer(&log.store, "builtin")
            .unwrap()
            .unwrap()
            .issued_count,
        2
    );
}

/// Superseding a certificate changes it, so renewing one needs access to the zone it lives in.
#[test]
fn renewing_a_certificate_needs_access_to_its_zone() {
    let mut log = Log::initialized();
    log.zone("/prod", "{}");
    log.zone("/dev", "{}");
    let r1 = log.approved("req_1", spec("/prod", &["a.corp.example"]));
    let a = log.issue(&r1, 1);
    let mut hijack = spec("/dev", &["a.corp.example"]);
    hijack.renewal_of = Some(a.id.clone());
    refused(
        &mut log,
        who("tok_dev", &[Role::Requester], &["/dev"]),
        submit("req_2", hijack.clone()),
        RejectCode::Forbidden,
    );
    assert!(get_request(&log.store, "req_2").unwrap().is_none());
    let mut renewal = spec("/prod", &["a.corp.example"]);
    renewal.renewal_of = Some(a.id.clone());
    let r = recorded(&log.propose(
        who("tok_prod", &[Role::Requester], &["/prod"]),
        submit("req_3", renewal),
    ));
    assert_eq!(r.state, RequestState::Approved);
}

// ---------------------------------------------------------------------------------------------------
// 5. Revocation and key export
// ---------------------------------------------------------------------------------------------------

#[test]
fn revocation_is_recorded_listed_and_idempotent() {
    let mut log = Log::initialized();
    log.zone("/prod", "{}");
    let r1 = log.approved("req_1", spec("/prod", &["a.corp.example"]));
    let cert = log.issue(&r1, 0x1f);
    let r2 = log.approved("req_2", spec("/prod", &["b.corp.example"]));
    let other = log.issue(&r2, 0x2f);

    refused(
        &mut log,
        admin(),
        revoke("crt_nope", RevocationReason::KeyCompromise),
        RejectCode::NotFound,
    );
    for actor in [
        who("tok_req", &[Role::Requester], &["/prod"]),
        who("tok_dev", &[Role::ZoneOwner], &["/dev"]),
    ] {
        refused(
            &mut log,
            actor,
            revoke(&cert.id, RevocationReason::KeyCompromise),
            RejectCode::Forbidden,
        );
    }

    let owner = who("tok_owner", &[Role::ZoneOwner], &["/prod"]);
    let at = log.now();
    let out = log.propose(
        owner.clone(),
        revoke(&cert.id, RevocationReason::KeyCompromise),
    );
    let Ok(Applied::CertificateRevoked { record }) = &out.result else {
        panic!("{out:?}")
    };
    assert_eq!(record.status, CertificateStatus::Revoked);
    let revocation = record.revocation.clone().expect("revocation recorded");
    assert_eq!(revocation.at, at);
    assert_eq!(revocation.reason, RevocationReason::KeyCompromise);
    assert_eq!(revocation.by, "tok_owner");
    assert_eq!(record.generation, cert.generation + 1);
    assert_eq!(&certificate(&log.store, &cert.id), &**record);

    let listed = log
        .store
        .get(
            Keyspace::Revocations,
            &index_key("builtin", &cert.details.serial),
        )
        .unwrap()
        .expect("on the CRL");
    assert_eq!(
        decode_record::<RevocationRecord>("revocation", &listed).unwrap(),
        RevocationRecord {
            certificate_id: cert.id.clone(),
            serial: cert.details.serial.clone(),
            revoked_at: at,
            reason: RevocationReason::KeyCompromise,
        }
    );
    assert_eq!(keys_of(&log.store, Keyspace::Revocations, b"").len(), 1);
    let issuer = get_issuer(&log.store, "builtin").unwrap().unwrap();
    assert_eq!((issuer.crl_number, issuer.revoked_count), (1, 1));
    let c = counts(&log.store).unwrap();
    assert_eq!((c.active, c.revoked), (1, 1));

    // Revoking again is idempotent: the same record, no new CRL, nothing changed.
    let before = domain_state(&log.store);
    let again = log.propose(
        owner.clone(),
        revoke(&cert.id, RevocationReason::Superseded),
    );
    assert_eq!(
        again.result,
        Ok(Applied::CertificateRevoked {
            record: record.clone()
        })
    );
    assert_eq!(domain_state(&log.store), before);

    // A second certificate gets the next CRL number.
    log.ok(revoke(&other.id, RevocationReason::Unspecified));
    let issuer = get_issuer(&log.store, "builtin").unwrap().unwrap();
    assert_eq!((issuer.crl_number, issuer.revoked_count), (2, 2));
    assert_eq!(keys_of(&log.store, Keyspace::Revocations, b"").len(), 2);
    let c = counts(&log.store).unwrap();
    assert_eq!((c.active, c.revoked), (0, 2));
}

#[test]
fn imported_certificates_cannot_be_revoked_here() {
    let mut log = Log::initialized();
    let r = log.approved("req_1", spec("/", &["a.corp.example"]));
    let details = issued_details(&r, 9);
    log.ok(Command::ImportCertificate(Box::new(ImportCertificate {
        id: cert_id(9),
        details,
        chain_pem: "pem".into(),
        owner: "o".into(),
        zone: "/".into(),
        tags: BTreeMap::new(),
        private_key: None,
    })));
    let rej = refused(
        &mut log,
        admin(),
        revoke(&cert_id(9), RevocationReason::KeyCompromise),
        RejectCode::Conflict,
    );
    assert!(rej.message.contains("imported"), "{rej:?}");
}

/// A revoked certificate that was later retired is still revoked: revoking it again neither moves
/// its revocation date on the CRL nor counts it twice, and importing it again does not reactivate it.
#[test]
fn a_revoked_then_retired_certificate_stays_revoked() {
    let mut log = Log::initialized();
    let r = log.approved("req_1", spec("/", &["a.corp.example"]));
    let cert = log.issue(&r, 1);
    log.ok(revoke(&cert.id, RevocationReason::KeyCompromise));
    let revoked = certificate(&log.store, &cert.id);
    let crl_entry = log
        .store
        .get(
            Keyspace::Revocations,
            &index_key("builtin", &cert.details.serial),
        )
        .unwrap();
    log.ok(Command::RetireCertificate {
        id: cert.id.clone(),
        reason: None,
    });
    let retired = certificate(&log.store, &cert.id);
    assert_eq!(retired.status, CertificateStatus::Retired);
    assert_eq!(retired.revocation, revoked.revocation);

    log.ok(revoke(&cert.id, RevocationReason::Superseded));
    let after = certificate(&log.store, &cert.id);
    assert_eq!(after.revocation, revoked.revocation);
    assert_eq!(
        log.store
            .get(
                Keyspace::Revocations,
                &index_key("builtin", &cert.details.serial)
            )
            .unwrap(),
        crl_entry
    );
    let issuer = get_issuer(&log.store, "builtin").unwrap().unwrap();
    assert_eq!((issuer.crl_number, issuer.revoked_count), (1, 1));

    log.ok(Command::ImportCertificate(Box::new(ImportCertificate {
        id: cert.id.clone(),
        details: cert.details.clone(),
        chain_pem: cert.chain_pem.clone(),
        owner: "someone".into(),
        zone: "/".into(),
        tags: BTreeMap::new(),
        private_key: None,
    })));
    assert_ne!(
        certificate(&log.store, &cert.id).status,
        CertificateStatus::Active,
        "a revoked certificate came back as active"
    );
    let c = counts(&log.store).unwrap();
    assert_eq!(c.active, 0);
}

#[test]
fn private_key_export_is_audited_for_zone_owners_only() {
    let mut log = Log::initialized();
    log.zone("/prod", "{}");
    let r = log.approved("req_1", spec("/prod", &["a.corp.example"]));
    let cert = log.issue(&r, 1);
    assert!(cert.has_private_key());
    let owner = who("tok_owner", &[Role::ZoneOwner], &["/prod"]);
    let out = log.propose(
        owner,
        Command::ExportPrivateKey {
            id: cert.id.clone(),
        },
    );
    assert_eq!(
        out.result,
        Ok(Applied::KeyExportAllowed {
            id: cert.id.clone()
        })
    );
    refused(
        &mut log,
        who("tok_req", &[Role::Requester], &["/prod"]),
        Command::ExportPrivateKey {
            id: cert.id.clone(),
        },
        RejectCode::Forbidden,
    );
    refused(
        &mut log,
        admin(),
        Command::ExportPrivateKey {
            id: "crt_nope".into(),
        },
        RejectCode::NotFound,
    );
    // A certificate issued from a CSR has no key here.
    let r2 = log.approved("req_2", spec("/prod", &["b.corp.example"]));
    let Command::CompleteIssuance(mut done) = complete(&r2, 2) else {
        unreachable!()
    };
    done.private_key = None;
    log.propose(worker(), Command::CompleteIssuance(done));
    refused(
        &mut log,
        admin(),
        Command::ExportPrivateKey { id: cert_id(2) },
        RejectCode::NotFound,
    );
    // Every attempt is audited.
    let audit = verify_chain(&log.store).unwrap();
    assert!(audit.ok);
    assert_eq!(audit.records_checked, log.next - 1);
}

// ---------------------------------------------------------------------------------------------------
// 6. Random interleavings of issuance outcomes
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Complete {
        req: usize,
        generation: u64,
        /// Picks serial, fingerprint and certificate id; collisions are intended.
        n: u32,
        /// Names that differ from the approved ones.
        bad_names: bool,
    },
    Fail {
        req: usize,
        generation: u64,
    },
    /// Someone other than the worker tries to record an outcome.
    Impostor {
        req: usize,
    },
}

fn op(requests: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..requests, 0u64..4, 0u32..12, prop::bool::weighted(0.1)).prop_map(
            |(req, generation, n, bad_names)| Op::Complete {
                req,
                generation,
                n,
                bad_names
            }
        ),
        3 => (0..requests, 0u64..4).prop_map(|(req, generation)| Op::Fail { req, generation }),
        1 => (0..requests).prop_map(|req| Op::Impostor { req }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (1usize..7).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 0..40)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Approved,
    Issued(u32),
    Failed,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn issuance_outcomes_in_any_order_yield_at_most_one_certificate_per_request(
        (n, ops) in scenario()
    ) {
        let mut log = Log::initialized();
        let mut twin = Log::initialized();
        let ids: Vec<String> = (0..n).map(|i| format!("req_{i}")).collect();
        let mut approved = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let s = spec("/", &[&format!("svc{i}.corp.example")]);
            approved.push(log.approved(id, s.clone()));
            twin.approved(id, s);
        }
        let mut model = vec![Model::Approved; n];
        let mut used: BTreeSet<u32> = BTreeSet::new();

        for op in &ops {
            let (actor, command, expected) = match *op {
                Op::Complete { req, generation, n, bad_names } => {
                    let mut details = issued_details(&approved[req], n);
                    if bad_names {
                        details.sans.push("other.corp.example".into());
                    }
                    let expected = if model[req] != Model::Approved || generation != 1 {
                        Err(RejectCode::StaleGeneration)
                    } else if bad_names {
                        Err(RejectCode::InvalidArgument)
                    } else if used.contains(&n) {
                        Err(RejectCode::Conflict)
                    } else {
                        model[req] = Model::Issued(n);
                        used.insert(n);
                        Ok(RequestState::Issued)
                    };
                    (worker(), complete_with(&ids[req], generation, cert_id(n), details), expected)
                }
                Op::Fail { req, generation } => {
                    let expected = if model[req] != Model::Approved || generation != 1 {
                        Err(RejectCode::StaleGeneration)
                    } else {
                        model[req] = Model::Failed;
                        Ok(RequestState::Failed)
                    };
                    (worker(), fail(&ids[req], generation), expected)
                }
                Op::Impostor { req } => (
                    admin(),
                    complete_with(&ids[req], 1, cert_id(99), issued_details(&approved[req], 99)),
                    Err(RejectCode::Forbidden),
                ),
            };
            let before = domain_state(&log.store);
            let out = log.propose(actor.clone(), command.clone());
            let twin_out = twin.propose(actor, command);
            prop_assert_eq!(&out, &twin_out);
            match expected {
                Ok(state) => {
                    let Ok(Applied::RequestUpdated { request }) = &out.result else {
                        return Err(TestCaseError::fail(format!("{op:?}: {out:?}")));
                    };
                    prop_assert_eq!(request.state, state);
                    prop_assert_eq!(request.generation, 2);
                }
                Err(code) => {
                    prop_assert_eq!(out.result.as_ref().err().map(|r| r.code), Some(code), "{:?}", op);
                    prop_assert_eq!(domain_state(&log.store), before, "{:?} changed state", op);
                }
            }
        }

        // Every request is in exactly the state the model says, and in one state only.
        let requests = all_requests(&log.store);
        prop_assert_eq!(requests.len(), n);
        let certs = all_certificates(&log.store);
        let linked: Vec<&CertificateRecord> = certs.iter().filter(|c| c.issuance.is_some()).collect();
        let serials = log.store.scan(Keyspace::IssuedSerials, b"", b"", usize::MAX).unwrap();
        let issued = requests.iter().filter(|r| r.state == RequestState::Issued).count();
        prop_assert_eq!(linked.len(), certs.len());
        prop_assert_eq!(linked.len(), serials.len());
        prop_assert_eq!(linked.len(), issued);
        prop_assert_eq!(get_issuer(&log.store, "builtin").unwrap().unwrap().issued_count, issued as u64);
        prop_assert_eq!(counts(&log.store).unwrap().active, issued as u64);
        for (i, r) in requests.iter().enumerate() {
            prop_assert_eq!(&r.id, &ids[i]);
            prop_assert_eq!(indexed_states(&log.store, &r.id), vec![r.state.as_str().to_string()]);
            let links: Vec<&&CertificateRecord> = linked
                .iter()
                .filter(|c| c.issuance.as_ref().unwrap().request_id == r.id)
                .collect();
            let queued = queue(&log.store).contains(&r.id);
            match model[i] {
                Model::Approved => {
                    prop_assert_eq!(r.state, RequestState::Approved);
                    prop_assert!(queued);
                    prop_assert!(links.is_empty());
                    prop_assert_eq!(r.generation, 1);
                }
                Model::Failed => {
                    prop_assert_eq!(r.state, RequestState::Failed);
                    prop_assert!(!queued);
                    prop_assert!(links.is_empty());
                    prop_assert!(r.error.is_some() && r.certificate_id.is_none());
                }
                Model::Issued(k) => {
                    prop_assert_eq!(r.state, RequestState::Issued);
                    prop_assert!(!queued);
                    prop_assert_eq!(links.len(), 1);
                    prop_assert_eq!(&links[0].id, &cert_id(k));
                    prop_assert_eq!(r.certificate_id.clone(), Some(cert_id(k)));
                    let serial: IssuedSerial = decode_record(
                        "serial",
                        &log.store
                            .get(Keyspace::IssuedSerials, &index_key("builtin", &format!("{k:x}")))
                            .unwrap()
                            .expect("serial recorded"),
                    )
                    .unwrap();
                    prop_assert_eq!(&serial.request_id, &r.id);
                    prop_assert_eq!(serial.certificate_id, cert_id(k));
                }
            }
        }
        let audit = verify_chain(&log.store).unwrap();
        prop_assert!(audit.ok, "{:?}", audit);
        prop_assert_eq!(audit.records_checked, log.next - 1);
        prop_assert_eq!(log.store.dump(), twin.store.dump());
        prop_assert_eq!(state_digest(&log.store).unwrap(), state_digest(&twin.store).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------------
// Approval workflows
// ---------------------------------------------------------------------------------------------------

fn bound(id: &str, bindings: &[(Role, &str)], groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        name: id.into(),
        bindings: bindings
            .iter()
            .map(|(r, z)| certplane_core::RoleBinding::new(*r, z))
            .collect(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Principal::default()
    }
}

fn decide(id: &str, decision: Decision, comment: &str) -> Command {
    Command::DecideApproval(Box::new(DecideApproval {
        request_id: id.into(),
        decision,
        comment: comment.into(),
        expected_generation: None,
    }))
}

const TWO_STAGES: &str = r#"{"approval_stages":{"value":[
    {"name":"owner","role":"zone_owner","count":1},
    {"name":"security","group":"security","count":2}]},
  "approval_timeout":{"value":"1h"}}"#;

#[test]
fn two_stage_approval_issues_only_after_every_stage_and_enforces_separation_of_duties() {
    let mut log = Log::initialized();
    log.zone("/prod", TWO_STAGES);
    let requester = bound("tok_req", &[(Role::Requester, "/prod")], &[]);
    let owner = bound("tok_owner", &[(Role::ZoneOwner, "/prod")], &["security"]);
    let sec: Vec<Principal> = (1..=3)
        .map(|i| {
            bound(
                &format!("tok_sec{i}"),
                &[(Role::Approver, "/")],
                &["security"],
            )
        })
        .collect();
    let record = recorded(&log.propose(
        requester.clone(),
        submit("req_1", spec("/prod", &["a.corp.example"])),
    ));
    assert_eq!(record.state, RequestState::PendingApproval);
    let progress = record.approval.clone().expect("workflow");
    assert_eq!(progress.stages.len(), 2);
    assert_eq!(progress.current, 0);

    // The requester can never decide their own request, even holding the approver role.
    let self_approver = bound(
        "tok_req",
        &[(Role::Requester, "/prod"), (Role::ZoneOwner, "/prod")],
        &["security"],
    );
    let r = refused(
        &mut log,
        self_approver,
        decide("req_1", Decision::Approve, "mine"),
        RejectCode::Forbidden,
    );
    assert!(r.message.contains("own request"), "{}", r.message);
    // A security approver is not eligible for the owner stage (it needs the zone_owner role).
    refused(
        &mut log,
        sec[0].clone(),
        decide("req_1", Decision::Approve, "ok"),
        RejectCode::Forbidden,
    );

    let after_owner =
        updated(&log.propose(owner.clone(), decide("req_1", Decision::Approve, "fine")));
    assert_eq!(after_owner.state, RequestState::PendingApproval);
    assert_eq!(after_owner.approval.as_ref().unwrap().current, 1);
    assert!(queue(&log.store).is_empty());
    // The owner is in the security group too, but one person decides at most one stage.
    let r = refused(
        &mut log,
        owner,
        decide("req_1", Decision::Approve, "again"),
        RejectCode::Forbidden,
    );
    assert!(r.message.contains("at most one stage"), "{}", r.message);

    let one = updated(&log.propose(sec[0].clone(), decide("req_1", Decision::Approve, "1 of 2")));
    assert_eq!(one.state, RequestState::PendingApproval);
    // The same security approver cannot count twice.
    refused(
        &mut log,
        sec[0].clone(),
        decide("req_1", Decision::Approve, "1 again"),
        RejectCode::Forbidden,
    );
    let done = updated(&log.propose(sec[2].clone(), decide("req_1", Decision::Approve, "2 of 2")));
    assert_eq!(done.state, RequestState::Approved);
    assert_eq!(queue(&log.store), vec!["req_1".to_string()]);
    assert_eq!(
        done.approval.as_ref().unwrap().approvers(),
        vec!["tok_owner", "tok_sec1", "tok_sec3"]
    );
    assert_eq!(indexed_states(&log.store, "req_1"), vec!["approved"]);
    // Nothing more to decide.
    refused(
        &mut log,
        sec[1].clone(),
        decide("req_1", Decision::Approve, "late"),
        RejectCode::Conflict,
    );
    assert!(verify_chain(&log.store).unwrap().ok);
}

#[test]
fn a_rejection_ends_the_request_with_its_reason() {
    let mut log = Log::initialized();
    log.zone("/prod", TWO_STAGES);
    let requester = bound("tok_req", &[(Role::Requester, "/prod")], &[]);
    let owner = bound("tok_owner", &[(Role::ZoneOwner, "/prod")], &[]);
    log.propose(
        requester,
        submit("req_1", spec("/prod", &["a.corp.example"])),
    );
    let out = updated(&log.propose(
        owner.clone(),
        decide("req_1", Decision::Reject, "not this name"),
    ));
    assert_eq!(out.state, RequestState::Rejected);
    assert!(out.error.as_deref().unwrap().contains("not this name"));
    assert!(queue(&log.store).is_empty());
    refused(
        &mut log,
        owner,
        decide("req_1", Decision::Approve, "changed my mind"),
        RejectCode::Conflict,
    );
}

#[test]
fn a_pending_request_expires_only_after_its_deadline_and_only_by_the_worker() {
    let mut log = Log::initialized();
    log.zone(
        "/prod",
        r#"{"approval_required":{"value":true},"approval_timeout":{"value":"5s"}}"#,
    );
    let requester = bound("tok_req", &[(Role::Requester, "/prod")], &[]);
    let approver = bound("tok_app", &[(Role::Approver, "/prod")], &[]);
    let expire = || Command::ExpireApproval {
        request_id: "req_1".into(),
    };
    let worker = Principal::system(certplane_core::apply::APPROVAL_WORKER, "approvals");
    log.propose(
        requester,
        submit("req_1", spec("/prod", &["a.corp.example"])),
    );
    refused(&mut log, worker.clone(), expire(), RejectCode::Conflict);
    refused(&mut log, admin(), expire(), RejectCode::Forbidden);
    while log.now() < request(&log.store, "req_1").approval.unwrap().expires_at {
        log.propose(admin(), Command::Noop);
    }
    // Past the deadline an approval no longer counts.
    refused(
        &mut log,
        approver,
        decide("req_1", Decision::Approve, "too late"),
        RejectCode::Conflict,
    );
    let out = updated(&log.propose(worker.clone(), expire()));
    assert_eq!(out.state, RequestState::Expired);
    assert!(out.state.is_final());
    assert_eq!(indexed_states(&log.store, "req_1"), vec!["expired"]);
    refused(&mut log, worker, expire(), RejectCode::Conflict);
}

#[test]
fn approvers_are_scoped_to_their_zones() {
    let mut log = Log::initialized();
    log.zone("/prod", r#"{"approval_required":{"value":true}}"#);
    log.zone("/prod/a", "{}");
    log.zone("/prod/b", "{}");
    let requester = bound("tok_req", &[(Role::Requester, "/prod")], &[]);
    let approver_a = bound("tok_a", &[(Role::Approver, "/prod/a")], &[]);
    log.propose(
        requester.clone(),
        submit("req_b", spec("/prod/b", &["b.corp.example"])),
    );
    log.propose(
        requester,
        submit("req_a", spec("/prod/a", &["a.corp.example"])),
    );
    refused(
        &mut log,
        approver_a.clone(),
        decide("req_b", Decision::Approve, "x"),
        RejectCode::Forbidden,
    );
    refused(
        &mut log,
        approver_a.clone(),
        decide("req_b", Decision::Reject, "x"),
        RejectCode::Forbidden,
    );
    let out = updated(&log.propose(approver_a, decide("req_a", Decision::Approve, "ok")));
    assert_eq!(out.state, RequestState::Approved);
    // A requester for /dev cannot request in /prod.
    log.zone("/dev", "{}");
    let dev = bound("tok_dev", &[(Role::Requester, "/dev")], &[]);
    refused(
        &mut log,
        dev,
        submit("req_p", spec("/prod", &["p.corp.example"])),
        RejectCode::Forbidden,
    );
    assert!(get_request(&log.store, "req_p").unwrap().is_none());
}

#[test]
fn unchanged_renewals_skip_approval_when_the_zone_says_so_and_changed_ones_do_not() {
    for (skips, expect_pending_for_same) in [(true, false), (false, true)] {
        let mut log = Log::initialized();
        log.zone(
            "/prod",
            &format!(
                r#"{{"approval_required":{{"value":true}},"renewal_skips_approval":{{"value":{skips}}}}}"#
            ),
        );
        let requester = bound("tok_req", &[(Role::Requester, "/prod")], &[]);
        let approver = bound("tok_app", &[(Role::Approver, "/prod")], &[]);
        log.propose(
            requester.clone(),
            submit("req_1", spec("/prod", &["a.corp.example"])),
        );
        let approved = updated(&log.propose(approver, decide("req_1", Decision::Approve, "ok")));
        log.propose(worker(), complete(&approved, 1));
        let mut same = spec("/prod", &["a.corp.example"]);
        same.renewal_of = Some(cert_id(1));
        let out = recorded(&log.propose(requester.clone(), submit("req_2", same)));
        assert_eq!(
            out.state == RequestState::PendingApproval,
            expect_pending_for_same,
            "skips={skips}"
        );
        if skips {
            assert!(out.approval.unwrap().skipped.is_some());
        }
        let mut changed = spec("/prod", &["a.corp.example", "b.corp.example"]);
        changed.renewal_of = Some(cert_id(1));
        let out = recorded(&log.propose(requester, submit("req_3", changed)));
        assert_eq!(
            out.state,
            RequestState::PendingApproval,
            "a changed renewal is approved again"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------------

fn token(id: &str, bindings: &[(Role, &str)]) -> certplane_core::TokenRecord {
    certplane_core::TokenRecord {
        id: id.into(),
        name: id.into(),
        kind: Default::default(),
        secret_sha256: format!("{:0>64}", hex::encode(id)),
        subject: None,
        roles: vec![],
        zones: vec![],
        bindings: bindings
            .iter()
            .map(|(r, z)| certplane_core::RoleBinding::new(*r, z))
            .collect(),
        groups: vec![],
        created_at: Timestamp(0),
        created_by: String::new(),
        expires_at: None,
        revoked_at: None,
    }
}

#[test]
fn the_root_token_can_be_revoked_only_once_another_admin_exists() {
    let mut log = Log::initialized();
    let r = refused(
        &mut log,
        admin(),
        Command::RevokeToken {
            id: "tok_root".into(),
        },
        RejectCode::Conflict,
    );
    assert!(r.message.contains("last active admin"));
    // Only principal managers create tokens.
    let owner = bound("tok_owner", &[(Role::ZoneOwner, "/")], &[]);
    refused(
        &mut log,
        owner,
        Command::CreateToken(Box::new(token("tok_x", &[(Role::Admin, "/")]))),
        RejectCode::Forbidden,
    );
    // A zone admin does not count as an admin of the cluster.
    let zoned = token("tok_zoned", &[(Role::Admin, "/prod")]);
    assert!(log
        .propose(admin(), Command::CreateToken(Box::new(zoned)))
        .result
        .is_ok());
    refused(
        &mut log,
        admin(),
        Command::RevokeToken {
            id: "tok_root".into(),
        },
        RejectCode::Conflict,
    );
    let second = token("tok_second_admin", &[(Role::Admin, "/")]);
    match log
        .propose(admin(), Command::CreateToken(Box::new(second)))
        .result
    {
        Ok(Applied::TokenCreated { token }) => {
            assert_eq!(token.created_by, "tok_root");
        }
        other => panic!("{other:?}"),
    }
    // The same secret hash cannot be registered twice.
    refused(
        &mut log,
        admin(),
        Command::CreateToken(Box::new(certplane_core::TokenRecord {
            id: "tok_other_admin".into(),
            ..token("tok_second_admin", &[(Role::Admin, "/")])
        })),
        RejectCode::Conflict,
    );
    match log
        .propose(
            admin(),
            Command::RevokeToken {
                id: "tok_root".into(),
            },
        )
        .result
    {
        Ok(Applied::TokenRevoked { token }) => assert!(token.revoked_at.is_some()),
        other => panic!("{other:?}"),
    }
    let second = certplane_core::apply::get_token(&log.store, "tok_second_admin")
        .unwrap()
        .unwrap();
    refused(
        &mut log,
        second.principal(),
        Command::RevokeToken {
            id: "tok_second_admin".into(),
        },
        RejectCode::Conflict,
    );
    refused(
        &mut log,
        admin(),
        Command::CreateToken(Box::new(token("tok_bad", &[(Role::Admin, "prod/")]))),
        RejectCode::InvalidArgument,
    );
}

// ---------------------------------------------------------------------------------------------------
// Expiry notices
// ---------------------------------------------------------------------------------------------------

#[test]
fn expiry_notices_are_due_at_the_zone_thresholds_sent_once_and_dropped_with_the_certificate() {
    let mut log = Log::initialized();
    log.zone(
        "/short",
        r#"{"notify_before":{"value":"90s"},"renew_before":{"value":"60s"}}"#,
    );
    let mut s = spec("/short", &["n.corp.example"]);
    s.validity = Span::seconds(100);
    let request = log.approved("req_n", s);
    let cert = log.issue(&request, 7);
    let notices = &certificate(&log.store, &cert.id).notices;
    assert_eq!(notices.len(), 2);
    assert_eq!(
        keys_of(&log.store, Keyspace::NoticeQueue, b"").len(),
        2,
        "both notices are queued"
    );
    let worker = Principal::system(certplane_core::apply::NOTICE_WORKER, "notices");
    let notify = |threshold: &str| Command::NotifyExpiring {
        certificate_id: cert.id.clone(),
        threshold: threshold.into(),
    };
    // not_after is 100 s after the epoch of this log; the notify notice is due at 10 s.
    refused(
        &mut log,
        admin(),
        notify("notify_before"),
        RejectCode::Forbidden,
    );
    if log.now().0 < 10_000 {
        refused(
            &mut log,
            worker.clone(),
            notify("notify_before"),
            RejectCode::Conflict,
        );
    }
    while log.now().0 < 10_000 {
        log.propose(admin(), Command::Noop);
    }
    match log.propose(worker.clone(), notify("notify_before")).result {
        Ok(Applied::ExpiryNoticed { record, threshold }) => {
            assert_eq!(threshold, "notify_before");
            assert!(record.notices[0].sent_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    refused(
        &mut log,
        worker.clone(),
        notify("notify_before"),
        RejectCode::StaleGeneration,
    );
    assert_eq!(keys_of(&log.store, Keyspace::NoticeQueue, b"").len(), 1);
    // Revoked: the remaining notice leaves the queue and is refused.
    assert!(log
        .propose(admin(), revoke(&cert.id, RevocationReason::KeyCompromise))
        .result
        .is_ok());
    assert!(keys_of(&log.store, Keyspace::NoticeQueue, b"").is_empty());
    while log.now().0 < 40_000 {
        log.propose(admin(), Command::Noop);
    }
    refused(
        &mut log,
        worker,
        notify("renew_before"),
        RejectCode::Conflict,
    );
    assert!(verify_chain(&log.store).unwrap().ok);
}

// ---------------------------------------------------------------------------------------------------
// Deployments and automatic renewal
// ---------------------------------------------------------------------------------------------------

fn deploy_worker() -> Principal {
    Principal::system(certplane_core::apply::DEPLOY_WORKER, "deploy worker")
}

fn renewal_worker() -> Principal {
    Principal::system(certplane_core::apply::RENEWAL_WORKER, "renewal worker")
}

fn record_deployment(
    cert: &str,
    destination: usize,
    attempt: u32,
    outcome: certplane_core::deploy::DeploymentOutcome,
) -> Command {
    Command::RecordDeployment(Box::new(certplane_core::command::RecordDeployment {
        certificate_id: cert.into(),
        destination,
        attempt,
        outcome,
    }))
}

fn deployed(arn: &str) -> certplane_core::deploy::DeploymentOutcome {
    certplane_core::deploy::DeploymentOutcome::Deployed {
        arn: arn.into(),
        observed_serial: "1".into(),
        tags_restored: false,
    }
}

const ARN_EU: &str = "arn:aws:acm:eu-west-1:123456789012:certificate/aaaa-1";
const ARN_US: &str = "arn:aws:acm:us-east-1:123456789012:certificate/bbbb-2";

#[test]
fn deployments_are_fenced_by_attempt_and_a_renewal_keeps_every_arn() {
    use certplane_core::deploy::{DeploymentOutcome, DeploymentState};
    let mut log = Log::initialized();
    log.zone(
        "/",
        r#"{"destinations":{"value":[{"type":"acm","region":"eu-west-1","tags":{"team":"payments"}},{"type":"acm","region":"us-east-1"}]}}"#,
    );
    let r1 = log.approved("req_1", spec("/", &["a.corp.example"]));
    let a = log.issue(&r1, 1);
    assert_eq!(a.deployments.len(), 2);
    assert!(a
        .deployments
        .iter()
        .all(|d| d.state == DeploymentState::Pending && d.lineage == a.id && d.arn.is_none()));
    assert_eq!(keys_of(&log.store, Keyspace::DeploymentQueue, b"").len(), 2);
    assert_eq!(keys_of(&log.store, Keyspace::RenewalQueue, b"").len(), 1);

    // Only the deploy worker records outcomes, each naming the next attempt.
    refused(
        &mut log,
        admin(),
        record_deployment(&a.id, 0, 1, deployed(ARN_EU)),
        RejectCode::Forbidden,
    );
    log.propose(
        deploy_worker(),
        record_deployment(&a.id, 0, 1, DeploymentOutcome::Importing),
    );
    assert!(certificate(&log.store, &a.id).deployments[0].import_started);
    refused(
        &mut log,
        deploy_worker(),
        record_deployment(&a.id, 0, 1, deployed(ARN_EU)),
        RejectCode::StaleGeneration,
    );
    refused(
        &mut log,
        deploy_worker(),
        record_deployment(&a.id, 0, 2, deployed(ARN_US)),
        RejectCode::InvalidArgument,
    );
    assert!(log
        .propose(
            deploy_worker(),
            record_deployment(&a.id, 0, 2, deployed(ARN_EU))
        )
        .result
        .is_ok());
    // Deployed is final for this certificate: a late duplicate is stale.
    refused(
        &mut log,
        deploy_worker(),
        record_deployment(&a.id, 0, 3, deployed(ARN_EU)),
        RejectCode::StaleGeneration,
    );
    // A failure that learned the ARN binds it; a later outcome cannot name another.
    let retry_at = Timestamp(log.now().0 + 30_000);
    assert!(log
        .propose(
            deploy_worker(),
            record_deployment(
                &a.id,
                1,
                1,
                DeploymentOutcome::Failed {
                    error: "did not verify".into(),
                    arn: Some(ARN_US.into()),
                    retry_at,
                },
            ),
        )
        .result
        .is_ok());
    let now = certificate(&log.store, &a.id);
    assert_eq!(now.deployments[1].state, DeploymentState::Failed);
    assert_eq!(now.deployments[1].next_attempt_at, retry_at);
    refused(
        &mut log,
        deploy_worker(),
        record_deployment(
            &a.id,
            1,
            2,
            deployed("arn:aws:acm:us-east-1:123456789012:certificate/other"),
        ),
        RejectCode::InvalidArgument,
    );
    assert_eq!(keys_of(&log.store, Keyspace::DeploymentQueue, b"").len(), 1);

    // The renewal worker submits only the due renewal, under the derived id, once.
    let due = now.renewal.clone().unwrap().due_at;
    assert!(due.0 <= now.details.not_after.0 - Span::days(30).millis() + Span::days(3).millis());
    let renewal_spec = || {
        let mut s = spec("/", &["a.corp.example"]);
        s.renewal_of = Some(a.id.clone());
        s
    };
    let early = log.propose(
        renewal_worker(),
        submit(&format!("renew-{}-1", a.id), renewal_spec()),
    );
    assert_eq!(code(&early), Some(RejectCode::Conflict), "{early:?}");
    let at_due = |log: &Log, id: &str| {
        Proposal::new(
            Timestamp(due.0.max(log.now().0)),
            renewal_worker(),
            submit(id, renewal_spec()),
        )
    };
    let wrong = log.propose_full(at_due(&log, "renew-x-1"));
    assert_eq!(code(&wrong), Some(RejectCode::StaleGeneration));
    let first = log.propose_full(at_due(&log, &format!("renew-{}-1", a.id)));
    let r2 = recorded(&first);
    assert_eq!(r2.state, RequestState::Approved);
    assert!(keys_of(&log.store, Keyspace::RenewalQueue, b"").is_empty());
    let again = log.propose_full(at_due(&log, &format!("renew-{}-1", a.id)));
    assert!(again.result.is_err(), "a second leader's copy is refused");
    let again = log.propose_full(at_due(&log, &format!("renew-{}-2", a.id)));
    assert_eq!(code(&again), Some(RejectCode::StaleGeneration));

    let b = log.issue(&r2, 2);
    assert_eq!(b.deployments.len(), 2);
    assert_eq!(b.deployments[0].arn.as_deref(), Some(ARN_EU));
    assert_eq!(b.deployments[1].arn.as_deref(), Some(ARN_US));
    assert!(b
        .deployments
        .iter()
        .all(|d| d.lineage == a.id && d.state == DeploymentState::Pending && d.attempts == 0));
    let a_now = certificate(&log.store, &a.id);
    assert_eq!(a_now.deployments[0].state, DeploymentState::Deployed);
    assert_eq!(a_now.deployments[1].state, DeploymentState::Cancelled);
    // Only the successor's deployments and renewal are queued.
    assert_eq!(keys_of(&log.store, Keyspace::DeploymentQueue, b"").len(), 2);
    let renewals = keys_of(&log.store, Keyspace::RenewalQueue, b"");
    assert_eq!(renewals.len(), 1);
    assert!(renewals[0].ends_with(b.id.as_bytes()));
    // An outcome for the superseded certificate is stale.
    refused(
        &mut log,
        deploy_worker(),
        record_deployment(&a.id, 1, 2, deployed(ARN_US)),
        RejectCode::StaleGeneration,
    );

    // A renewal that fails puts the certificate back in the queue after a back-off.
    let b_due = b.renewal.clone().unwrap().due_at;
    let mut s = spec("/", &["a.corp.example"]);
    s.renewal_of = Some(b.id.clone());
    let r3 = recorded(&log.propose_full(Proposal::new(
        Timestamp(b_due.0.max(log.now().0)),
        renewal_worker(),
        submit(&format!("renew-{}-1", b.id), s),
    )));
    assert!(log
        .propose(worker(), fail(&r3.id, r3.generation))
        .result
        .is_ok());
    let b_now = certificate(&log.store, &b.id);
    let schedule = b_now.renewal.unwrap();
    assert_eq!(schedule.request_id, None);
    assert_eq!(schedule.attempts, 1);
    assert!(schedule.last_error.unwrap().contains("failed"));
    assert_eq!(keys_of(&log.store, Keyspace::RenewalQueue, b"").len(), 1);
    assert!(verify_chain(&log.store).is_ok());
}

#[test]
fn a_csr_request_cannot_have_destinations_and_zones_can_turn_renewal_off() {
    let mut log = Log::initialized();
    log.zone(
        "/",
        r#"{"destinations":{"value":[{"type":"acm","region":"eu-west-1"}]}}"#,
    );
    let mut csr = spec("/", &["a.corp.example"]);
    csr.key = KeySource::Csr {
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n".into(),
    };
    let out = log.propose(admin(), submit("req_1", csr.clone()));
    assert_eq!(code(&out), Some(RejectCode::InvalidArgument));
    assert!(rejection(&out).message.contains("private key"));
    csr.destinations = Some(Vec::new());
    log.approved("req_2", csr);

    log.zone("/", r#"{"auto_renew":{"value":false}}"#);
    let r = log.approved("req_3", spec("/", &["b.corp.example"]));
    let c = log.issue(&r, 3);
    assert!(c.renewal.is_none());
    assert!(c.deployments.is_empty());
    assert!(keys_of(&log.store, Keyspace::RenewalQueue, b"").is_empty());
}

#[test]
fn retiring_in_a_cleanup_zone_queues_the_acm_deletion_once() {
    use certplane_core::deploy::{DeploymentOutcome, DeploymentState};
    let mut log = Log::initialized();
    log.zone(
        "/",
        r#"{"acm_cleanup":{"value":true},"destinations":{"value":[{"type":"acm","region":"eu-west-1"}]}}"#,
    );
    let r1 = log.approved("req_1", spec("/", &["a.corp.example"]));
    let a = log.issue(&r1, 1);
    log.propose(
        deploy_worker(),
        record_deployment(&a.id, 0, 1, DeploymentOutcome::Importing),
    );
    assert!(log
        .propose(
            deploy_worker(),
            record_deployment(&a.id, 0, 2, deployed(ARN_EU))
        )
        .result
        .is_ok());
    // A Deleted outcome is refused while the certificate is managed.
    refused(
        &mut log,
        deploy_worker(),
        record_deployment(&a.id, 0, 3, DeploymentOutcome::Deleted),
        RejectCode::StaleGeneration,
    );
    // A pending one, never deployed, is only cancelled.
    let r2 = log.approved("req_2", spec("/", &["b.corp.example"]));
    let b = log.issue(&r2, 2);
    log.ok(Command::RetireCertificate {
        id: b.id.clone(),
        reason: None,
    });
    assert_eq!(
        certificate(&log.store, &b.id).deployments[0].state,
        DeploymentState::Cancelled
    );

    log.ok(Command::RetireCertificate {
        id: a.id.clone(),
        reason: None,
    });
    let retired = certificate(&log.store, &a.id);
    assert_eq!(retired.deployments[0].state, DeploymentState::Deleting);
    assert_eq!(keys_of(&log.store, Keyspace::DeploymentQueue, b"").len(), 1);
    assert!(log
        .propose(
            deploy_worker(),
            record_deployment(&a.id, 0, 3, DeploymentOutcome::Deleted)
        )
        .result
        .is_ok());
    assert_eq!(
        certificate(&log.store, &a.id).deployments[0].state,
        DeploymentState::Deleted
    );
    assert!(keys_of(&log.store, Keyspace::DeploymentQueue, b"").is_empty());
    refused(
        &mut log,
        deploy_worker(),
        record_deployment(&a.id, 0, 4, DeploymentOutcome::Deleted),
        RejectCode::StaleGeneration,
    );
}

// ---------------------------------------------------------------------------------------------------
// ACM Private CA issuers (Pattern 2): begin, record the ARN, complete; revocation intents
// ---------------------------------------------------------------------------------------------------

/// The newest audit record.
fn last_audit(store: &MemStore) -> certplane_core::audit::AuditRecord {
    let all = store.scan(Keyspace::Audit, b"", b"", usize::MAX).unwrap();
    let (_, bytes) = all.last().expect("an audit record");
    decode_record("audit", bytes).unwrap()
}

const CA_ARN: &str = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/ca-1";

fn pca_issuer(name: &str, mode: PcaMode) -> IssuerRecord {
    IssuerRecord {
        kind: IssuerKind::AcmPca,
        key: None,
        acm_pca: Some(AcmPcaSettings {
            ca_arn: CA_ARN.into(),
            region: "eu-west-1".into(),
            role_arn: None,
            template_arn: None,
            signing_algorithm: "SHA256WITHRSA".into(),
            mode,
        }),
        ..issuer(name)
    }
}

fn csr_spec(zone: &str, name: &str, issuer: &str) -> RequestSpec {
    RequestSpec {
        key: KeySource::Csr {
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nx\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
        },
        issuer: Some(issuer.into()),
        ..spec(zone, &[name])
    }
}

fn begin(request: &RequestRecord) -> Command {
    Command::BeginAwsIssuance {
        request_id: request.id.clone(),
        generation: request.generation,
    }
}

fn record_arn(request: &RequestRecord, arn: &str) -> Command {
    Command::RecordAwsIssuance {
        request_id: request.id.clone(),
        generation: request.generation,
        certificate_arn: arn.into(),
        aws_request_id: Some("aws-req-1".into()),
    }
}

#[test]
fn an_acm_pca_issuance_goes_step_by_step_and_stays_queued_until_complete() {
    let mut log = Log::initialized();
    log.ok(Command::CreateIssuer(Box::new(pca_issuer(
        "pca",
        PcaMode::Csr,
    ))));
    let request = log.approved("req_1", csr_spec("/", "a.corp.example", "pca"));
    assert_eq!(queue(&log.store), vec!["req_1".to_string()]);

    // Only the issuance worker records AWS steps; a builtin issuance cannot begin one.
    let out = log.propose(admin(), begin(&request));
    assert_eq!(code(&out), Some(RejectCode::Forbidden));
    let out = log.propose(worker(), begin(&request));
    let issuing = updated(&out);
    assert_eq!(issuing.state, RequestState::Issuing);
    let aws = issuing.aws.clone().expect("the AWS call is recorded");
    assert_eq!(aws.token, aws_idempotency_token("req_1"));
    assert_eq!(aws.token.len(), 32);
    assert_eq!(aws.ca_arn, CA_ARN);
    assert_eq!(aws.certificate_arn, None);
    assert_eq!(
        queue(&log.store),
        vec!["req_1".to_string()],
        "still an intent"
    );
    // A second begin for the old generation is stale.
    assert_eq!(
        code(&log.propose(worker(), begin(&request))),
        Some(RejectCode::StaleGeneration)
    );
    // Completing before the ARN is known is refused.
    assert_eq!(
        code(&log.propose(worker(), complete(&issuing, 1))),
        Some(RejectCode::InvalidArgument)
    );

    let arn = format!("{CA_ARN}/certificate/c1");
    let with_arn = updated(&log.propose(worker(), record_arn(&issuing, &arn)));
    assert_eq!(with_arn.state, RequestState::Issuing);
    let recorded_aws = with_arn.aws.clone().unwrap();
    assert_eq!(recorded_aws.certificate_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(recorded_aws.aws_request_id.as_deref(), Some("aws-req-1"));
    assert_eq!(recorded_aws.token, aws.token, "the token never changes");
    // The audit record of the answer joins CloudTrail.
    let audit = last_audit(&log.store);
    assert_eq!(audit.action, "request.aws_issued");
    assert_eq!(audit.details.ca_arn.as_deref(), Some(CA_ARN));
    assert_eq!(audit.details.arn.as_deref(), Some(arn.as_str()));
    assert_eq!(audit.details.aws_request_id.as_deref(), Some("aws-req-1"));

    let mut done = complete(&with_arn, 7);
    if let Command::CompleteIssuance(c) = &mut done {
        c.private_key = None;
        c.aws_request_id = Some("aws-req-2".into());
    }
    let issued = updated(&log.propose(worker(), done));
    assert_eq!(issued.state, RequestState::Issued);
    assert!(queue(&log.store).is_empty());
    let cert = certificate(&log.store, &cert_id(7));
    let link = cert.issuance.clone().unwrap();
    let aws_link = link.aws.expect("the certificate knows its ARN");
    assert_eq!(aws_link.certificate_arn, arn);
    assert_eq!(aws_link.ca_arn, CA_ARN);
    assert_eq!(aws_link.mode, PcaMode::Csr);
    assert!(!aws_link.revocation_pending);
    let serials = keys_of(&log.store, Keyspace::IssuedSerials, &index_prefix("pca"));
    assert_eq!(serials.len(), 1);

    // Revoking records the revocation and an intent for the CA; the worker's answer clears it.
    log.ok(revoke(&cert.id, RevocationReason::KeyCompromise));
    let revoked = certificate(&log.store, &cert.id);
    assert_eq!(revoked.status, CertificateStatus::Revoked);
    assert!(
        revoked
            .issuance
            .as_ref()
            .unwrap()
            .aws
            .as_ref()
            .unwrap()
            .revocation_pending
    );
    assert_eq!(keys_of(&log.store, Keyspace::AwsQueue, b"").len(), 1);
    let answer = Command::RecordAwsRevocation {
        certificate_id: cert.id.clone(),
        aws_request_id: Some("aws-req-3".into()),
    };
    assert_eq!(
        code(&log.propose(admin(), answer.clone())),
        Some(RejectCode::Forbidden)
    );
    log.propose(worker(), answer.clone())
        .result
        .expect("recorded");
    let done = certificate(&log.store, &cert.id);
    let aws_done = done.issuance.unwrap().aws.unwrap();
    assert!(!aws_done.revocation_pending);
    assert_eq!(aws_done.revocation_request_id.as_deref(), Some("aws-req-3"));
    assert!(keys_of(&log.store, Keyspace::AwsQueue, b"").is_empty());
    assert_eq!(
        code(&log.propose(worker(), answer)),
        Some(RejectCode::StaleGeneration),
        "a second answer finds nothing pending"
    );
}

#[test]
fn one_token_one_certificate_and_failures_end_an_aws_issuance() {
    let mut log = Log::initialized();
    log.ok(Command::CreateIssuer(Box::new(pca_issuer(
        "pca",
        PcaMode::Csr,
    ))));
    let request = log.approved("req_1", csr_spec("/", "a.corp.example", "pca"));
    let issuing = updated(&log.propose(worker(), begin(&request)));
    let with_arn = updated(&log.propose(worker(), record_arn(&issuing, "arn:one")));
    // A deposed leader's late answer for the earlier generation is stale.
    assert_eq!(
        code(&log.propose(worker(), record_arn(&issuing, "arn:two"))),
        Some(RejectCode::StaleGeneration)
    );
    // Even at the current generation AWS cannot name another certificate for the same token.
    assert_eq!(
        code(&log.propose(worker(), record_arn(&with_arn, "arn:two"))),
        Some(RejectCode::Conflict)
    );
    let failed = updated(&log.propose(worker(), fail("req_1", with_arn.generation)));
    assert_eq!(failed.state, RequestState::Failed);
    assert!(queue(&log.store).is_empty());

    // A certificate whose names differ from the approved ones is refused by apply as well.
    let request = log.approved("req_2", csr_spec("/", "b.corp.example", "pca"));
    let issuing = updated(&log.propose(worker(), begin(&request)));
    let with_arn = updated(&log.propose(worker(), record_arn(&issuing, "arn:three")));
    let mut details = issued_details(&with_arn, 9);
    details.sans.push("extra.corp.example".into());
    let out = log.propose(
        worker(),
        complete_with("req_2", with_arn.generation, cert_id(9), details),
    );
    assert_eq!(code(&out), Some(RejectCode::InvalidArgument));
}

#[test]
fn acm_pca_issuers_refuse_requests_they_cannot_issue_before_any_aws_call() {
    let mut log = Log::initialized();
    log.ok(Command::CreateIssuer(Box::new(pca_issuer(
        "pca-csr",
        PcaMode::Csr,
    ))));
    log.ok(Command::CreateIssuer(Box::new(pca_issuer(
        "pca-native",
        PcaMode::AcmNative,
    ))));
    let messages = |out: &Outcome| -> Vec<String> {
        rejection(out)
            .violations
            .iter()
            .filter(|v| v.rule == "issuer")
            .map(|v| v.message.clone())
            .collect()
    };
    // csr mode with a key spec: certplane would have to hold the key.
    let generated = RequestSpec {
        issuer: Some("pca-csr".into()),
        ..spec("/", &["a.corp.example"])
    };
    let out = log.propose(admin(), submit("req_1", generated));
    assert_eq!(messages(&out).len(), 1, "{out:?}");
    // acm-native with a CSR, an IP SAN, a validity shorter than ACM's 395 days.
    let out = log.propose(
        admin(),
        submit("req_2", csr_spec("/", "b.corp.example", "pca-native")),
    );
    let m = messages(&out);
    assert!(m.iter().any(|m| m.contains("not a CSR")), "{m:?}");
    assert!(m.iter().any(|m| m.contains("395")), "{m:?}");
    let with_ip = RequestSpec {
        issuer: Some("pca-native".into()),
        sans: vec![san("c.corp.example"), san("10.0.0.1")],
        validity: Span::days(396),
        ..spec("/", &["c.corp.example"])
    };
    let out = log.propose(admin(), submit("req_3", with_ip));
    assert!(messages(&out).iter().any(|m| m.contains("IP")), "{out:?}");
    let ed25519 = RequestSpec {
        issuer: Some("pca-native".into()),
        key: KeySource::Generate {
            spec: KeySpec::Ed25519,
        },
        key_facts: KeyFacts {
            algorithm: KeyType::Ed25519,
            bits: 256,
        },
        validity: Span::days(396),
        ..spec("/", &["d.corp.example"])
    };
    let out = log.propose(admin(), submit("req_4", ed25519));
    assert!(
        messages(&out).iter().any(|m| m.contains("RSA 2048")),
        "{out:?}"
    );
    // What ACM can do passes.
    let fine = RequestSpec {
        issuer: Some("pca-native".into()),
        key: KeySource::Generate {
            spec: KeySpec::Rsa { bits: 2048 },
        },
        key_facts: KeyFacts {
            algorithm: KeyType::Rsa,
            bits: 2048,
        },
        validity: Span::days(396),
        ..spec("/", &["e.corp.example"])
    };
    log.approved("req_5", fine);
    // An issuer record that mixes a key with PCA settings, or has neither, is refused.
    let mixed = IssuerRecord {
        key: Some(sealed("x")),
        ..pca_issuer("mixed", PcaMode::Csr)
    };
    let out = log.propose(admin(), Command::CreateIssuer(Box::new(mixed)));
    assert_eq!(code(&out), Some(RejectCode::InvalidArgument));
    let keyless = IssuerRecord {
        key: None,
        ..issuer("keyless")
    };
    let out = log.propose(admin(), Command::CreateIssuer(Box::new(keyless)));
    assert_eq!(code(&out), Some(RejectCode::InvalidArgument));
}

#[test]
fn acm_native_certificates_are_followed_and_acms_own_renewal_becomes_the_successor() {
    let mut log = Log::initialized();
    log.ok(Command::CreateIssuer(Box::new(pca_issuer(
        "native",
        PcaMode::AcmNative,
    ))));
    let native = RequestSpec {
        issuer: Some("native".into()),
        key: KeySource::Generate {
            spec: KeySpec::Rsa { bits: 2048 },
        },
        key_facts: KeyFacts {
            algorithm: KeyType::Rsa,
            bits: 2048,
        },
        validity: Span::days(396),
        ..spec("/", &["api.corp.example"])
    };
    let request = log.approved("req_1", native);
    let issuing = updated(&log.propose(worker(), begin(&request)));
    let arn = "arn:aws:acm:eu-west-1:123456789012:certificate/n1";
    let with_arn = updated(&log.propose(worker(), record_arn(&issuing, arn)));
    let mut done = complete(&with_arn, 21);
    if let Command::CompleteIssuance(c) = &mut done {
        c.private_key = None;
    }
    updated(&log.propose(worker(), done));
    let cert = certificate(&log.store, &cert_id(21));
    assert!(cert.renewal.is_none(), "ACM renews it, not certplane");
    assert_eq!(
        keys_of(&log.store, Keyspace::AwsQueue, TRACK_PREFIX).len(),
        1
    );

    let check = |generation: u64, renewed: Option<AcmRenewed>, next: i64| {
        Command::RecordAcmCheck(Box::new(RecordAcmCheck {
            certificate_id: cert_id(21),
            generation,
            status: "ISSUED".into(),
            renewal_status: Some("SUCCESS".into()),
            next_check_at: Timestamp(next),
            renewed,
        }))
    };
    assert_eq!(
        code(&log.propose(admin(), check(cert.generation, None, 5_000))),
        Some(RejectCode::Forbidden)
    );
    log.propose(worker(), check(cert.generation, None, 5_000))
        .result
        .expect("checked");
    let checked = certificate(&log.store, &cert_id(21));
    let aws = checked.issuance.clone().unwrap().aws.unwrap();
    assert_eq!(aws.acm_status.as_deref(), Some("ISSUED"));
    assert_eq!(aws.next_check_at, Some(Timestamp(5_000)));
    assert_eq!(
        keys_of(&log.store, Keyspace::AwsQueue, TRACK_PREFIX),
        vec![track_key(Timestamp(5_000), &cert_id(21))],
        "one place in the queue, at the next check"
    );
    assert_eq!(
        code(&log.propose(worker(), check(cert.generation, None, 6_000))),
        Some(RejectCode::StaleGeneration)
    );

    // ACM renewed it: another serial at the same ARN.
    let mut details = checked.details.clone();
    details.serial = "beef".into();
    details.fingerprint_sha256 = format!("{:064x}", 22);
    let renewed = AcmRenewed {
        certificate_id: cert_id(22),
        details: details.clone(),
        chain_pem: "-----BEGIN CERTIFICATE-----\nbeef\n-----END CERTIFICATE-----\n".into(),
        aws_request_id: Some("aws-req-9".into()),
    };
    let mut other_names = renewed.clone();
    other_names.details.sans = vec!["evil.corp.example".into()];
    assert_eq!(
        code(&log.propose(
            worker(),
            check(checked.generation, Some(other_names), 7_000)
        )),
        Some(RejectCode::InvalidArgument)
    );
    log.propose(worker(), check(checked.generation, Some(renewed), 7_000))
        .result
        .expect("renewal recorded");
    let old = certificate(&log.store, &cert_id(21));
    let next = certificate(&log.store, &cert_id(22));
    assert_eq!(old.superseded_by.as_deref(), Some(cert_id(22).as_str()));
    assert_eq!(next.supersedes.as_deref(), Some(cert_id(21).as_str()));
    assert_eq!(next.details, details);
    assert_eq!(
        next.issuance
            .as_ref()
            .unwrap()
            .aws
            .as_ref()
            .unwrap()
            .certificate_arn,
        arn
    );
    assert_eq!(
        keys_of(&log.store, Keyspace::AwsQueue, TRACK_PREFIX),
        vec![track_key(Timestamp(7_000), &cert_id(22))],
        "the successor is followed now, not the old one"
    );
    assert_eq!(
        keys_of(&log.store, Keyspace::IssuedSerials, &index_prefix("native")).len(),
        2
    );
    let audit = last_audit(&log.store);
    assert_eq!(audit.action, "certificate.acm_renewed");
    assert_eq!(audit.details.aws_request_id.as_deref(), Some("aws-req-9"));
    assert_eq!(audit.details.arn.as_deref(), Some(arn));
}

// ---------------------------------------------------------------------------------------------------
// Batches: several worker commands in one entry
// ---------------------------------------------------------------------------------------------------

fn batch(commands: Vec<Command>) -> Command {
    Command::Batch { commands }
}

fn batch_results(out: &Outcome) -> Vec<Result<Applied, Rejection>> {
    match &out.result {
        Ok(Applied::Batch { results }) => results.clone(),
        other => panic!("expected a batch answer, got {other:?}"),
    }
}

fn audit_records(store: &MemStore) -> Vec<certplane_core::audit::AuditRecord> {
    records(store, Keyspace::Audit, "audit")
}

#[test]
fn a_batch_applies_each_command_as_its_own_entry_would() {
    // The same commands, one entry each in `single` and one batch entry in `batched`.
    let zone_json = r#"{"allowed_domains": {"value": [".corp.example"]}}"#;
    let mut single = Log::initialized();
    let mut batched = Log::initialized();
    single.zone("/b", zone_json);
    batched.zone("/b", zone_json);
    let submissions: Vec<Command> = (0..5)
        .map(|i| {
            let name = if i == 3 {
                "www.elsewhere.example".to_string()
            } else {
                format!("svc{i}.corp.example")
            };
            submit(&format!("req-b{i}"), spec("/b", &[name.as_str()]))
        })
        .collect();
    let one_by_one: Vec<_> = submissions
        .iter()
        .map(|c| single.propose(worker(), c.clone()).result)
        .collect();
    let audit_before = audit_records(&batched.store).len();
    let out = batched.propose(worker(), batch(submissions));
    let together = batch_results(&out);
    assert_eq!(together.len(), 5);

    // The same answers (the rejected one did not stop the rest), the same stored requests apart from
    // the log positions they record.
    for (i, (a, b)) in one_by_one.iter().zip(&together).enumerate() {
        assert_eq!(a.is_ok(), b.is_ok(), "command {i}");
        let (a, b) = (
            request(&single.store, &format!("req-b{i}")),
            request(&batched.store, &format!("req-b{i}")),
        );
        assert_eq!(a.state, b.state, "command {i}");
        assert_eq!(a.violations, b.violations, "command {i}");
        assert_eq!(a.spec, b.spec, "command {i}");
        assert_eq!(
            b.revision, out.index,
            "every command of the batch is at its index"
        );
    }
    assert_eq!(
        request(&batched.store, "req-b3").state,
        RequestState::Rejected
    );
    let states: Vec<_> = (0..5)
        .map(|i| request(&batched.store, &format!("req-b{i}")).state)
        .collect();
    assert_eq!(
        queue(&batched.store).len(),
        4,
        "four approved, each queued once: {states:?}"
    );

    // One audit record per command, none for the batch itself, and the chain holds.
    let audit = audit_records(&batched.store);
    let added: Vec<_> = audit[audit_before..].iter().collect();
    assert_eq!(added.len(), 5);
    for (i, record) in added.iter().enumerate() {
        assert_eq!(record.action, "request.submit");
        assert_eq!(record.object, format!("request/req-b{i}"));
        assert_eq!(record.log_index, out.index);
        assert_eq!(record.actor, ISSUANCE_WORKER);
    }
    assert!(added[3].outcome.starts_with("rejected:"), "{:?}", added[3]);
    assert!(verify_chain(&batched.store).unwrap().ok);

    // Outcomes batched too: two completions, and a second outcome for the same request in the same
    // entry is refused as the separate entry would have been.
    let first = request(&batched.store, "req-b0");
    let second = request(&batched.store, "req-b1");
    let issued_before = get_issuer(&batched.store, "builtin")
        .unwrap()
        .unwrap()
        .issued_count;
    let out = batched.propose(
        worker(),
        batch(vec![
            complete(&first, 900),
            complete(&second, 901),
            complete(&first, 902),
        ]),
    );
    let results = batch_results(&out);
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(
        results[2].is_err(),
        "one certificate per request: {results:?}"
    );
    assert_eq!(
        request(&batched.store, "req-b0").state,
        RequestState::Issued
    );
    assert_eq!(
        request(&batched.store, "req-b1").state,
        RequestState::Issued
    );
    assert!(get_certificate(&batched.store, &cert_id(902))
        .unwrap()
        .is_none());
    let issuer = get_issuer(&batched.store, "builtin").unwrap().unwrap();
    assert_eq!(issuer.issued_count, issued_before + 2);
    assert!(verify_chain(&batched.store).unwrap().ok);
}

#[test]
fn only_workers_batch_and_a_batch_holds_no_batch_and_no_init() {
    let mut log = Log::initialized();
    let digest = state_digest(&log.store).unwrap();
    let requests_before = all_requests(&log.store).len();
    let refused = [
        (
            admin(),
            batch(vec![submit("req-x", spec("/", &["a.corp.example"]))]),
            RejectCode::Forbidden,
        ),
        (
            worker(),
            batch(vec![batch(vec![submit(
                "req-y",
                spec("/", &["b.corp.example"]),
            )])]),
            RejectCode::InvalidArgument,
        ),
        (
            worker(),
            batch(vec![Command::Initialize {
                root_token: Box::new(support::root_token()),
                builtin_issuer: None,
            }]),
            RejectCode::InvalidArgument,
        ),
    ];
    for (actor, command, expected) in refused {
        let out = log.propose(actor, command);
        assert_eq!(code(&out), Some(expected));
        let audit = last_audit(&log.store);
        assert_eq!(audit.action, "sys.batch");
        assert!(audit.outcome.starts_with("rejected:"));
    }
    let mut with_key = Proposal::new(
        log.now(),
        worker(),
        batch(vec![submit("req-z", spec("/", &["c.corp.example"]))]),
    );
    with_key.idempotency_key = Some("k1".into());
    let out = log.propose_full(with_key);
    assert_eq!(code(&out), Some(RejectCode::InvalidArgument));
    assert_eq!(
        all_requests(&log.store).len(),
        requests_before,
        "nothing inside applied"
    );
    assert_ne!(
        state_digest(&log.store).unwrap(),
        digest,
        "each refusal is audited"
    );
}

#[test]
fn webhook_deliveries_of_one_batch_get_distinct_ids_in_event_order() {
    use certplane_core::webhook::{EventKind, WebhookRecord};
    let mut log = Log::initialized();
    log.ok(Command::CreateWebhook(Box::new(WebhookRecord {
        id: "wh_1".into(),
        zone: "/".into(),
        url: "https://hooks.corp.example/certplane".into(),
        events: vec![EventKind::RequestSubmitted, EventKind::RequestApproved],
        secret: sealed("wh_1"),
        description: String::new(),
        created_at: Timestamp(1),
        created_by: String::new(),
    })));
    let out = log.propose(
        worker(),
        batch(
            (0..3)
                .map(|i| {
                    submit(
                        &format!("req-w{i}"),
                        spec("/", &[format!("w{i}.corp.example").as_str()]),
                    )
                })
                .collect(),
        ),
    );
    assert!(batch_results(&out).iter().all(|r| r.is_ok()));
    let deliveries: Vec<certplane_core::webhook::DeliveryRecord> =
        records(&log.store, Keyspace::Deliveries, "delivery");
    let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    assert!(ids.len() >= 3, "{ids:?}");
    // In id order (the delivery queue's order) the events follow the commands of the batch.
    let requests: Vec<String> = deliveries
        .iter()
        .map(|d| {
            let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            body["data"]["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mut in_order = requests.clone();
    in_order.sort();
    assert_eq!(
        requests, in_order,
        "deliveries in event order: {requests:?}"
    );
    assert_eq!(requests.first().map(String::as_str), Some("req-w0"));
    assert_eq!(requests.last().map(String::as_str), Some("req-w2"));
    assert!(ids
        .iter()
        .all(|id| id.starts_with(&format!("dlv_{:016x}_", out.index))));
}

// ---------------------------------------------------------------------------------------------------
// Submissions that carry a certificate signed ahead (decision 0015)
// ---------------------------------------------------------------------------------------------------

/// A submission of `spec` carrying certificate `n`, signed ahead for it and chained to `chained_to`.
fn submit_presigned(id: &str, spec: RequestSpec, n: u32, chained_to: &str) -> Command {
    let as_requested = RequestRecord {
        id: id.into(),
        spec: spec.clone(),
        issuer: chained_to.into(),
        state: RequestState::Approved,
        violations: vec![],
        policy_versions: vec![],
        requested_by: String::new(),
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        certificate_id: None,
        error: None,
        generation: 1,
        revision: 0,
        queued_at: 0,
        approval: None,
        aws: None,
    };
    let Command::CompleteIssuance(mut done) = complete(&as_requested, n) else {
        unreachable!()
    };
    done.chain_pem = format!(
        "-----BEGIN CERTIFICATE-----\nleaf {n}\n-----END CERTIFICATE-----\n{}",
        issuer(chained_to).chain_pem
    );
    Command::SubmitRequest(Box::new(SubmitRequest {
        id: id.into(),
        spec,
        presigned: Some(done),
    }))
}

/// The answer of a submission issued by its own entry: the request and its certificate.
fn issued_by_entry(out: &Outcome) -> (RequestRecord, CertificateRecord) {
    match &out.result {
        Ok(Applied::RequestIssued {
            request,
            certificate,
        }) => ((**request).clone(), (**certificate).clone()),
        other => panic!("expected RequestIssued, got {other:?}"),
    }
}

fn issued_serials(store: &MemStore) -> Vec<IssuedSerial> {
    records(store, Keyspace::IssuedSerials, "issued serial")
}

#[test]
fn a_presigned_request_approved_at_once_is_issued_by_its_own_entry() {
    let mut log = Log::initialized();
    log.zone("/prod", "{}");
    let requester = who("tok_req", &[Role::Requester], &["/prod"]);
    let at = log.now();
    let out = log.propose(
        requester,
        submit_presigned(
            "req_1",
            spec("/prod", &["api.corp.example"]),
            0xa1,
            "builtin",
        ),
    );
    let (issued, answered) = issued_by_entry(&out);
    assert_eq!(issued.state, RequestState::Issued);
    assert_eq!(
        issued.certificate_id.as_deref(),
        Some(cert_id(0xa1).as_str())
    );
    assert_eq!((issued.generation, issued.revision), (2, out.index));
    assert_eq!(issued.requested_by, "tok_req");
    assert_eq!(request(&log.store, "req_1"), issued);
    assert_eq!(indexed_states(&log.store, "req_1"), vec!["issued"]);
    assert!(queue(&log.store).is_empty(), "nothing left for the worker");

    let cert = certificate(&log.store, &cert_id(0xa1));
    assert_eq!(cert, answered, "the answer carries the stored certificate");
    assert_eq!(cert.status, CertificateStatus::Active);
    assert_eq!((cert.zone.as_str(), cert.created_at), ("/prod", at));
    assert_eq!(
        cert.issuance
            .as_ref()
            .map(|l| (l.request_id.as_str(), l.issuer.as_str())),
        Some(("req_1", "builtin"))
    );
    let serials = issued_serials(&log.store);
    assert_eq!(serials.len(), 1);
    assert_eq!(serials[0].request_id, "req_1");
    assert_eq!(
        get_issuer(&log.store, "builtin")
            .unwrap()
            .unwrap()
            .issued_count,
        1
    );
    assert_eq!(counts(&log.store).unwrap().active, 1);

    // The trail is what two entries would have left: the requester's submission, then the
    // issuance worker's outcome, both at this entry's index; the chain verifies.
    let trail: Vec<(String, String, String, u64)> = audit_records(&log.store)
        .into_iter()
        .filter(|r| r.object == "request/req_1")
        .map(|r| (r.actor, r.action, r.outcome, r.log_index))
        .collect();
    assert_eq!(
        trail,
        vec![
            (
                "tok_req".into(),
                "request.submit".into(),
                "ok".into(),
                out.index
            ),
            (
                "system:issuance".into(),
                "request.issued".into(),
                "ok".into(),
                out.index
            ),
        ]
    );
    assert!(verify_chain(&log.store).unwrap().ok);
}

#[test]
fn a_presigned_submission_retried_with_its_idempotency_key_yields_one_certificate() {
    let mut log = Log::initialized();
    log.zone("/prod", "{}");
    let proposal = |n: u32| {
        Proposal::new(
            Timestamp(5_000),
            admin(),
            submit_presigned("req_1", spec("/prod", &["a.corp.example"]), n, "builtin"),
        )
        .with_idempotency(Some("key-1".into()), Some("hash-1".into()))
    };
    let first = log.propose_full(proposal(1));
    assert_eq!(issued_by_entry(&first).0.state, RequestState::Issued);
    // A retry signed again (another certificate) and sent with the same key: the first answer.
    let retry = log.propose_full(proposal(2));
    assert!(retry.replayed);
    assert_eq!(retry.index, first.index);
    assert_eq!(all_certificates(&log.store).len(), 1);
    assert_eq!(issued_serials(&log.store).len(), 1);
    assert_eq!(
        request(&log.store, "req_1").certificate_id,
        Some(cert_id(1))
    );
}

#[test]
fn a_presigned_certificate_is_dropped_unless_the_request_is_approved_at_once() {
    let mut log = Log::initialized();
    log.zone("/gated", r#"{"approval_required":{"value":true}}"#);
    log.zone(
        "/prod",
        r#"{"allowed_domains":{"value":[".corp.example"]}}"#,
    );

    // Waiting for approval: recorded pending, the certificate nowhere.
    let pending = recorded(&log.propose(
        admin(),
        submit_presigned("req_1", spec("/gated", &["a.corp.example"]), 1, "builtin"),
    ));
    assert_eq!(pending.state, RequestState::PendingApproval);
    // Breaking policy: rejected with its violations, the certificate nowhere.
    let out = log.propose(
        admin(),
        submit_presigned("req_2", spec("/prod", &["a.other.example"]), 2, "builtin"),
    );
    assert_eq!(code(&out), Some(RejectCode::PolicyViolation));
    assert_eq!(request(&log.store, "req_2").state, RequestState::Rejected);
    // Refused outright (no permission): nothing recorded at all.
    refused(
        &mut log,
        who("tok_dev", &[Role::Requester], &["/dev"]),
        submit_presigned("req_3", spec("/prod", &["a.corp.example"]), 3, "builtin"),
        RejectCode::Forbidden,
    );
    assert!(get_request(&log.store, "req_3").unwrap().is_none());
    assert!(all_certificates(&log.store).is_empty());
    assert!(issued_serials(&log.store).is_empty());

    // Approved, but the certificate is not one `apply` can accept for it: the request stays
    // approved in the queue for the worker, and no certificate is recorded.
    let mut other_names =
        submit_presigned("req_4", spec("/prod", &["b.corp.example"]), 4, "builtin");
    if let Command::SubmitRequest(s) = &mut other_names {
        if let Some(done) = &mut s.presigned {
            done.details.sans = vec!["c.corp.example".into()];
        }
    }
    let mut not_its_issuer =
        submit_presigned("req_5", spec("/prod", &["b.corp.example"]), 5, "another");
    let mut another_request =
        submit_presigned("req_6", spec("/prod", &["b.corp.example"]), 6, "builtin");
    if let Command::SubmitRequest(s) = &mut another_request {
        if let Some(done) = &mut s.presigned {
            done.request_id = "req_7".into();
        }
    }
    for (id, command) in [
        ("req_4", &mut other_names),
        ("req_5", &mut not_its_issuer),
        ("req_6", &mut another_request),
    ] {
        let record = recorded(&log.propose(admin(), command.clone()));
        assert_eq!(
            (record.id.as_str(), record.state),
            (id, RequestState::Approved)
        );
    }
    assert_eq!(queue(&log.store), vec!["req_4", "req_5", "req_6"]);
    assert!(all_certificates(&log.store).is_empty());
    assert!(issued_serials(&log.store).is_empty());
    assert!(verify_chain(&log.store).unwrap().ok);

    // The worker then issues one of them the usual way.
    let r4 = request(&log.store, "req_4");
    log.issue(&r4, 40);
    assert_eq!(queue(&log.store), vec!["req_5", "req_6"]);
}

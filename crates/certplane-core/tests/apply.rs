//! State machine tests over the in-memory store: no I/O, no runtime.

use std::collections::BTreeMap;

use certplane_core::apply::{counts, is_initialized, state_digest, token_by_secret_hash};
use certplane_core::audit::{verify_chain, AuditRecord};
use certplane_core::keys::{decode_record, encode_record, seq_key};
use certplane_core::query::{
    list_audit, list_certificates, AuditFilter, CertificateFilter, StatusFilter,
};
use certplane_core::{
    Applied, CertificateDetails, Command, ImportCertificate, Keyspace, Outcome, Principal,
    Proposal, RejectCode, Role, StateRead, StateStore, Timestamp,
};
use proptest::prelude::*;

mod support;
use support::{admin, root_token, Log};

const DAY: i64 = 86_400_000;

fn details(n: u32, not_after: i64) -> CertificateDetails {
    CertificateDetails {
        fingerprint_sha256: format!("{n:064x}"),
        subject: format!("CN=svc{n}.example.com"),
        common_name: Some(format!("svc{n}.example.com")),
        issuer: if n.is_multiple_of(2) {
            "CN=Even CA".into()
        } else {
            "CN=Odd CA".into()
        },
        serial: format!("{n:x}"),
        sans: vec![format!("svc{n}.example.com"), format!("alt{n}.internal")],
        not_before: Timestamp(0),
        not_after: Timestamp(not_after),
        key_algorithm: "EC".into(),
        key_bits: 256,
        signature_algorithm: "ecdsa-with-SHA256".into(),
        is_ca: false,
        self_signed: false,
    }
}

fn import(n: u32, not_after: i64, owner: &str, zone: &str) -> Command {
    Command::ImportCertificate(Box::new(ImportCertificate {
        id: format!("crt_{n:024x}"),
        details: details(n, not_after),
        chain_pem: format!("-----BEGIN CERTIFICATE-----\n{n}\n-----END CERTIFICATE-----\n"),
        owner: owner.into(),
        zone: zone.into(),
        tags: BTreeMap::from([("env".to_string(), "test".to_string())]),
        private_key: None,
    }))
}

impl Log {
    fn initialized() -> Self {
        Log::init(None)
    }
}

fn reject_code(out: &Outcome) -> Option<RejectCode> {
    out.result.as_ref().err().map(|r| r.code)
}

#[test]
fn initialisation_works_once() {
    let mut log = Log::new();
    assert!(!is_initialized(&log.store).unwrap());
    let first = log.propose(
        Principal::bootstrap(),
        Command::Initialize {
            root_token: Box::new(root_token()),
            builtin_issuer: None,
        },
    );
    assert!(matches!(first.result, Ok(Applied::Initialized { .. })));
    let second = log.propose(
        Principal::bootstrap(),
        Command::Initialize {
            root_token: Box::new(root_token()),
            builtin_issuer: None,
        },
    );
    assert_eq!(reject_code(&second), Some(RejectCode::AlreadyInitialized));
    let token = token_by_secret_hash(&log.store, &"ab".repeat(32))
        .unwrap()
        .expect("root token stored by hash");
    assert_eq!(token.id, "tok_root");
    assert!(token_by_secret_hash(&log.store, "00").unwrap().is_none());
}

#[test]
fn commands_before_initialisation_are_rejected() {
    let mut log = Log::new();
    let out = log.propose(admin(), import(1, DAY, "team-a", "payments"));
    assert_eq!(reject_code(&out), Some(RejectCode::NotInitialized));
}

#[test]
fn reimport_is_idempotent_and_retire_keeps_history() {
    let mut log = Log::initialized();
    let first = log.propose(admin(), import(7, 10 * DAY, "team-a", "payments/prod"));
    let Ok(Applied::CertificateImported {
        record,
        created: true,
    }) = &first.result
    else {
        panic!("{first:?}")
    };
    let again = log.propose(admin(), import(7, 10 * DAY, "team-b", "other"));
    let Ok(Applied::CertificateImported {
        record: same,
        created: false,
    }) = &again.result
    else {
        panic!("{again:?}")
    };
    assert_eq!(same, record, "a re-import changes nothing");
    assert_eq!(counts(&log.store).unwrap().active, 1);

    let retired = log.propose(
        admin(),
        Command::RetireCertificate {
            id: record.id.clone(),
            reason: None,
        },
    );
    let Ok(Applied::CertificateRetired { record: r }) = &retired.result else {
        panic!("{retired:?}")
    };
    assert_eq!(r.status.as_str(), "retired");
    assert_eq!(r.generation, 2);
    let c = counts(&log.store).unwrap();
    assert_eq!((c.active, c.retired), (0, 1));
    // The record is kept and leaves the expiry index.
    let expiring = CertificateFilter {
        expiring_before: Some(Timestamp(100 * DAY)),
        ..Default::default()
    };
    assert!(
        list_certificates(&log.store, &expiring, None, 10, Timestamp(0))
            .unwrap()
            .items
            .is_empty()
    );
    let retired_list = CertificateFilter {
        status: Some(StatusFilter::Retired),
        ..Default::default()
    };
    assert_eq!(
        list_certificates(&log.store, &retired_list, None, 10, Timestamp(0))
            .unwrap()
            .items
            .len(),
        1
    );

    let unknown = log.propose(
        admin(),
        Command::RetireCertificate {
            id: "crt_nope".into(),
            reason: None,
        },
    );
    assert_eq!(reject_code(&unknown), Some(RejectCode::NotFound));
}

#[test]
fn idempotency_key_replays_the_first_answer_and_refuses_reuse() {
    let mut log = Log::initialized();
    let p = Proposal::new(Timestamp(5), admin(), import(1, DAY, "o", "z"))
        .with_idempotency(Some("key-1".into()), Some("hash-a".into()));
    let first = log.propose_full(p.clone());
    let audit_len = verify_chain(&log.store).unwrap().records_checked;
    let retry = log.propose_full(p.clone());
    assert!(retry.replayed);
    assert_eq!(retry.result, first.result);
    assert_eq!(retry.index, first.index);
    assert_eq!(
        verify_chain(&log.store).unwrap().records_checked,
        audit_len,
        "a replay does nothing twice"
    );

    let reuse = log.propose_full(p.with_idempotency(Some("key-1".into()), Some("hash-b".into())));
    assert_eq!(reject_code(&reuse), Some(RejectCode::IdempotencyKeyReused));
}

#[test]
fn zone_scoped_principals_cannot_touch_other_zones() {
    let mut log = Log::initialized();
    let requester = Principal {
        id: "tok_r".into(),
        name: "r".into(),
        roles: vec![Role::Requester],
        zones: vec!["payments".into()],
        ..Principal::default()
    };
    assert!(log
        .propose(requester.clone(), import(1, DAY, "o", "payments/prod"))
        .result
        .is_ok());
    let out = log.propose(requester.clone(), import(2, DAY, "o", "paymentsx"));
    assert_eq!(reject_code(&out), Some(RejectCode::Forbidden));
    let auditor = Principal {
        roles: vec![Role::Auditor],
        ..requester
    };
    assert_eq!(
        reject_code(&log.propose(auditor, import(3, DAY, "o", "payments"))),
        Some(RejectCode::Forbidden)
    );
}

#[test]
fn listing_uses_filters_and_paginates_without_gaps() {
    let mut log = Log::initialized();
    for n in 0..120u32 {
        let owner = if n.is_multiple_of(3) {
            "team-a"
        } else {
            "team-b"
        };
        let zone = if n.is_multiple_of(4) {
            "payments/prod"
        } else {
            "web"
        };
        assert!(log
            .propose(admin(), import(n, (n as i64 + 1) * DAY, owner, zone))
            .result
            .is_ok());
    }
    let collect = |filter: CertificateFilter| {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page =
                list_certificates(&log.store, &filter, cursor.as_deref(), 7, Timestamp(0)).unwrap();
            seen.extend(page.items.into_iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        seen
    };
    assert_eq!(collect(CertificateFilter::default()).len(), 120);
    assert_eq!(
        collect(CertificateFilter {
            owner: Some("team-a".into()),
            ..Default::default()
        })
        .len(),
        40
    );
    assert_eq!(
        collect(CertificateFilter {
            zone: Some("payments".into()),
            ..Default::default()
        })
        .len(),
        30
    );
    assert_eq!(
        collect(CertificateFilter {
            zone: Some("pay".into()),
            ..Default::default()
        })
        .len(),
        0
    );
    assert_eq!(
        collect(CertificateFilter {
            expiring_before: Some(Timestamp(10 * DAY + 1)),
            ..Default::default()
        })
        .len(),
        10
    );
    assert_eq!(
        collect(CertificateFilter {
            issuer: Some("cn=even ca".into()),
            ..Default::default()
        })
        .len(),
        60
    );
    assert_eq!(
        collect(CertificateFilter {
            name: Some("SVC11".into()),
            ..Default::default()
        })
        .len(),
        11
    ); // 11, 110..119
    let combined = CertificateFilter {
        owner: Some("team-a".into()),
        zone: Some("payments".into()),
        ..Default::default()
    };
    assert_eq!(collect(combined).len(), 10);
    let expired = CertificateFilter {
        status: Some(StatusFilter::Expired),
        ..Default::default()
    };
    assert_eq!(
        list_certificates(&log.store, &expired, None, 1000, Timestamp(5 * DAY))
            .unwrap()
            .items
            .len(),
        4
    );
    assert!(list_certificates(
        &log.store,
        &CertificateFilter {
            name: Some("ab".into()),
            ..Default::default()
        },
        None,
        5,
        Timestamp(0)
    )
    .is_err());
    assert!(list_certificates(
        &log.store,
        &CertificateFilter::default(),
        Some("zzz"),
        5,
        Timestamp(0)
    )
    .is_err());
}

#[test]
fn audit_chain_verifies_and_reports_the_first_tampered_record() {
    let mut log = Log::initialized();
    for n in 0..5 {
        log.propose(admin(), import(n, DAY, "o", "z"));
    }
    let report = verify_chain(&log.store).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records_checked, 6);
    let page = list_audit(
        &log.store,
        &AuditFilter {
            action: Some("certificate.".into()),
            ..Default::default()
        },
        None,
        3,
    )
    .unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.items[0].seq, 6, "newest first");
    let rest = list_audit(
        &log.store,
        &AuditFilter {
            action: Some("certificate.".into()),
            ..Default::default()
        },
        page.next_cursor.as_deref(),
        10,
    )
    .unwrap();
    assert_eq!(rest.items.len(), 2);

    let mut tampered = log.store.clone();
    let mut record: AuditRecord = decode_record(
        "audit",
        &tampered.get(Keyspace::Audit, &seq_key(3)).unwrap().unwrap(),
    )
    .unwrap();
    record.actor = "someone-else".into();
    tampered.put(Keyspace::Audit, &seq_key(3), &encode_record(&record));
    let report = verify_chain(&tampered).unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_broken.unwrap().seq, 3);

    let mut removed = log.store.clone();
    removed.delete(Keyspace::Audit, &seq_key(4));
    assert_eq!(verify_chain(&removed).unwrap().first_broken.unwrap().seq, 4);
}

#[test]
fn unknown_proposal_versions_stop_the_node() {
    let mut bytes =
        serde_json::to_value(Proposal::new(Timestamp(1), admin(), Command::Noop)).unwrap();
    bytes["v"] = serde_json::json!(99);
    assert!(Proposal::decode(&serde_json::to_vec(&bytes).unwrap()).is_err());
    assert!(Proposal::decode(b"not json").is_err());
}

/// Version 1 proposals written by earlier builds must keep decoding.
#[test]
fn reads_version_1_proposal() {
    let v1 = r#"{"v":1,"proposed_at":1700000000000,"actor":{"id":"tok_root","name":"root","roles":["admin"],"zones":[]},"command":{"type":"retire_certificate","id":"crt_1","reason":null}}"#;
    let p = Proposal::decode(v1.as_bytes()).expect("v1 decodes");
    assert_eq!(
        p.command,
        Command::RetireCertificate {
            id: "crt_1".into(),
            reason: None
        }
    );
}

#[derive(Debug, Clone)]
enum Op {
    Import {
        n: u32,
        days: i64,
        owner: u8,
        zone: u8,
    },
    Retire {
        n: u32,
    },
    Noop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..40, -5i64..400, 0u8..3, 0u8..3).prop_map(|(n, days, owner, zone)| Op::Import {
            n,
            days,
            owner,
            zone
        }),
        (0u32..40).prop_map(|n| Op::Retire { n }),
        Just(Op::Noop),
    ]
}

fn to_command(op: &Op) -> Command {
    match op {
        Op::Import {
            n,
            days,
            owner,
            zone,
        } => import(
            *n,
            *days * DAY,
            ["a", "b", "c"][*owner as usize],
            ["x", "x/y", "z"][*zone as usize],
        ),
        Op::Retire { n } => Command::RetireCertificate {
            id: format!("crt_{n:024x}"),
            reason: None,
        },
        Op::Noop => Command::Noop,
    }
}

proptest! {
    /// Two nodes applying the same log reach byte-identical state; counts and indexes stay consistent.
    #[test]
    fn same_log_same_state(ops in proptest::collection::vec(op(), 1..60)) {
        let mut a = Log::initialized();
        let mut b = Log::initialized();
        for op in &ops {
            let oa = a.propose(admin(), to_command(op));
            let ob = b.propose(admin(), to_command(op));
            prop_assert_eq!(oa, ob);
        }
        prop_assert_eq!(a.store.dump(), b.store.dump());
        prop_assert_eq!(state_digest(&a.store).unwrap(), state_digest(&b.store).unwrap());
        prop_assert!(verify_chain(&a.store).unwrap().ok);

        let all = list_certificates(&a.store, &CertificateFilter::default(), None, 1000, Timestamp(0)).unwrap().items;
        let active = all.iter().filter(|r| r.status.as_str() == "active").count() as u64;
        let c = counts(&a.store).unwrap();
        prop_assert_eq!(c.active, active);
        prop_assert_eq!(c.retired, all.len() as u64 - active);
        let expiring = list_certificates(&a.store, &CertificateFilter { expiring_before: Some(Timestamp(i64::MAX)), ..Default::default() }, None, 1000, Timestamp(0)).unwrap().items;
        prop_assert_eq!(expiring.len() as u64, active);
        prop_assert_eq!(a.store.scan(Keyspace::ByExpiry, &[], &[], 10_000).unwrap().len() as u64, active);
    }
}

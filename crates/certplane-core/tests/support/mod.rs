//! The state-machine test harness shared by the integration tests: principals and a tiny log that
//! applies proposals with increasing indexes over `MemStore`, round-tripping each through the log
//! encoding as every follower does.

#![allow(dead_code)]

use certplane_core::issuer::IssuerRecord;
use certplane_core::{
    apply, Command, EntryContext, MemStore, Outcome, Principal, Proposal, Role, Timestamp,
    TokenRecord,
};

pub fn admin() -> Principal {
    Principal {
        id: "tok_root".into(),
        name: "root".into(),
        roles: vec![Role::Admin],
        zones: vec![],
        ..Principal::default()
    }
}

pub fn root_token() -> TokenRecord {
    TokenRecord {
        id: "tok_root".into(),
        name: "root".into(),
        secret_sha256: "ab".repeat(32),
        roles: vec![Role::Admin],
        zones: vec![],
        kind: Default::default(),
        subject: None,
        bindings: vec![],
        groups: vec![],
        expires_at: None,
        created_at: Timestamp(1),
        created_by: "system:init".into(),
        revoked_at: None,
    }
}

pub struct Log {
    pub store: MemStore,
    pub next: u64,
}

impl Log {
    pub fn new() -> Self {
        Log {
            store: MemStore::new(),
            next: 1,
        }
    }

    /// Initialised, with `builtin_issuer` stored when given.
    pub fn init(builtin_issuer: Option<IssuerRecord>) -> Self {
        let mut log = Log::new();
        let out = log.propose(
            Principal::bootstrap(),
            Command::Initialize {
                root_token: Box::new(root_token()),
                builtin_issuer: builtin_issuer.map(Box::new),
            },
        );
        assert!(out.result.is_ok(), "{out:?}");
        log
    }

    /// The time the next proposal is stamped with.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.next as i64 * 1000)
    }

    pub fn propose(&mut self, actor: Principal, command: Command) -> Outcome {
        self.propose_full(Proposal::new(self.now(), actor, command))
    }

    pub fn propose_full(&mut self, proposal: Proposal) -> Outcome {
        let decoded = Proposal::decode(&proposal.encode()).expect("decodes");
        assert_eq!(decoded, proposal, "the log encoding is lossless");
        let out = apply(
            &mut self.store,
            EntryContext {
                index: self.next,
                term: 1,
                part: 0,
            },
            &decoded,
        )
        .expect("applies");
        if !out.replayed {
            assert_eq!(out.index, self.next);
        }
        self.next += 1;
        out
    }
}

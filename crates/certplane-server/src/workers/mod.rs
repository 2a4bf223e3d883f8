//! Leader-only automation: workers that read intents from the replicated state, perform the side
//! effect, and propose the outcome back through Raft (DESIGN.md section 3).

pub mod approvals;
pub mod audit;
pub mod batch;
pub mod clock;
pub mod deploy;
pub mod issuance;
pub mod notices;
pub mod pca;
pub mod renewals;
pub mod signing;
pub mod webhooks;

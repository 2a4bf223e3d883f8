//! placeholder
use crate::command::{Outcome, Proposal};
use crate::error::CoreError;
use crate::store::StateStore;

/// Where the entry sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryContext {
    pub index: u64,
    pub term: u64,
}

pub fn apply(_store: &mut impl StateStore, entry: EntryContext, _proposal: &Proposal) -> Result<Outcome, CoreError> {
    Ok(Outcome { index: entry.index, ..Outcome::default() })
}

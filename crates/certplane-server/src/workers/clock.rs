//! The time the leader's renewal scheduler reads. In production it is the system clock; a test
//! gives every node the same offset and moves it forward, so a certificate valid for days comes due
//! at once and the real renewal path runs (policy, issuance, re-import to the same ARN) without
//! waiting. The scheduler stamps its proposals with this time, so `apply` agrees the renewal is due.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct SchedulerClock {
    offset_ms: Option<Arc<AtomicI64>>,
}

impl SchedulerClock {
    /// The system clock.
    pub fn system() -> Self {
        SchedulerClock { offset_ms: None }
    }

    /// The system clock plus whatever `offset_ms` holds when read.
    pub fn with_offset(offset_ms: Arc<AtomicI64>) -> Self {
        SchedulerClock {
            offset_ms: Some(offset_ms),
        }
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        let offset = self
            .offset_ms
            .as_ref()
            .map_or(0, |o| o.load(Ordering::Relaxed));
        crate::api::now_ms().saturating_add(offset)
    }
}

impl std::fmt::Debug for SchedulerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.offset_ms {
            None => f.write_str("SchedulerClock(system)"),
            Some(o) => write!(
                f,
                "SchedulerClock(system + {} ms)",
                o.load(Ordering::Relaxed)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_moves_with_its_offset() {
        let offset = Arc::new(AtomicI64::new(0));
        let clock = SchedulerClock::with_offset(offset.clone());
        let before = clock.now_ms();
        offset.store(86_400_000, Ordering::Relaxed);
        let after = clock.now_ms();
        assert!(after - before >= 86_400_000);
        assert!(SchedulerClock::system().now_ms() < after);
    }
}

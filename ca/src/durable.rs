//! Group commit: many writers, one flush.
//!
//! A writer applies its change in memory, takes a ticket, and waits until a flush that began
//! after its ticket has finished. Whoever finds no flush running becomes the leader and
//! flushes for everyone who has a ticket by then; the others wait on a condition variable.
//! Under load, one fsync acknowledges many writes; alone, a writer pays one fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

#[derive(Default)]
struct State {
    /// Every ticket up to this one is on disk.
    durable: u64,
    /// A leader is flushing now.
    flushing: bool,
}

/// Coordinates flushes of one store.
#[derive(Default)]
pub(crate) struct GroupCommit {
    issued: AtomicU64,
    state: Mutex<State>,
    flushed: Condvar,
    flushes: AtomicU64,
}

impl GroupCommit {
    /// Returns once everything written before this call is durable. `flush` must make every
    /// write applied before it started durable.
    pub(crate) fn wait_durable<E>(&self, flush: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.flushing {
                state = self.flushed.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.flushing = true;
            let covered = self.issued.load(Ordering::SeqCst);
            drop(state);
            let result = flush();
            self.flushes.fetch_add(1, Ordering::Relaxed);
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.flushing = false;
            if result.is_ok() {
                state.durable = state.durable.max(covered);
            }
            self.flushed.notify_all();
            result?;
        }
    }

    /// How many flushes were made (for benchmarks and tests).
    pub(crate) fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn concurrent_writers_share_flushes() {
        let group = Arc::new(GroupCommit::default());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let group = Arc::clone(&group);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        group
                            .wait_durable(|| {
                                std::thread::sleep(Duration::from_millis(2));
                                Ok::<(), ()>(())
                            })
                            .expect("flush");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let flushes = group.flush_count();
        // Grouping means many writes per flush: with 16 writers, at most a quarter as many
        // flushes as writes (typically about one per round of the 16).
        assert!(flushes * 4 <= 16 * 20, "{flushes} flushes for 320 writes: not grouped");
        assert!(flushes >= 20, "at least one flush per round of a single writer");
    }

    #[test]
    fn a_failed_flush_is_reported_and_retried() {
        let group = GroupCommit::default();
        assert_eq!(group.wait_durable(|| Err::<(), _>("disk full")), Err("disk full"));
        assert_eq!(group.wait_durable(|| Ok::<(), &str>(())), Ok(()));
    }
}

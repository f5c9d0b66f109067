//! The health of a process's worker sessions. A session that crashed, or that its executor
//! found unable to work (its workspace cannot be created), takes no work until a check
//! passes; heartbeats publish how many are healthy, so a task nobody can run says so.

use std::sync::atomic::{AtomicBool, Ordering};

pub struct SessionPool {
    healthy: Vec<AtomicBool>,
}

impl SessionPool {
    /// `size` sessions, all healthy.
    pub fn new(size: usize) -> Self {
        Self {
            healthy: (0..size).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    pub fn size(&self) -> usize {
        self.healthy.len()
    }

    pub fn healthy(&self) -> usize {
        self.healthy
            .iter()
            .filter(|session| session.load(Ordering::Relaxed))
            .count()
    }

    pub fn is_healthy(&self, session: usize) -> bool {
        self.healthy[session].load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, session: usize, healthy: bool) {
        self.healthy[session].store(healthy, Ordering::Relaxed);
    }
}

/// Why a session cannot take work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SessionFault(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_sessions_that_are_healthy() {
        let pool = SessionPool::new(3);
        assert_eq!((pool.size(), pool.healthy()), (3, 3));
        pool.set_healthy(1, false);
        assert!(!pool.is_healthy(1));
        assert_eq!(pool.healthy(), 2);
        pool.set_healthy(1, true);
        assert_eq!(pool.healthy(), 3);
    }
}

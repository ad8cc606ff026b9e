//! The budget of one connection's setup: how many tries are left, until
//! when, and the pause between them. Shared by the first open and by every
//! replacement of a tunnel that failed before carrying anything, so a
//! connection never tries for longer or more often than `[tunnel]` allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// First pause before a retry; doubled each time. Short: the reported faults
/// clear at once on a fresh session (another backend node takes it).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between tries, so a burst of failures stays within the
/// setup deadline with tries to spare.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A count shown in `status` and `forward list` (retries of a forward, of
/// the daemon), shared by whoever adds to it.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Setup {
    deadline: Instant,
    attempts: u32,
    max_attempts: u32,
    backoff: Duration,
    /// Where retries are counted (the forward's, the daemon's).
    retries: Vec<Counter>,
}

impl Setup {
    pub fn new(max_attempts: u32, timeout: Duration, retries: Vec<Counter>) -> Setup {
        Setup {
            deadline: Instant::now() + timeout,
            attempts: 0,
            max_attempts: max_attempts.max(1),
            backoff: FIRST_BACKOFF,
            retries,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Counts a try about to start.
    pub fn start_attempt(&mut self) {
        self.attempts += 1;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether this is the last try allowed (then nothing is gained by
    /// giving up on a slow tunnel early).
    pub fn is_last(&self) -> bool {
        self.attempts >= self.max_attempts
    }

    /// Waits before the next try and counts it as a retry; `false` when no
    /// try is left or the pause would pass the deadline.
    pub async fn retry(&mut self) -> bool {
        if self.is_last() {
            return false;
        }
        // Jitter spreads the retries of connections that failed together.
        let pause = self
            .backoff
            .mul_f64(rand::rng().random_range(0.5..1.5))
            .min(MAX_BACKOFF);
        if Instant::now() + pause >= self.deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        for counter in &self.retries {
            counter.add(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tries_are_bounded_by_count_and_deadline() {
        let counter = Counter::default();
        let mut setup = Setup::new(3, Duration::from_secs(30), vec![counter.clone()]);
        let mut tries = 0;
        loop {
            setup.start_attempt();
            tries += 1;
            if !setup.retry().await {
                break;
            }
        }
        assert_eq!(tries, 3);
        assert_eq!(counter.get(), 2);

        let mut setup = Setup::new(100, Duration::from_millis(500), vec![counter]);
        let started = Instant::now();
        loop {
            setup.start_attempt();
            if !setup.retry().await {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(setup.attempts() < 100);
    }
}

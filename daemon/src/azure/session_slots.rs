//! One bastion's session budget: at most `max_sessions` live sessions, and at
//! most `max_waiting` connections waiting (in order) for one of them. A
//! connection beyond that is turned away at once: a flood of connections
//! (a runaway loop, a port scan of the forward) must not hold a descriptor
//! and a task each for the whole setup timeout while real users queue
//! behind it. Turned-away connections are counted and logged once per burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::BastionSettings;
use crate::error::AzureError;

/// While connections keep being turned away, one log line per this long:
/// a flood of thousands must not flood the journal too.
const TURNED_AWAY_LOG_INTERVAL: Duration = Duration::from_secs(30);

pub struct SessionSlots {
    /// One permit per live session; waiters are served in order.
    slots: Arc<Semaphore>,
    max_sessions: u32,
    max_waiting: u32,
    waiting: AtomicU32,
    turned_away: AtomicU64,
    /// When the last "turning away" line was logged, and the count then.
    logged: Mutex<Option<(Instant, u64)>>,
}

/// A connection's place in the waiting line, given up when dropped.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SessionSlots {
    pub fn new(settings: &BastionSettings) -> SessionSlots {
        SessionSlots {
            slots: Arc::new(Semaphore::new(settings.max_sessions as usize)),
            max_sessions: settings.max_sessions,
            max_waiting: settings.max_waiting(),
            waiting: AtomicU32::new(0),
            turned_away: AtomicU64::new(0),
            logged: Mutex::new(None),
        }
    }

    /// A free session slot at once, or a place in line until `deadline`;
    /// [`AzureError::Crowded`] at once when the line is full.
    pub async fn acquire(
        &self,
        bastion: &str,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, AzureError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let _waiting = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            return Err(self.turn_away(bastion));
        }
        let max = self.max_sessions;
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a timeout is the only way here.
            _ => Err(AzureError::Busy(format!(
                "all {max} Bastion sessions allowed on bastion {bastion} are in use and none came free in time; \
                 raise `max_sessions` under [bastions.{bastion}] in config.toml (a Standard Bastion carries \
                 about 40 SSH sessions in all), or close idle connections"
            ))),
        }
    }

    fn turn_away(&self, bastion: &str) -> AzureError {
        let total = self.turned_away.fetch_add(1, Ordering::Relaxed) + 1;
        let (max, waiting) = (self.max_sessions, self.max_waiting);
        {
            let mut logged = self.logged.lock();
            let due = logged.is_none_or(|(at, _)| at.elapsed() >= TURNED_AWAY_LOG_INTERVAL);
            if due {
                let before = logged.map_or(0, |(_, count)| count);
                tracing::warn!(
                    bastion,
                    turned_away = total - before,
                    "turning connections away: all {max} sessions are in use and {waiting} connections \
                     wait already (`max_sessions`, `max_waiting` under [bastions.{bastion}])"
                );
                *logged = Some((Instant::now(), total));
            }
        }
        AzureError::Crowded(format!(
            "turned away: all {max} sessions of bastion {bastion} are in use and {waiting} connections \
             wait for one already; raise `max_waiting` or `max_sessions` under [bastions.{bastion}] in config.toml"
        ))
    }

    /// Sessions in use (or being deleted) now.
    pub fn in_use(&self) -> u32 {
        let free = u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX);
        self.max_sessions.saturating_sub(free)
    }

    /// Connections turned away since the daemon (or this bastion's settings) started.
    pub fn turned_away(&self) -> u64 {
        self.turned_away.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_waiting_line_connections_are_turned_away_at_once() {
        let settings = BastionSettings {
            resource_id: String::new(),
            max_sessions: 1,
            max_waiting: Some(1),
            tenant_id: None,
        };
        let slots = Arc::new(SessionSlots::new(&settings));
        let deadline = Instant::now() + Duration::from_secs(5);
        let held = slots.acquire("hub", deadline).await.unwrap();
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("hub", deadline).await.map(drop) }
        });
        while slots.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let error = slots.acquire("hub", deadline).await.unwrap_err();
        assert!(matches!(error, AzureError::Crowded(_)), "{error}");
        assert!(error.to_string().contains("max_waiting"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(slots.turned_away(), 1);
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(slots.waiting.load(Ordering::Acquire), 0);
    }
}

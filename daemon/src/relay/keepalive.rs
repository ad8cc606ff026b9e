//! Keepalive of one tunnel: ping a tunnel that has shown no sign of life for
//! a while, and declare it dead when the ping gets no answer. Only silence
//! while nothing is pending counts: a tunnel busy delivering to a slow client,
//! or whose writes wait because the target reads slowly (back-pressure), is
//! alive. A peer that is really gone under a pending write is found by TCP
//! itself (its retransmission timeout), not by us.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

/// Keepalive timing of one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// `None`: no pings at all (`keepalive_interval_secs = 0`).
    pub interval: Option<Duration>,
    pub timeout: Duration,
}

/// What the directions of one pump tell each other about the tunnel.
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last frame of any kind (pongs prove the tunnel alive).
    frame: AtomicU64,
    /// Milliseconds after `start` of the last data frame (the target is still talking).
    data: AtomicU64,
    /// Milliseconds after `start` of the last write to the tunnel that completed.
    written: AtomicU64,
    /// Set while a frame is being written to the client: a slow client, not
    /// the tunnel, is why no frames are being read then.
    delivering: AtomicBool,
    /// Set while a write to the tunnel waits (back-pressure from the target).
    sending: AtomicBool,
    /// Any frame has come from the Bastion: the tunnel is known to work.
    confirmed: AtomicBool,
    /// Client bytes have gone upstream: from now on the tunnel cannot be
    /// replaced by another without losing them.
    committed: AtomicBool,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            start: Instant::now(),
            frame: AtomicU64::new(0),
            data: AtomicU64::new(0),
            written: AtomicU64::new(0),
            delivering: AtomicBool::new(false),
            sending: AtomicBool::new(false),
            confirmed: AtomicBool::new(false),
            committed: AtomicBool::new(false),
        }
    }
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, millis: &AtomicU64) -> Instant {
        self.start + Duration::from_millis(millis.load(Ordering::Relaxed))
    }

    pub fn frame_received(&self) {
        self.frame.store(self.now(), Ordering::Relaxed);
        self.confirmed.store(true, Ordering::Relaxed);
    }

    pub fn data_received(&self) {
        self.data.store(self.now(), Ordering::Relaxed);
    }

    pub fn set_delivering(&self, delivering: bool) {
        self.delivering.store(delivering, Ordering::Relaxed);
    }

    /// Brackets a write to the tunnel; `false` also records its completion.
    pub fn set_sending(&self, sending: bool) {
        if !sending {
            self.written.store(self.now(), Ordering::Relaxed);
        }
        self.sending.store(sending, Ordering::Relaxed);
    }

    pub fn commit(&self) {
        self.committed.store(true, Ordering::Relaxed);
    }

    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Relaxed)
    }

    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::Relaxed)
    }

    pub fn last_data(&self) -> Instant {
        self.at(&self.data)
    }

    /// The last sign of life: a frame in, or a write out that went through.
    fn last_progress(&self) -> Instant {
        self.at(&self.frame).max(self.at(&self.written))
    }

    fn pending(&self) -> bool {
        self.delivering.load(Ordering::Relaxed) || self.sending.load(Ordering::Relaxed)
    }
}

/// Asks for a ping (through `ping`) after `interval` without progress;
/// completes when, after a ping, `timeout` passes with no progress while
/// nothing is pending. Never completes when pings are off.
pub async fn watch(activity: &Activity, ping: &Notify, keepalive: Keepalive) {
    let Some(interval) = keepalive.interval else {
        return std::future::pending().await;
    };
    loop {
        let seen = activity.last_progress();
        sleep_until(seen + interval).await;
        if activity.last_progress() > seen || activity.pending() {
            continue;
        }
        ping.notify_one();
        let asked = Instant::now();
        sleep_until(asked + keepalive.timeout).await;
        // A write still waiting is back-pressure, not death: keep waiting
        // for as long as it waits, and judge again once it is through.
        while activity.pending() {
            sleep_until(Instant::now() + interval.min(keepalive.timeout)).await;
        }
        if activity.last_progress() <= seen {
            return;
        }
    }
}

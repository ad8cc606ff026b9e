//! Keepalive of one tunnel: ping a tunnel that has received nothing for a
//! while, and declare it dead when the ping gets no answer. Only silence
//! counts: a tunnel busy delivering to a slow client is alive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until};

/// Keepalive timing of one tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// When the tunnel last showed signs of life, shared by the directions of one pump.
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last frame of any kind (pongs prove the tunnel alive).
    frame: AtomicU64,
    /// Milliseconds after `start` of the last data frame (the target is still talking).
    data: AtomicU64,
    /// Set while a frame is being written to the client: a slow client, not
    /// the tunnel, is why no frames are being read then.
    delivering: AtomicBool,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            start: Instant::now(),
            frame: AtomicU64::new(0),
            data: AtomicU64::new(0),
            delivering: AtomicBool::new(false),
        }
    }
}

impl Activity {
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn frame_received(&self) {
        self.frame.store(self.now(), Ordering::Relaxed);
    }

    pub fn data_received(&self) {
        self.data.store(self.now(), Ordering::Relaxed);
    }

    pub fn set_delivering(&self, delivering: bool) {
        self.delivering.store(delivering, Ordering::Relaxed);
    }

    pub fn delivering(&self) -> bool {
        self.delivering.load(Ordering::Relaxed)
    }

    pub fn last_frame(&self) -> Instant {
        self.start + Duration::from_millis(self.frame.load(Ordering::Relaxed))
    }

    pub fn last_data(&self) -> Instant {
        self.start + Duration::from_millis(self.data.load(Ordering::Relaxed))
    }
}

/// Asks for a ping (through `ping`) after `interval` without incoming
/// frames; completes when nothing arrives within `timeout` of a ping.
pub async fn watch(activity: &Activity, ping: &Notify, keepalive: Keepalive) {
    loop {
        let seen = activity.last_frame();
        sleep_until(seen + keepalive.interval).await;
        if activity.last_frame() > seen {
            continue;
        }
        if activity.delivering() {
            // Frames wait unread while a slow client drains the last one.
            sleep(keepalive.interval).await;
            continue;
        }
        ping.notify_one();
        sleep(keepalive.timeout).await;
        if activity.last_frame() <= seen && !activity.delivering() {
            return;
        }
    }
}

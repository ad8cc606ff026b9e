//! Keepalive of one tunnel: ping a tunnel that has shown no sign of life for
//! a while, and declare it dead when the ping gets no answer, unless the
//! peer is only busy. Our own completed writes prove nothing (they only
//! reached our socket buffer). A peer that owes us an answer (client bytes
//! went up since its last frame) and whose TCP acknowledges them is busy,
//! not dead ([`crate::bastion::tcp`]): a target that reads slowly keeps its
//! tunnel however long it takes. A path that went silent acknowledges
//! nothing: the tunnel ends within `interval + timeout`, even while the
//! client keeps writing (and the kernel's `TCP_USER_TIMEOUT`, set to the
//! same bound, ends the socket under unacknowledged bytes by itself). The
//! kernel is asked once per unanswered ping, never per frame.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until};

use crate::bastion::tcp;

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
    /// Milliseconds after `start` of the last client bytes sent up.
    uploaded: AtomicU64,
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
            uploaded: AtomicU64::new(0),
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

    /// Brackets a write to the tunnel.
    pub fn set_sending(&self, sending: bool) {
        self.sending.store(sending, Ordering::Relaxed);
    }

    /// Client bytes are going up (once per burst, not per frame).
    pub fn commit(&self) {
        self.uploaded.store(self.now(), Ordering::Relaxed);
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

    fn last_frame(&self) -> Instant {
        self.at(&self.frame)
    }
}

/// Asks for a ping (through `ping`) after `interval` without a sign of life,
/// or at once when `checks` changes; completes when, `timeout` after the ping, no frame has come and the peer
/// is not merely busy ([`peer_busy`]). Never completes when pings are off.
pub async fn watch(
    activity: &Activity,
    ping: &Notify,
    keepalive: Keepalive,
    tcp: Option<BorrowedFd<'_>>,
    mut checks: Option<watch::Receiver<u64>>,
) {
    let Some(interval) = keepalive.interval else {
        return std::future::pending().await;
    };
    // When the peer was last found busy, for a tunnel that sent no frame since.
    let mut busy = activity.last_frame();
    loop {
        let seen = activity.last_frame().max(busy);
        let asked = tokio::select! {
            () = sleep_until(seen + interval) => false,
            () = check_asked(&mut checks) => true,
        };
        if !asked && activity.last_frame() > seen {
            continue;
        }
        ping.notify_one();
        sleep_until(Instant::now() + keepalive.timeout).await;
        if activity.last_frame() > seen {
            continue;
        }
        if !peer_busy(activity, tcp, keepalive.timeout) {
            return;
        }
        busy = Instant::now();
    }
}

/// Completes when a check of every tunnel is asked for; never without `checks`.
async fn check_asked(checks: &mut Option<watch::Receiver<u64>>) {
    let asked = match checks {
        Some(checks) => checks.changed().await.is_ok(),
        None => false,
    };
    if !asked {
        std::future::pending::<()>().await;
    }
}

/// Whether a tunnel that did not answer a ping is busy rather than dead:
/// we are still delivering its last frame to a slow client (so we read no
/// pong), or it owes us an answer and its TCP has acknowledged our bytes
/// (everything, or some within `window`).
fn peer_busy(activity: &Activity, tcp: Option<BorrowedFd<'_>>, window: Duration) -> bool {
    if activity.delivering.load(Ordering::Relaxed) {
        return true;
    }
    let owes = activity.at(&activity.uploaded) > activity.last_frame();
    match tcp.and_then(tcp::acks) {
        Some(acks) => owes && acks.peer_alive(window),
        // No TCP underneath (an in-memory stream): a write that waits is
        // back-pressure, the only sign there is.
        None => activity.sending.load(Ordering::Relaxed),
    }
}

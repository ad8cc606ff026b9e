//! Noticing what a laptop's day does to connections without telling them:
//! a resume from suspend (the clocks that count sleep run ahead of the one
//! that does not) and a network change (rtnetlink address, route and link
//! events). Neither sends a reset: connections opened before simply stop
//! answering, so the daemon drops its idle ones and checks its live ones
//! (`daemon.rs` reacts; this module only watches).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::time::{MissedTickBehavior, interval};

/// How often the clocks are compared: a resume is noticed within this
/// (timers do not fire while suspended, the first one after does).
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(2);
/// More than this of time the monotonic clock did not see between two
/// checks is a suspend (or the wall clock stepped far ahead); scheduling
/// delays on a loaded machine stay well below it.
const RESUME_MIN_GAP: Duration = Duration::from_secs(5);
/// Events of one change (a Wi-Fi join: link, addresses, routes) come
/// together; they are counted as one change once this much passed quietly.
const NETWORK_SETTLE: Duration = Duration::from_millis(500);
/// One rtnetlink message buffer: events are a few hundred bytes each.
const NETLINK_BUFFER: usize = 64 * 1024;

/// What was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The machine slept (or its wall clock jumped ahead) for about this long.
    Resumed(Duration),
    /// Addresses, routes or links changed.
    Network,
}

/// Watches for [`Change`]s.
pub struct Watcher {
    clocks: Clocks,
    ticks: tokio::time::Interval,
    /// `None` where rtnetlink is unavailable (then only resumes are seen).
    netlink: Option<AsyncFd<Socket>>,
    buffer: Vec<u8>,
}

impl Watcher {
    pub fn new() -> Watcher {
        let mut ticks = interval(CLOCK_CHECK_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let netlink = route_events()
            .inspect_err(|error| {
                tracing::warn!(%error, "cannot watch network changes (rtnetlink); resumes are still seen");
            })
            .ok();
        Watcher {
            clocks: Clocks::now(),
            ticks,
            netlink,
            buffer: vec![0; NETLINK_BUFFER],
        }
    }

    /// The next change.
    pub async fn next(&mut self) -> Change {
        loop {
            tokio::select! {
                _ = self.ticks.tick() => {
                    let now = Clocks::now();
                    let gap = now.unseen_since(&self.clocks);
                    self.clocks = now;
                    if gap >= RESUME_MIN_GAP {
                        return Change::Resumed(gap);
                    }
                }
                () = netlink_event(self.netlink.as_ref(), &mut self.buffer) => {
                    // The rest of the burst belongs to the same change.
                    while tokio::time::timeout(
                        NETWORK_SETTLE,
                        netlink_event(self.netlink.as_ref(), &mut self.buffer),
                    )
                    .await
                    .is_ok()
                    {}
                    return Change::Network;
                }
            }
        }
    }
}

impl Default for Watcher {
    fn default() -> Self {
        Watcher::new()
    }
}

/// The clocks at one instant.
struct Clocks {
    monotonic: Instant,
    /// `CLOCK_BOOTTIME`: monotonic, and counts suspend.
    boot: Duration,
    wall: SystemTime,
}

impl Clocks {
    fn now() -> Clocks {
        Clocks {
            monotonic: Instant::now(),
            boot: boot_time(),
            wall: SystemTime::now(),
        }
    }

    /// Time that passed since `before` for the clocks that count sleep (or
    /// that were set ahead) but not for the monotonic clock.
    fn unseen_since(&self, before: &Clocks) -> Duration {
        let awake = self.monotonic.duration_since(before.monotonic);
        let booted = self.boot.saturating_sub(before.boot);
        // A wall clock set back gives zero here: only jumps ahead count.
        let walled = self.wall.duration_since(before.wall).unwrap_or_default();
        booted.max(walled).saturating_sub(awake)
    }
}

fn boot_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or_default(),
        u32::try_from(now.tv_nsec).unwrap_or_default(),
    )
}

/// A socket subscribed to rtnetlink's link, address and route events.
fn route_events() -> std::io::Result<AsyncFd<Socket>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    let groups = libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE;
    socket.bind(&SocketAddr::new(
        0,
        u32::try_from(groups).unwrap_or_default(),
    ))?;
    socket.set_non_blocking(true)?;
    // SAFETY: the socket owns its descriptor for as long as it lives, which
    // is as long as the `AsyncFd` that owns it.
    Ok(unsafe { AsyncFd::register(socket) }?)
}

/// Completes when an event (any message) has been read; never without a socket.
async fn netlink_event(socket: Option<&AsyncFd<Socket>>, buffer: &mut [u8]) {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    loop {
        let Ok(mut ready) = socket.readable().await else {
            return std::future::pending().await;
        };
        match ready.try_io(|s| {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe {
                libc::recv(
                    s.get_ref().as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n)
            }
        }) {
            Ok(Ok(_)) => return,
            // ENOBUFS (events overflowed the socket) is a change too.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return,
            Ok(Err(error)) => {
                tracing::warn!(%error, "rtnetlink read failed; no longer watching network changes");
                // Not a busy loop: give up on the socket for good.
                return std::future::pending().await;
            }
            // Readiness was stale (cleared by `try_io`): wait again.
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_ahead_of_the_monotonic_one_is_a_resume() {
        let before = Clocks::now();
        let mut after = Clocks::now();
        assert!(after.unseen_since(&before) < RESUME_MIN_GAP);
        after.wall += Duration::from_secs(2 * 3600);
        assert!(after.unseen_since(&before) >= Duration::from_secs(2 * 3600 - 1));
        let mut set_back = Clocks::now();
        set_back.wall -= Duration::from_secs(3600);
        assert!(set_back.unseen_since(&before) < RESUME_MIN_GAP);
    }
}

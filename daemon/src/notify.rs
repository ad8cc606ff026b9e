//! systemd integration through sd_notify: READY=1 once serving, a one-line
//! STATUS= summary, WATCHDOG=1 pings, STOPPING=1 at shutdown. Without
//! NOTIFY_SOCKET (not under systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// The watchdog period systemd asked for (WATCHDOG_USEC), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its period until `cancel`.
pub async fn watchdog(period: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => send(&[NotifyState::Watchdog]),
        }
    }
}

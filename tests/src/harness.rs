//! End-to-end harness: runs the real `bastiond` and `bastionctl` binaries
//! against an in-process [`Emulator`](crate::emulator::Emulator), each test in
//! its own temp directories, on ports the OS chooses.
//!
//! - [`bins`]   : locating the built binaries next to the test executable
//! - [`env`]    : [`TestEnv`], the temp dirs (XDG_*), the emulator, the child environment
//! - [`daemon`] : [`Daemon`], a real bastiond: READY=1 via NOTIFY_SOCKET, SIGTERM/SIGKILL, logs
//! - [`ctl`]    : running `bastionctl` (`env.ctl(...)`, JSON helpers, forwards)
//! - [`net`]    : byte helpers (echo round trips with checksums, free ports), all time-bounded
//! - [`sshd`]   : a throwaway OpenSSH server on 127.0.0.1 for the ssh tests
//! - [`kubectl`]: the real kubectl with a given kubeconfig (the AKS tests)
//! - [`socks`]  : a minimal SOCKS5 client, to check a listener's every reply
//! - [`other_user`]: a second local user (root only) for the owner-only rule
//! - [`silence`]: a network path that goes silent (a namespace and nftables)
//!
//! Nothing here sleeps to wait: readiness comes from the daemon's READY=1,
//! the emulator's ledger (`Emulator::wait_for`) or a polled condition with a
//! deadline, so a broken daemon fails a test instead of hanging it.

pub mod bins;
pub mod ctl;
pub mod daemon;
pub mod env;
pub mod kubectl;
pub mod net;
pub mod other_user;
pub mod silence;
pub mod socks;
pub mod sshd;

pub use ctl::CtlOutput;
pub use daemon::Daemon;
pub use env::TestEnv;

use std::time::Duration;

/// Upper bound for any single step: generous for debug builds on two busy
/// cores, short enough that a hang fails within a CI run.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling period while awaiting a condition the daemon only shows in `list`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Awaits `fut`, failing with `what` after `timeout`.
pub async fn within<T>(
    what: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("timed out after {timeout:?}: {what}"),
    }
}

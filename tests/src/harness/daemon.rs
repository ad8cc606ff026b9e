//! [`Daemon`]: the real `bastiond` binary as a child process. Ready means it
//! sent `READY=1` to our NOTIFY_SOCKET (socket bound, saved forwards started),
//! exactly what systemd waits for.

use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::harness::{STEP_TIMEOUT, TestEnv, bins, within};

/// Debug logs from the daemon: the token-leak test reads them all.
const DAEMON_LOG_FILTER: &str = "debug";
/// How often [`Daemon::start_hanging_up`] sends SIGHUP while the daemon starts.
pub const HANGUP_EVERY: std::time::Duration = std::time::Duration::from_millis(1);
/// sd_notify datagrams are small; this is systemd's own limit per message.
const NOTIFY_DATAGRAM_MAX: usize = 4096;

pub struct Daemon {
    child: Child,
    pid: u32,
    log: PathBuf,
    notifications: Arc<Mutex<Vec<String>>>,
    /// Keeps reading NOTIFY_SOCKET so the daemon's later messages
    /// (STATUS=, STOPPING=1, WATCHDOG=1) never find a full socket.
    notify_reader: JoinHandle<()>,
}

impl Daemon {
    /// Starts bastiond with the env's settings and waits for READY=1.
    pub async fn start(env: &TestEnv) -> anyhow::Result<Daemon> {
        Self::start_with(env, &[], &[]).await
    }

    /// As [`Daemon::start`], with extra arguments and environment variables.
    pub async fn start_with(
        env: &TestEnv,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Daemon> {
        Self::launch(env, args, vars, false).await
    }

    /// As [`Daemon::start`], sending SIGHUP (a reload request) every
    /// [`HANGUP_EVERY`] from the moment its control socket exists until
    /// READY=1: `systemctl reload` right after `systemctl start`.
    pub async fn start_hanging_up(env: &TestEnv) -> anyhow::Result<Daemon> {
        Self::launch(env, &[], &[], true).await
    }

    async fn launch(
        env: &TestEnv,
        args: &[&str],
        vars: &[(&str, &str)],
        hang_up: bool,
    ) -> anyhow::Result<Daemon> {
        let n = env.next_daemon();
        let log = env.root().join(format!("bastiond-{n}.log"));
        let notify_path = env.root().join(format!("notify-{n}.sock"));
        let notify = UnixDatagram::bind(&notify_path).context("cannot bind NOTIFY_SOCKET")?;
        let mut cmd = bastiond_command(env, args, vars, &log)?;
        cmd.env("NOTIFY_SOCKET", &notify_path);
        env.record_log(log.clone());
        let mut child = cmd.spawn().context("cannot spawn bastiond")?;
        let pid = child.id().context("bastiond exited at once")?;

        let notifications = Arc::new(Mutex::new(Vec::new()));
        let ready = within("bastiond to send READY=1", STEP_TIMEOUT, async {
            let mut buf = vec![0u8; NOTIFY_DATAGRAM_MAX];
            let mut hangups = tokio::time::interval(HANGUP_EVERY);
            let socket = env.socket();
            loop {
                tokio::select! {
                    _ = hangups.tick(), if hang_up => {
                        if socket.exists() {
                            let pid = Pid::from_raw(i32::try_from(pid)?);
                            kill(pid, Signal::SIGHUP).context("cannot send SIGHUP")?;
                        }
                    }
                    received = notify.recv(&mut buf) => {
                        let n = received.context("cannot read NOTIFY_SOCKET")?;
                        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let is_ready = message.lines().any(|line| line == "READY=1");
                        push(&notifications, message);
                        if is_ready {
                            return Ok(());
                        }
                    }
                    status = child.wait() => {
                        let status = status.context("cannot wait for bastiond")?;
                        bail!("bastiond exited ({status}) before READY=1");
                    }
                }
            }
        })
        .await;
        if let Err(err) = ready {
            let _ = child.start_kill();
            let logs = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{err:#}\n--- bastiond stderr ---\n{logs}");
        }
        let notify_reader = tokio::spawn(read_notifications(notify, notifications.clone()));
        Ok(Daemon {
            child,
            pid,
            log,
            notifications,
            notify_reader,
        })
    }

    /// Runs a bastiond that is expected to exit by itself (e.g. a second
    /// daemon), returning its output.
    pub async fn run_to_exit(env: &TestEnv, args: &[&str]) -> anyhow::Result<Output> {
        Self::run_to_exit_with(env, args, &[]).await
    }

    /// As [`Daemon::run_to_exit`], with extra environment variables.
    pub async fn run_to_exit_with(
        env: &TestEnv,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Output> {
        let n = env.next_daemon();
        let log = env.root().join(format!("bastiond-{n}.log"));
        let mut cmd = bastiond_command(env, args, vars, &log)?;
        env.record_log(log.clone());
        let status = within("bastiond to exit by itself", STEP_TIMEOUT, async {
            Ok(cmd.status().await?)
        })
        .await?;
        Ok(Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&log).unwrap_or_default(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What bastiond wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every sd_notify message received, in order.
    pub fn notifications(&self) -> Vec<String> {
        self.notifications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// SIGTERM, then the exit status (the daemon deletes its sessions first).
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        self.wait().await
    }

    /// SIGKILL: a crash, no cleanup.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        self.wait().await
    }

    /// Waits for the daemon to exit by itself.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let status = within("bastiond to exit", STEP_TIMEOUT, async {
            Ok(self.child.wait().await?)
        })
        .await;
        status.with_context(|| format!("--- bastiond stderr ---\n{}", self.logs()))
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("cannot send {signal} to bastiond"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.notify_reader.abort();
        // A still-running daemon must not outlive its test.
        let _ = self.child.start_kill();
    }
}

fn bastiond_command(
    env: &TestEnv,
    args: &[&str],
    vars: &[(&str, &str)],
    log: &std::path::Path,
) -> anyhow::Result<Command> {
    let stderr = std::fs::File::create(log).context("cannot create the daemon log")?;
    let mut cmd = Command::new(bins::path("bastiond")?);
    env.apply(&mut cmd);
    cmd.args(args)
        .env("RUST_LOG", DAEMON_LOG_FILTER)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    Ok(cmd)
}

async fn read_notifications(notify: UnixDatagram, into: Arc<Mutex<Vec<String>>>) {
    let mut buf = vec![0u8; NOTIFY_DATAGRAM_MAX];
    while let Ok(n) = notify.recv(&mut buf).await {
        push(&into, String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

fn push(into: &Mutex<Vec<String>>, message: String) {
    into.lock().unwrap_or_else(|e| e.into_inner()).push(message);
}

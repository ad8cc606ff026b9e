//! ProxyCommand cost: ssh starts `bastionctl connect` once per connection,
//! so that process's start is paid by every ssh. Timed as ssh sees it, from
//! spawn to the first echoed byte on its stdout, and on the LAN side by side
//! with a forward's TCP connect to first echoed byte: the difference is what
//! the ProxyCommand path costs on top of a forward.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::latency;
use super::log::BenchLog;
use super::suite::Run;
use super::world::{Path, echo_target};
use crate::harness::{TestEnv, within};

/// Bound for one connect: setup takes milliseconds on the LAN and a few
/// round trips on a WAN, so this only catches a stuck path.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// After SIGHUP bastionctl has nothing left to do but exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Untimed runs first: the first spawn pages the binary in.
const WARM_UP: usize = 3;

/// `bastionctl connect <target>` with `env`'s socket, stdin and stdout
/// piped as ssh does; the time from spawn to the first echoed byte. Then
/// SIGHUP, which is how ssh ends its ProxyCommand when it is done.
pub async fn connect_once(env: &TestEnv, target: &str, stderr: Stdio) -> anyhow::Result<Duration> {
    let mut cmd = env.ctl_command(&["connect", target])?;
    cmd.stdin(Stdio::piped()).stderr(stderr);
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot spawn bastionctl connect")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let echoed = within("bastionctl connect's first echo", STEP_TIMEOUT, async {
        stdin.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        stdout.read_exact(&mut byte).await.context("no echo")?;
        ensure!(&byte == b"x", "echoed {byte:?}, not the byte sent");
        Ok(())
    })
    .await;
    let took = start.elapsed();
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGHUP);
    }
    let exited = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
    if exited.is_err() {
        let _ = child.start_kill();
    }
    echoed?;
    Ok(took)
}

/// `n` timed `connect_once` after a few untimed ones.
pub async fn connect_samples(
    env: &TestEnv,
    n: usize,
    log: &BenchLog,
) -> anyhow::Result<Vec<Duration>> {
    let target = echo_target();
    for _ in 0..WARM_UP {
        connect_once(env, &target, log.stdio()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(connect_once(env, &target, log.stdio()).await?);
    }
    Ok(samples)
}

impl Run<'_> {
    /// LAN: forward setups and `bastionctl connect` setups taken in turns
    /// (so the machine's drift hits both alike), their p50 and p99, and the
    /// extra cost of the ProxyCommand path.
    pub(super) async fn proxycommand(&mut self) {
        let n = self.opts.setup_conns;
        let sampled = self.paired_samples(n).await;
        let sampled = self.note("ProxyCommand (a2) against a forward", sampled);
        // The samples are (forward, connect); the rows put (a2) first.
        let sampled = sampled.map(|(forward, connect)| (connect, forward));
        let rows = [
            (
                "proxycommand.connect",
                format!("(a2) bastionctl connect ({n})"),
            ),
            (
                "proxycommand.forward",
                format!("(a) forward, alongside (a2) ({n})"),
            ),
            (
                "proxycommand.extra",
                "ProxyCommand extra, (a2) − (a)".to_owned(),
            ),
        ];
        let extra = self.out.sheet.daemon_pair(&rows, sampled.as_ref());
        self.progress("ProxyCommand extra p50", "(a2)", extra, "ms");
        self.settle("ProxyCommand").await;
    }

    /// `n` forward setups and `n` connect setups, alternating.
    async fn paired_samples(&self, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let echo = self.world.routes(Path::Daemon).echo;
        let (env, target) = (&self.world.env, echo_target());
        for _ in 0..WARM_UP {
            connect_once(env, &target, self.log.stdio()).await?;
        }
        let (mut forward, mut connect) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let start = Instant::now();
            let stream = latency::open(echo).await?;
            forward.push(start.elapsed());
            drop(stream);
            connect.push(connect_once(env, &target, self.log.stdio()).await?);
        }
        Ok((forward, connect))
    }
}

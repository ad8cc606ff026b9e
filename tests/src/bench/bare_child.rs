//! Runs the bare client (b) as the `bench-bare` child process, so that (a) and
//! (b) each sit in a process of their own with a multi-threaded runtime, and
//! the ratio (a)/(b) measures the daemon's code, not the cost of a process
//! boundary the in-process client would skip.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::harness::{bins, within};

/// Startup is an Entra token and three binds.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// After its stdin closes, the child only waits for its connections' tasks.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct BareChild {
    child: Child,
    /// Closing it tells the child to exit.
    stdin: Option<ChildStdin>,
    pid: u32,
}

impl BareChild {
    /// Starts `bench-bare` for `targets`, its stderr to `stderr`; returns it
    /// and one address per target.
    pub async fn start(
        emulator_json: &Path,
        targets: &[SocketAddrV4],
        stderr: Stdio,
    ) -> anyhow::Result<(BareChild, Vec<SocketAddr>)> {
        let mut cmd = Command::new(bins::path("bench-bare")?);
        cmd.arg("--emulator-json").arg(emulator_json);
        for target in targets {
            cmd.arg("--target").arg(target.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start bench-bare")?;
        let pid = child.id().context("bench-bare exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take();
        let line = within("bench-bare to listen", START_TIMEOUT, async {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).await?;
            Ok(line)
        })
        .await?;
        let Some(addrs) = line.trim().strip_prefix("listening") else {
            bail!("bench-bare did not start: {line:?}");
        };
        let addrs = addrs
            .split_whitespace()
            .map(|a| a.parse().with_context(|| format!("bad address {a:?}")))
            .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
        anyhow::ensure!(addrs.len() == targets.len(), "bench-bare said {line:?}");
        Ok((BareChild { child, stdin, pid }, addrs))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Closes its stdin and waits; an error if it reported failures.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = within("bench-bare to exit", STOP_TIMEOUT, async {
            Ok(self.child.wait().await?)
        })
        .await?;
        anyhow::ensure!(status.success(), "bench-bare exited with {status}");
        Ok(())
    }
}

//! Running the real `bastionctl` against a [`TestEnv`]'s daemon, with the
//! same environment the daemon got (so both derive the same socket).

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::harness::net::free_port;
use crate::harness::{POLL_INTERVAL, STEP_TIMEOUT, TestEnv, bins, within};

/// What one `bastionctl` run printed, decoded.
#[derive(Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CtlOutput {
    fn from(output: Output) -> Self {
        Self {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl CtlOutput {
    /// Asserts a failure reported the documented way: non-zero exit and one
    /// stderr line `bastionctl: <reason>`; returns the reason.
    pub fn one_line_error(&self) -> anyhow::Result<String> {
        ensure!(!self.success, "expected a failure, got success: {self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        ensure!(lines.len() == 1, "expected one stderr line: {self:?}");
        let reason = lines[0]
            .strip_prefix("bastionctl: ")
            .with_context(|| format!("stderr lacks the `bastionctl: ` prefix: {self:?}"))?;
        Ok(reason.to_owned())
    }
}

impl TestEnv {
    /// `bastionctl` with this env's environment; stdio piped, killed on drop.
    pub fn ctl_command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(bins::path("bastionctl")?);
        self.apply(&mut cmd);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    /// Runs `bastionctl ARGS` to completion (bounded in time).
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<CtlOutput> {
        let mut cmd = self.ctl_command(args)?;
        let what = format!("bastionctl {}", args.join(" "));
        let output = within(&what, STEP_TIMEOUT, async { Ok(cmd.output().await?) }).await?;
        Ok(output.into())
    }

    /// Runs `bastionctl connect ARGS` (ssh's ProxyCommand), writes `input`,
    /// closes its stdin and returns what it printed; fails unless it succeeds.
    pub async fn connect_stdio(&self, args: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut full = vec!["connect"];
        full.extend_from_slice(args);
        let mut child = self.ctl_command(&full)?.stdin(Stdio::piped()).spawn()?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(input).await?;
        drop(stdin);
        let output = within("bastionctl connect to exit", STEP_TIMEOUT, async {
            Ok(child.wait_with_output().await?)
        })
        .await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.success(), "exit {}: {stderr}", output.status);
        Ok(output.stdout)
    }

    /// Runs `bastionctl ARGS`, failing with its stderr unless it succeeds.
    pub async fn ctl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ctl(args).await?;
        if !out.success {
            bail!(
                "bastionctl {} failed: {}",
                args.join(" "),
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// Runs `bastionctl ARGS` (which must include `--json`) and parses stdout.
    pub async fn ctl_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let stdout = self.ctl_ok(args).await?;
        serde_json::from_str(&stdout).with_context(|| format!("stdout is not JSON: {stdout}"))
    }

    /// `forward list --json`.
    pub async fn forwards(&self) -> anyhow::Result<Vec<Value>> {
        match self.ctl_json(&["forward", "list", "--json"]).await? {
            Value::Array(forwards) => Ok(forwards),
            other => bail!("forward list --json is not an array: {other}"),
        }
    }

    /// The forward named `name` in `forward list --json`.
    pub async fn forward(&self, name: &str) -> anyhow::Result<Value> {
        self.forwards()
            .await?
            .into_iter()
            .find(|f| f["name"] == name)
            .with_context(|| format!("no forward named {name}"))
    }

    /// Adds a forward to `target` on a port the OS picked; returns the port.
    /// `extra` goes after the port (`--name`, `--bastion`, ...). A port taken
    /// between our probe and the daemon's bind is retried once.
    pub async fn add_forward(&self, target: &str, extra: &[&str]) -> anyhow::Result<u16> {
        let mut last = None;
        for _ in 0..2 {
            let port = free_port()?;
            let port_text = port.to_string();
            let mut args = vec!["forward", "add", target, port_text.as_str()];
            args.extend_from_slice(extra);
            let out = self.ctl(&args).await?;
            if out.success {
                return Ok(port);
            }
            let taken = out.stderr.contains("already") || out.stderr.contains("in use");
            last = Some(out);
            if !taken {
                break;
            }
        }
        bail!("forward add {target} failed: {last:?}")
    }

    /// Polls `forward list --json` until the forward named `name` satisfies
    /// `pred`, returning it; fails with `what` and the last state seen.
    pub async fn wait_for_forward(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let forward = self.forward(name).await?;
            if pred(&forward) {
                return Ok(forward);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}; forward is {forward}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

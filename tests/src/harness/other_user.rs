//! A second local user, for the owner-only rule: created when missing
//! (which needs root; without it the callers skip), its clients real
//! processes running under its uid.

use std::process::Stdio;
use std::sync::Mutex;

use anyhow::{Context as _, ensure};
use tokio::process::Command;

/// The second local user the tests act as.
pub const OTHER_USER: &str = "bastiond-test-other";

/// useradd takes a lock on /etc/passwd: one creation at a time.
static USER_SETUP: Mutex<()> = Mutex::new(());

/// uid and gid of the second user, created if missing; None when not root.
pub fn other_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipping: acting as a second local user needs root");
        return Ok(None);
    }
    let _one = USER_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if nix::unistd::User::from_name(OTHER_USER)?.is_none() {
        let status = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(OTHER_USER)
            .status()
            .context("cannot run useradd")?;
        ensure!(status.success(), "useradd {OTHER_USER} failed: {status}");
    }
    let user = nix::unistd::User::from_name(OTHER_USER)?
        .with_context(|| format!("{OTHER_USER} missing after useradd"))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// `program` run as `uid`/`gid`, from `/` (the test's cwd may be private).
pub fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.uid(uid)
        .gid(gid)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

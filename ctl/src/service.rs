//! `service install|uninstall|status|unit`: bastiond as a systemd user service,
//! its unit rendered from the one template in `systemd/bastiond.service`.
//!
//! `--dry-run` prints the unit and the commands instead of running them, and
//! works without systemd; everything else refuses clearly where there is no
//! user manager to talk to (containers, WSL without systemd, ...).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::cli::ServiceCommand;
use crate::output::{out, outln};
use crate::service_env;

/// The unit shipped in the repository, the template of every unit written
/// or packaged: its ExecStart becomes the real path.
const UNIT_TEMPLATE: &str = include_str!("../../systemd/bastiond.service");
/// ExecStart as shipped: where `cargo install` puts the daemon.
const SHIPPED_EXEC_START: &str = "ExecStart=%h/.cargo/bin/bastiond";
const UNIT_FILE: &str = "bastiond.service";
const SERVICE: &str = "bastiond";
/// Exists only when systemd is the running init (sd_booted(3)).
const SYSTEMD_BOOTED_MARKER: &str = "/run/systemd/system";
/// Where logind records users whose services outlive their sessions.
const LINGER_DIR: &str = "/var/lib/systemd/linger";

pub fn run(command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Install { dry_run } => install(dry_run),
        ServiceCommand::Uninstall { dry_run } => uninstall(dry_run),
        ServiceCommand::Status { dry_run } => status(dry_run),
        ServiceCommand::Unit { bastiond } => {
            let bastiond = match bastiond {
                Some(path) => path,
                None => locate_bastiond()?,
            };
            out!("{}", render_unit(&bastiond))
        }
    }
}

fn install(dry_run: bool) -> anyhow::Result<()> {
    let bastiond = locate_bastiond()?;
    let unit_path = unit_path()?;
    let unit = render_unit(&bastiond);
    let env_path = service_env::path()?;
    let env = service_env::from_environment(std::env::vars_os());
    let commands: [&[&str]; 2] = [&["daemon-reload"], &["enable", "--now", SERVICE]];
    if dry_run {
        outln!("# {}", unit_path.display())?;
        out!("{unit}")?;
        outln!("")?;
        outln!(
            "# {} (mode 0600; secrets shown masked here)",
            env_path.display()
        )?;
        out!("{}", service_env::render(&env, service_env::Show::Masked))?;
        outln!("")?;
        for args in commands {
            outln!("systemctl --user {}", args.join(" "))?;
        }
        outln!("{}", linger_hint())?;
        return Ok(());
    }
    ensure_systemd()?;
    if let Some(dir) = unit_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&unit_path, unit)
        .with_context(|| format!("cannot write {}", unit_path.display()))?;
    service_env::write(
        &env_path,
        &service_env::render(&env, service_env::Show::Plain),
    )?;
    for args in commands {
        systemctl(args)?;
    }
    outln!("Installed {} and started bastiond.", unit_path.display())?;
    if !lingering() {
        outln!("{}", linger_hint())?;
    }
    Ok(())
}

fn uninstall(dry_run: bool) -> anyhow::Result<()> {
    let unit_path = unit_path()?;
    if dry_run {
        outln!("systemctl --user disable --now {SERVICE}")?;
        outln!("rm {}", unit_path.display())?;
        outln!("systemctl --user daemon-reload")?;
        return Ok(());
    }
    ensure_systemd()?;
    if !unit_path.exists() {
        bail!(
            "bastiond is not installed as a user service ({} does not exist)",
            unit_path.display()
        );
    }
    systemctl(&["disable", "--now", SERVICE])?;
    std::fs::remove_file(&unit_path)
        .with_context(|| format!("cannot remove {}", unit_path.display()))?;
    systemctl(&["daemon-reload"])?;
    outln!("Stopped bastiond and removed {}.", unit_path.display())?;
    Ok(())
}

fn status(dry_run: bool) -> anyhow::Result<()> {
    if dry_run {
        outln!("systemctl --user --no-pager status {SERVICE}")?;
        return Ok(());
    }
    ensure_systemd()?;
    let status = Command::new("systemctl")
        .args(["--user", "--no-pager", "status", SERVICE])
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        bail!("the bastiond user service is not running (systemctl status: {status})");
    }
    Ok(())
}

fn render_unit(bastiond: &Path) -> String {
    let path = bastiond.to_string_lossy();
    // systemd splits ExecStart on whitespace unless the word is quoted.
    let exec = if path.contains(char::is_whitespace) {
        format!("\"{path}\"")
    } else {
        path.into_owned()
    };
    UNIT_TEMPLATE.replace(SHIPPED_EXEC_START, &format!("ExecStart={exec}"))
}

/// `$XDG_CONFIG_HOME/systemd/user/bastiond.service`, else under ~/.config.
fn unit_path() -> anyhow::Result<PathBuf> {
    let config = service_env::config_home()?;
    Ok(config.join("systemd").join("user").join(UNIT_FILE))
}

/// The bastiond installed next to this bastionctl, else the one on PATH.
fn locate_bastiond() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot tell where bastionctl is installed")?;
    let beside = exe.parent().map(|dir| dir.join(SERVICE));
    if let Some(path) = beside.as_ref().filter(|path| path.is_file()) {
        return Ok(path.canonicalize().unwrap_or_else(|_| path.clone()));
    }
    find_on_path(OsStr::new(SERVICE)).with_context(|| {
        format!(
            "cannot find bastiond next to bastionctl ({}) or on PATH; install it first",
            exe.parent().unwrap_or(Path::new("/")).display()
        )
    })
}

fn find_on_path(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// systemctl exists, systemd is the init, and a user manager answers.
fn ensure_systemd() -> anyhow::Result<()> {
    const ADVICE: &str = "run `bastiond` yourself, or see what would be installed with `bastionctl service install --dry-run`";
    if find_on_path(OsStr::new("systemctl")).is_none() {
        bail!("systemd is not available (no systemctl on PATH); {ADVICE}");
    }
    if !Path::new(SYSTEMD_BOOTED_MARKER).exists() {
        bail!(
            "systemd is not running on this machine ({SYSTEMD_BOOTED_MARKER} is missing); {ADVICE}"
        );
    }
    let reachable = Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !reachable {
        bail!("no systemd user manager is reachable (`systemctl --user` failed); {ADVICE}");
    }
    Ok(())
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run systemctl")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "`systemctl --user {}` failed ({}): {}",
            args.join(" "),
            output.status,
            crate::output::one_line(&stderr)
        );
    }
    Ok(())
}

fn user() -> Option<String> {
    ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|user| !user.is_empty()))
}

fn lingering() -> bool {
    user().is_some_and(|user| Path::new(LINGER_DIR).join(user).exists())
}

fn linger_hint() -> String {
    let user = user().unwrap_or_else(|| "$USER".to_owned());
    format!("# Forwards stop when you log out; to keep them running: loginctl enable-linger {user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_gets_the_bastiond_path() {
        let unit = render_unit(Path::new("/usr/local/bin/bastiond"));
        assert!(
            unit.contains("\nExecStart=/usr/local/bin/bastiond\n"),
            "{unit}"
        );
        assert!(!unit.contains(SHIPPED_EXEC_START));
        assert!(unit.contains("Type=notify"));
        let unit = render_unit(Path::new("/opt/my tools/bastiond"));
        assert!(
            unit.contains("\nExecStart=\"/opt/my tools/bastiond\"\n"),
            "{unit}"
        );
    }
}

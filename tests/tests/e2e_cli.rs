//! The daemon's process-level contract and the commands around forwards:
//! socket permissions, one daemon per user, "not running", status, reload,
//! ssh-config, service (dry run), completions and man.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use bastion_tests::emulator::BastionSpec;
use bastion_tests::harness::net::{echo_roundtrip, free_port, local, payload};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, bins};

type Result = anyhow::Result<()>;

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test]
async fn control_socket_is_private() -> Result {
    let env = TestEnv::start().await?;
    let daemon = Daemon::start(&env).await?;
    let socket = env.socket();
    assert_eq!(mode(&socket)?, 0o600, "socket {}", socket.display());
    let dir = socket.parent().unwrap_or(Path::new("/"));
    assert_eq!(mode(dir)?, 0o700, "dir {}", dir.display());
    // READY=1 is what the harness waited for; it came once.
    let ready = daemon
        .notifications()
        .iter()
        .filter(|m| m.lines().any(|l| l == "READY=1"))
        .count();
    assert_eq!(ready, 1, "{:?}", daemon.notifications());
    Ok(())
}

#[tokio::test]
async fn second_daemon_is_refused() -> Result {
    let env = TestEnv::start().await?;
    let daemon = Daemon::start(&env).await?;
    let second = Daemon::run_to_exit(&env, &[]).await?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second daemon: {stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(
        stderr.contains(&daemon.pid().to_string()),
        "pid not named: {stderr}"
    );
    // The first one keeps its socket and answers.
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["pid"], daemon.pid());
    Ok(())
}

#[tokio::test]
async fn no_daemon_says_how_to_start_it() -> Result {
    let env = TestEnv::start().await?;
    for args in [
        &["forward", "list"][..],
        &["status"],
        &["connect", "10.1.0.4:22"],
    ] {
        let reason = env.ctl(args).await?.one_line_error()?;
        assert!(
            reason.contains("bastiond is not running"),
            "{args:?}: {reason}"
        );
        assert!(
            reason.contains("systemctl --user start bastiond"),
            "{args:?}: {reason}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn status_reports_the_daemon() -> Result {
    let env = TestEnv::start().await?;
    let daemon = Daemon::start(&env).await?;
    env.add_forward("10.1.0.4:7", &["--name", "echo"]).await?;
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pid"], daemon.pid());
    assert_eq!(status["credential"], "azure-cli");
    assert_eq!(status["forwards"], 1);
    // The runtime's tasks: at least the control server's and the forward's.
    assert!(status["tasks"].as_u64() >= Some(2), "{status}");
    assert_eq!(status["bastions"][0]["name"], "hub");
    assert_eq!(
        status["config_file"],
        env.config_file().display().to_string()
    );
    assert_eq!(status["state_file"], env.state_file().display().to_string());
    assert_eq!(status["socket"], env.socket().display().to_string());

    let text = env.ctl_ok(&["status"]).await?;
    assert!(text.starts_with("bastiond "), "{text}");
    assert!(text.contains(&format!("pid {}", daemon.pid())), "{text}");
    assert!(text.contains("azure-cli"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("hub")), "{text}");
    // Same version on both sides: no warning.
    let out = env.ctl(&["status"]).await?;
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    Ok(())
}

/// An env whose emulator has bastions "hub" and "spoke" but whose settings
/// file names only the hub; returns the full settings text to restore later.
async fn env_with_spoke_held_back() -> anyhow::Result<(TestEnv, String)> {
    let env = TestEnv::start_with(|cfg| {
        cfg.bastions = vec![BastionSpec::standard("hub"), BastionSpec::standard("spoke")];
    })
    .await?;
    let full = std::fs::read_to_string(env.config_file())?;
    let spoke_at = full
        .find("[bastions.spoke]")
        .ok_or_else(|| anyhow::anyhow!("{full}"))?;
    let rest = &full[spoke_at + 1..];
    let spoke_end = rest
        .find("\n[")
        .map_or(full.len(), |i| spoke_at + 1 + i + 1);
    let hub_only = format!("{}{}", &full[..spoke_at], &full[spoke_end..]);
    anyhow::ensure!(!hub_only.contains("spoke"), "{hub_only}");
    std::fs::write(env.config_file(), &hub_only)?;
    Ok((env, full))
}

#[tokio::test]
async fn reload_picks_up_a_new_bastion() -> Result {
    let (env, full) = env_with_spoke_held_back().await?;
    let _daemon = Daemon::start(&env).await?;

    let port = free_port()?.to_string();
    let reason = env
        .ctl(&["forward", "add", "10.1.0.4:7", &port, "--bastion", "spoke"])
        .await?
        .one_line_error()?;
    assert!(reason.contains("spoke"), "{reason}");

    let out = env.ctl_ok(&["reload"]).await?;
    assert!(!out.trim().is_empty(), "reload printed nothing");
    std::fs::write(env.config_file(), &full)?;
    let out = env.ctl_ok(&["reload"]).await?;
    assert!(
        out.contains("spoke"),
        "reload did not report the new bastion: {out}"
    );

    let port = env
        .add_forward("10.1.0.4:7", &["--name", "spoke", "--bastion", "spoke"])
        .await?;
    echo_roundtrip(local(port), &payload(4096, 1)).await?;
    Ok(())
}

/// How often the SIGHUP test looks at `status` while the daemon reloads.
const RELOAD_POLL: std::time::Duration = std::time::Duration::from_millis(50);

#[tokio::test]
async fn sighup_reloads_the_settings_and_keeps_forwards() -> Result {
    let (env, full) = env_with_spoke_held_back().await?;
    let daemon = Daemon::start(&env).await?;
    let port = env.add_forward("10.1.0.4:7", &["--name", "kept"]).await?;
    let status = env.ctl_json(&["status", "--json"]).await?;
    anyhow::ensure!(!status.to_string().contains("spoke"), "{status}");

    std::fs::write(env.config_file(), &full)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.pid())?),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let status = env.ctl_json(&["status", "--json"]).await?;
        let names: Vec<_> = status["bastions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["name"].as_str())
            .collect();
        if names.contains(&"spoke") {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not load the new bastion: {status}"
        );
        tokio::time::sleep(RELOAD_POLL).await;
    }
    // The forward from before the reload still carries bytes; the new bastion works.
    echo_roundtrip(local(port), &payload(4096, 1)).await?;
    let spoke = env
        .add_forward("10.1.0.4:7", &["--name", "spoke", "--bastion", "spoke"])
        .await?;
    echo_roundtrip(local(spoke), &payload(4096, 2)).await?;
    Ok(())
}

#[tokio::test]
async fn ssh_config_prints_a_host_block() -> Result {
    let env = TestEnv::start().await?;
    let out = env.ctl_ok(&["ssh-config", "--host", "10.1.*"]).await?;
    let ctl = bins::path("bastionctl")?.canonicalize()?;
    assert!(out.contains("\nHost 10.1.*\n"), "{out}");
    assert!(
        out.contains(&format!(
            "    ProxyCommand {} connect %h:%p\n",
            ctl.display()
        )),
        "{out}"
    );
    assert!(out.contains("    ServerAliveInterval 30\n"), "{out}");
    let out = env.ctl_ok(&["ssh-config", "--bastion", "spoke"]).await?;
    assert!(out.contains("connect --bastion spoke %h:%p"), "{out}");
    Ok(())
}

#[tokio::test]
async fn service_install_dry_run_shows_unit_and_commands() -> Result {
    let env = TestEnv::start().await?;
    let out = env.ctl_ok(&["service", "install", "--dry-run"]).await?;
    let bastiond = bins::path("bastiond")?.canonicalize()?;
    let unit_path = env.config_home().join("systemd/user/bastiond.service");
    assert!(
        out.starts_with(&format!("# {}\n", unit_path.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("\nExecStart={}\n", bastiond.display())),
        "{out}"
    );
    assert!(out.contains("Type=notify"), "{out}");
    assert!(out.contains("systemctl --user daemon-reload\n"), "{out}");
    assert!(
        out.contains("systemctl --user enable --now bastiond\n"),
        "{out}"
    );
    assert!(out.contains("loginctl enable-linger"), "{out}");
    assert!(!unit_path.exists(), "a dry run wrote the unit");

    // The environment file: what the shell has that the service would not.
    let mut cmd = env.ctl_command(&["service", "install", "--dry-run"])?;
    cmd.env("AZURE_CLIENT_ID", "app-0000")
        .env("AZURE_CLIENT_SECRET", "very-secret-value");
    let output = cmd.output().await?;
    assert!(output.status.success(), "{output:?}");
    let out = String::from_utf8(output.stdout)?;
    let env_file = env.config_home().join("bastiond/environment");
    assert!(
        out.contains(&format!("# {} (mode 0600", env_file.display())),
        "{out}"
    );
    assert!(out.contains("\nPATH=\""), "{out}");
    assert!(out.contains("AZURE_CLIENT_ID=\"app-0000\""), "{out}");
    assert!(out.contains("AZURE_CLIENT_SECRET=\"(hidden"), "{out}");
    assert!(!out.contains("very-secret-value"), "{out}");
    assert!(
        out.contains("EnvironmentFile=-%E/bastiond/environment"),
        "{out}"
    );
    assert!(!env_file.exists(), "a dry run wrote the environment file");

    for args in [
        &["service", "uninstall", "--dry-run"][..],
        &["service", "status", "--dry-run"],
    ] {
        let out = env.ctl_ok(args).await?;
        assert!(out.contains("systemctl --user"), "{out}");
    }
    // Without a running systemd, the real thing refuses clearly.
    if !Path::new("/run/systemd/system").exists() {
        let reason = env.ctl(&["service", "install"]).await?.one_line_error()?;
        assert!(reason.contains("systemd"), "{reason}");
        assert!(!unit_path.exists(), "the unit was written anyway");
    }
    Ok(())
}

#[tokio::test]
async fn completions_and_man_page() -> Result {
    let env = TestEnv::start().await?;
    let bash = env.ctl_ok(&["completions", "bash"]).await?;
    assert!(
        bash.contains("bastionctl") && bash.contains("forward"),
        "{bash}"
    );
    let man = env.ctl_ok(&["man"]).await?;
    assert!(man.contains(".TH bastionctl"), "{man}");
    let out = env.ctl(&["completions", "nosuchshell"]).await?;
    let reason = out.one_line_error()?;
    assert!(reason.contains("nosuchshell"), "{reason}");
    assert_eq!(out.code, Some(2), "usage errors exit 2, as clap's do");
    Ok(())
}

#[tokio::test]
async fn socket_override_by_flag_and_environment() -> Result {
    let env = TestEnv::start().await?;
    let socket = env.root().join("custom.sock");
    let socket_text = socket.display().to_string();
    let daemon = Daemon::start_with(&env, &[], &[("BASTIOND_SOCKET", &socket_text)]).await?;
    assert!(socket.exists() && !env.socket().exists());

    let reason = env.ctl(&["status"]).await?.one_line_error()?;
    assert!(reason.contains("not running"), "{reason}");
    let status = env
        .ctl_json(&["--socket", &socket_text, "status", "--json"])
        .await?;
    assert_eq!(status["pid"], daemon.pid());
    let mut cmd = env.ctl_command(&["status", "--json"])?;
    let out = cmd.env("BASTIOND_SOCKET", &socket).output().await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status["socket"], socket_text);
    Ok(())
}

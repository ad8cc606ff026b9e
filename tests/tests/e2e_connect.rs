//! `bastionctl connect` (stdio, as ssh's ProxyCommand), real OpenSSH
//! sessions through it and through a forward, and `forward watch`.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use bastion_tests::harness::net::{local, payload, sha256_hex};
use bastion_tests::harness::sshd::{SSHD, Sshd};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, net::echo_roundtrip, within};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

type Result = anyhow::Result<()>;

const MIB: usize = 1024 * 1024;
/// Where the emulator's VNet puts our sshd.
const SSH_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 8);

#[tokio::test]
async fn connect_round_trips_mebibytes_over_stdio() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let data = payload(4 * MIB, 9);
    let mut child = env
        .ctl_command(&["connect", "10.1.0.4:7"])?
        .stdin(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let echoed = within("4 MiB through bastionctl connect", STEP_TIMEOUT, async {
        let write = async {
            stdin.write_all(&data).await?;
            anyhow::Ok(stdin)
        };
        let read = async {
            let mut echoed = vec![0u8; data.len()];
            stdout.read_exact(&mut echoed).await?;
            anyhow::Ok(echoed)
        };
        let (stdin, echoed) = tokio::try_join!(write, read)?;
        // Stdin EOF is the end of our side: bastionctl must finish cleanly.
        drop(stdin);
        Ok(echoed)
    })
    .await?;
    assert_eq!(sha256_hex(&echoed), sha256_hex(&data));
    let output = within("bastionctl connect to exit", STEP_TIMEOUT, async {
        Ok(child.wait_with_output().await?)
    })
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {}: {stderr}", output.status);
    assert!(output.stdout.is_empty(), "extra bytes after the echo");
    env.emulator
        .wait_for(
            "the session deleted",
            |l| l.live_sessions == 0,
            STEP_TIMEOUT,
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn connect_leaves_a_shared_pipe_blocking_as_it_found_it() -> Result {
    // bastionctl reads a pipe through the reactor, in non-blocking mode; the
    // pipe's other holders (here: this test, through a second descriptor of
    // the same read end) must find it blocking again once bastionctl is done.
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    // Close-on-exec: the child must not hold a write end, or it never sees EOF.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut child = env
        .ctl_command(&["connect", "10.1.0.4:7"])?
        .stdin(Stdio::from(read.try_clone()?))
        .spawn()?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut write = std::fs::File::from(write);
    std::io::Write::write_all(&mut write, b"x")?;
    let mut echoed = [0u8; 1];
    within("the echo", STEP_TIMEOUT, async {
        Ok(stdout.read_exact(&mut echoed).await?)
    })
    .await?;
    // While it runs, the read end is non-blocking: the reactor has it.
    let flags = |fd: &std::os::fd::OwnedFd| {
        nix::fcntl::OFlag::from_bits_truncate(
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap_or_default(),
        )
    };
    assert!(flags(&read).contains(nix::fcntl::OFlag::O_NONBLOCK));
    drop(write);
    let status = within("bastionctl connect to exit", STEP_TIMEOUT, async {
        Ok(child.wait().await?)
    })
    .await?;
    assert!(status.success(), "exit {status}");
    assert!(!flags(&read).contains(nix::fcntl::OFlag::O_NONBLOCK));
    Ok(())
}

#[tokio::test]
async fn connect_to_an_unreachable_target_fails_in_one_line() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let out = env.ctl(&["connect", "10.2.3.4:22"]).await?;
    let reason = out.one_line_error()?;
    assert!(reason.contains("not reachable"), "{reason}");
    assert!(
        out.stdout.is_empty(),
        "diagnostics on stdout: {:?}",
        out.stdout
    );
    let reason = env
        .ctl(&["connect", "10.1.0.4:22", "--bastion", "nope"])
        .await?
        .one_line_error()?;
    assert!(reason.contains("nope"), "{reason}");
    let reason = env.ctl(&["connect", "10.1.0.4"]).await?.one_line_error()?;
    assert!(reason.contains("10.1.0.4"), "{reason}");
    Ok(())
}

async fn start_sshd(env: &TestEnv) -> anyhow::Result<Option<Sshd>> {
    let Some(sshd) = Sshd::start(&env.root().join("sshd")).await? else {
        eprintln!("SKIPPED: {SSHD} is not installed (apt-get install openssh-server)");
        return Ok(None);
    };
    env.emulator.map_target(IpAddr::V4(SSH_HOST), 22, sshd.addr);
    Ok(Some(sshd))
}

async fn run_ssh(sshd: &Sshd, env: &TestEnv, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = sshd.ssh(env, args);
    let output = within("ssh to finish", STEP_TIMEOUT, async {
        Ok(cmd.output().await?)
    })
    .await?;
    anyhow::ensure!(
        output.status.success(),
        "ssh {args:?} failed ({}): {}\n--- sshd ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        sshd.logs()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The sshd fixture itself, directly: tells a broken fixture from a broken daemon.
#[tokio::test]
async fn ssh_baseline_without_bastion() -> Result {
    let env = TestEnv::start().await?;
    let Some(sshd) = start_sshd(&env).await? else {
        return Ok(());
    };
    let port = sshd.addr.port().to_string();
    let out = run_ssh(&sshd, &env, &["-p", &port, "127.0.0.1", "echo hello"]).await?;
    assert_eq!(out, "hello\n");
    Ok(())
}

#[tokio::test]
async fn ssh_through_proxycommand_connect() -> Result {
    let env = TestEnv::start().await?;
    let Some(sshd) = start_sshd(&env).await? else {
        return Ok(());
    };
    let _daemon = Daemon::start(&env).await?;
    let ctl = bastion_tests::harness::bins::path("bastionctl")?;
    let proxy = format!("ProxyCommand={} connect %h:%p", ctl.display());
    let out = run_ssh(
        &sshd,
        &env,
        &["-o", &proxy, "-p", "22", "10.1.0.8", "echo hello"],
    )
    .await?;
    assert_eq!(out, "hello\n");
    env.emulator
        .wait_for(
            "the ssh session's tunnel deleted",
            |l| l.live_sessions == 0,
            STEP_TIMEOUT,
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn ssh_through_a_forward() -> Result {
    let env = TestEnv::start().await?;
    let Some(sshd) = start_sshd(&env).await? else {
        return Ok(());
    };
    let _daemon = Daemon::start(&env).await?;
    let port = env
        .add_forward("10.1.0.8:22", &["--name", "ssh"])
        .await?
        .to_string();
    let out = run_ssh(&sshd, &env, &["-p", &port, "127.0.0.1", "echo hello"]).await?;
    assert_eq!(out, "hello\n");
    // A bulk copy over the same path: 2 MiB through ssh, hashed remotely.
    let data = payload(2 * MIB, 11);
    let mut cmd = sshd.ssh(&env, &["-p", &port, "127.0.0.1", "sha256sum"]);
    let mut child = cmd.stdin(Stdio::piped()).spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let output = within("ssh sha256sum", STEP_TIMEOUT, async {
        stdin.write_all(&data).await?;
        drop(stdin);
        Ok(child.wait_with_output().await?)
    })
    .await?;
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.starts_with(&sha256_hex(&data)),
        "{out} / {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn watch_json_shows_connections_and_the_daemon_going_away() -> Result {
    /// How long one attempt listens for the events of its connection.
    const ATTEMPT: Duration = Duration::from_secs(2);
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let port = env
        .add_forward("10.1.0.4:7", &["--name", "watched"])
        .await?;
    let mut watch = env.ctl_command(&["forward", "watch", "--json"])?.spawn()?;
    let stdout = watch
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();

    // The watch only sees what happens after it subscribed, which we can't
    // observe: repeat a connection until its open and close events show up.
    let (mut opened, mut closed) = (false, false);
    within(
        "connection events on forward watch --json",
        STEP_TIMEOUT,
        async {
            while !(opened && closed) {
                echo_roundtrip(local(port), b"watch me").await?;
                let _ = tokio::time::timeout(ATTEMPT, async {
                    while let Ok(Some(line)) = lines.next_line().await {
                        let event: Value = serde_json::from_str(&line)?;
                        if event["forward_name"] == "watched" {
                            opened |= event["event"] == "connection_opened";
                            closed |= event["event"] == "connection_closed"
                                && event["bytes_up"] == 8
                                && event["bytes_down"] == 8;
                        }
                        if opened && closed {
                            break;
                        }
                    }
                    anyhow::Ok(())
                })
                .await;
            }
            Ok(())
        },
    )
    .await?;

    daemon.kill().await?;
    let status = within(
        "forward watch to notice the daemon is gone",
        STEP_TIMEOUT,
        async {
            while let Ok(Some(_)) = lines.next_line().await {}
            Ok(watch.wait().await?)
        },
    )
    .await?;
    assert!(!status.success(), "watch exited 0 after the daemon died");
    let mut stderr = String::new();
    if let Some(mut err) = watch.stderr.take() {
        err.read_to_string(&mut stderr).await?;
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("bastionctl: "), "{stderr}");
    Ok(())
}

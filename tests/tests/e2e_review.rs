//! The review's correctness findings, end to end: bounded answers from the
//! network, text from the network made printable, saved forwards that cannot
//! start kept, a changed CA file picked up by `reload`, a broken login
//! retried with backoff, and `auth.tenant_id` honoured by developer-tools.

use bastion_tests::emulator::FaultBody;
use bastion_tests::harness::net::{echo_roundtrip, free_port, local, payload};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

type Result = anyhow::Result<()>;

const ECHO: &str = "10.1.0.4:7";
const MIB: u64 = 1024 * 1024;
/// The token reply of the memory test: far beyond any real one.
const HUGE_REPLY: usize = 256 * 1024 * 1024;
/// How much the daemon's peak memory may grow while refusing it.
const MEMORY_SLACK: u64 = 32 * MIB;

/// A `/proc/PID/status` figure in bytes (`VmHWM`: peak resident memory).
fn proc_status_bytes(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no {key} in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// Connects to the forward and waits until the daemon closes the connection.
async fn refused_connection(port: u16) -> Result {
    let mut stream = TcpStream::connect(local(port)).await?;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await?;
    anyhow::ensure!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    Ok(())
}

#[tokio::test]
async fn a_256_mib_token_reply_is_not_read_and_is_explained() -> Result {
    let env = TestEnv::start().await?;
    let daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "big"]).await?;
    echo_roundtrip(local(port), &payload(1024, 1)).await?;
    let peak_before = proc_status_bytes(daemon.pid(), "VmHWM:")?;

    env.emulator.faults().huge_token_replies(1, HUGE_REPLY);
    refused_connection(port).await?;
    let forward = env
        .wait_for_forward(
            "big",
            "the oversized answer in last_error",
            STEP_TIMEOUT,
            |f| f["last_error"].is_string(),
        )
        .await?;
    let error = forward["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("larger than 64 KiB"), "{forward}");
    let peak_after = proc_status_bytes(daemon.pid(), "VmHWM:")?;
    assert!(
        peak_after < peak_before + MEMORY_SLACK,
        "peak RSS grew from {} MiB to {} MiB",
        peak_before / MIB,
        peak_after / MIB
    );
    assert_eq!(
        env.emulator.ledger().rejected("injected_huge_token_reply"),
        1
    );
    // The next connection is served.
    echo_roundtrip(local(port), &payload(1024, 2)).await?;
    Ok(())
}

#[tokio::test]
async fn control_characters_from_the_network_never_reach_the_terminal() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "esc"]).await?;
    env.emulator.faults().fail_token_posts(
        1,
        400,
        FaultBody::Json("bad\u{1b}[2J\r\nrequest\u{7}".into()),
    );
    refused_connection(port).await?;
    let forward = env
        .wait_for_forward("esc", "the error in last_error", STEP_TIMEOUT, |f| {
            f["last_error"].is_string()
        })
        .await?;
    let error = forward["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("bad") && error.contains("request"),
        "{error:?}"
    );
    assert!(!error.chars().any(char::is_control), "{error:?}");
    let table = env.ctl_ok(&["forward", "list"]).await?;
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert!(
        table.contains(" ago: "),
        "the error's age is shown: {table}"
    );
    assert!(
        forward["last_error_at_ms"]
            .as_i64()
            .is_some_and(|ms| ms > 1_600_000_000_000),
        "{forward}"
    );
    Ok(())
}

#[tokio::test]
async fn a_saved_forward_that_cannot_start_is_kept_and_shown() -> Result {
    let env = TestEnv::start().await?;
    let good_port = free_port()?;
    let state = serde_json::json!({
        "version": 1,
        "forwards": [
            {"id": "0000000a", "name": "good", "bastion": "hub", "target": ECHO,
             "bind_address": "127.0.0.1", "local_port": good_port, "created_at_ms": 1},
            {"id": "0000000b", "name": "broken", "bastion": "hub", "target": "not a target",
             "bind_address": "127.0.0.1", "local_port": 1, "created_at_ms": 2},
        ]
    });
    let state_file = env.state_file();
    std::fs::create_dir_all(state_file.parent().unwrap_or(env.root()))?;
    std::fs::write(&state_file, serde_json::to_vec(&state)?)?;
    let _daemon = Daemon::start(&env).await?;

    let broken = env.forward("broken").await?;
    assert_eq!(broken["state"], "error", "{broken}");
    assert!(
        broken["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not started")),
        "{broken}"
    );
    // Another change saves the file: the broken forward stays in it.
    env.add_forward(ECHO, &["--name", "new"]).await?;
    let saved = std::fs::read_to_string(&state_file)?;
    assert!(
        saved.contains("\"broken\"") && saved.contains("not a target"),
        "{saved}"
    );
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["forwards_in_error"], 1, "{status}");
    // And it can be removed.
    env.ctl_ok(&["forward", "remove", "broken"]).await?;
    let saved = std::fs::read_to_string(&state_file)?;
    assert!(!saved.contains("\"broken\""), "{saved}");
    assert!(env.forward("broken").await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_name_that_reads_as_an_id_is_refused() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = free_port()?.to_string();
    let out = env
        .ctl(&["forward", "add", ECHO, &port, "--name", "c0ffee42"])
        .await?;
    let reason = out.one_line_error()?;
    assert!(reason.contains("hex digits"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn reload_picks_up_new_certificates_in_the_same_ca_file() -> Result {
    let env = TestEnv::start().await?;
    let right_ca = std::fs::read(&env.emulator.info().ca_file)?;
    let wrong_ca = rcgen::generate_simple_self_signed(vec!["not-the-emulator".to_string()])?
        .cert
        .pem();
    let ca_file = env.root().join("corp-ca.pem");
    std::fs::write(&ca_file, wrong_ca)?;
    let config = std::fs::read_to_string(env.config_file())?;
    let emulator_ca = env.emulator.info().ca_file.display().to_string();
    let switched = config.replace(&emulator_ca, &ca_file.display().to_string());
    anyhow::ensure!(switched != config, "no ca_file in {config}");
    std::fs::write(env.config_file(), switched)?;

    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "tls"]).await?;
    refused_connection(port).await?;

    std::fs::write(&ca_file, right_ca)?;
    let out = env.ctl_ok(&["reload"]).await?;
    assert!(out.contains("certificates changed"), "{out}");
    echo_roundtrip(local(port), &payload(4096, 3)).await?;
    Ok(())
}

#[tokio::test]
async fn a_broken_login_is_retried_with_backoff_not_per_connection() -> Result {
    let env = TestEnv::start().await?;
    env.emulator.faults().fail_az(1000);
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "nologin"]).await?;
    env.emulator
        .wait_for("the warm-up's az call", |l| l.az_calls >= 1, STEP_TIMEOUT)
        .await?;
    for _ in 0..5 {
        refused_connection(port).await?;
    }
    let calls = env.emulator.ledger().az_calls;
    assert!(calls <= 2, "az ran {calls} times for 5 connections");
    let forward = env.forward("nologin").await?;
    assert!(
        forward["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("az login")),
        "{forward}"
    );
    Ok(())
}

#[tokio::test]
async fn developer_tools_honours_the_tenant() -> Result {
    let env = TestEnv::start().await?;
    let config = std::fs::read_to_string(env.config_file())?;
    let switched = config.replace(
        "credential = \"azure-cli\"",
        "credential = \"developer-tools\"\ntenant_id = \"00000000-0000-0000-0000-00000000dead\"",
    );
    anyhow::ensure!(switched != config, "no azure-cli credential in {config}");
    std::fs::write(env.config_file(), switched)?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "tenant"]).await?;
    refused_connection(port).await?;
    let status = env.ctl_json(&["status", "--json"]).await?;
    let error = status["auth_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("00000000-0000-0000-0000-00000000dead"),
        "{status}"
    );
    assert_eq!(env.emulator.ledger().sessions_created, 0);
    Ok(())
}

//! The daemon under a misbehaving Bastion: short-lived tokens, error
//! answers, dropped WebSockets; and what it leaves behind (sessions, logs).

use std::time::{Duration, Instant};

use bastion_tests::emulator::{BastionSpec, DropMode, FaultBody, HandshakeQuirk, Ledger};
use bastion_tests::harness::net::{echo_roundtrip, expect_cut, local, payload};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

type Result = anyhow::Result<()>;

const ECHO: &str = "10.1.0.4:7";
const MIB: usize = 1024 * 1024;
/// Armed failures outnumber any retry policy, so each case fails for sure
/// until it is disarmed.
const FAULT_REPEATS: u32 = 1000;

/// Rejections a correct client never causes (injected faults are ours).
fn unexpected_rejects(ledger: &Ledger) -> Vec<String> {
    ledger
        .rejects
        .keys()
        .filter(|reason| !reason.starts_with("injected_"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_not_fetched_per_connection() -> Result {
    const LIFETIME: Duration = Duration::from_secs(4);
    const RUN_FOR: Duration = Duration::from_secs(10);
    const PACE: Duration = Duration::from_millis(200);
    let env = TestEnv::start_with(|cfg| cfg.token_lifetime = LIFETIME).await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "long"]).await?;
    echo_roundtrip(local(port), b"warm up").await?;

    let az_before = env.emulator.ledger().az_calls;
    let started = Instant::now();
    let mut connections = 0u64;
    let mut pace = tokio::time::interval(PACE);
    while started.elapsed() < RUN_FOR {
        pace.tick().await;
        echo_roundtrip(local(port), &payload(4096, connections)).await?;
        connections += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ledger = env.emulator.ledger();
    let az_calls = ledger.az_calls - az_before;
    // One token per lifetime, plus slack for refreshing a little early.
    let bound = (elapsed / LIFETIME.as_secs_f64()).ceil() as u64 + 2;
    eprintln!("{connections} connections over {elapsed:.1}s: {az_calls} az calls (bound {bound})");
    assert!(
        connections >= 20,
        "only {connections} connections in {elapsed:.1}s"
    );
    assert!(az_calls >= 1, "the token was never refreshed: {ledger:?}");
    assert!(
        az_calls <= bound,
        "{az_calls} az calls for {connections} connections over {elapsed:.1}s (bound {bound}): {ledger:?}"
    );
    assert_eq!(ledger.rejected("expired_aztoken"), 0, "{ledger:?}");
    assert!(unexpected_rejects(&ledger).is_empty(), "{ledger:?}");
    Ok(())
}

#[tokio::test]
async fn bastion_errors_show_in_last_error_and_recover() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "flaky"]).await?;
    echo_roundtrip(local(port), b"before").await?;

    let cases = [
        (
            401,
            FaultBody::Json("Token validation failed (case 401)".into()),
            "case 401",
        ),
        (
            403,
            FaultBody::Json("Access denied to this Bastion (case 403)".into()),
            "case 403",
        ),
        (
            404,
            FaultBody::Json("Invalid IP address for connection (case 404)".into()),
            "case 404",
        ),
        (
            500,
            FaultBody::Json("Unexpected internal error (case 500)".into()),
            "case 500",
        ),
        (
            500,
            FaultBody::Html("<html><body><h1>HTTP Status 500</h1></body></html>".into()),
            "500",
        ),
        (502, FaultBody::Empty, "502"),
    ];
    for (status, body, expected) in cases {
        let label = format!("{status} {body:?}");
        env.emulator
            .faults()
            .fail_token_posts(FAULT_REPEATS, status, body);
        let echoed = expect_cut(local(port), b"refused").await?;
        assert_eq!(
            echoed, 0,
            "{label}: bytes came back through a refused tunnel"
        );
        let forward = env
            .wait_for_forward(
                "flaky",
                &format!("last_error for {label}"),
                STEP_TIMEOUT,
                |f| {
                    f["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(expected))
                },
            )
            .await?;
        let error = forward["last_error"].as_str().unwrap_or_default();
        eprintln!("{label}: last_error {error:?}");
        assert!(
            !error.contains('\n'),
            "{label}: multi-line last_error {error:?}"
        );
        assert_eq!(forward["state"], "listening", "{label}: {forward}");

        env.emulator
            .faults()
            .fail_token_posts(0, 200, FaultBody::Empty);
        echo_roundtrip(local(port), &payload(64 * 1024, u64::from(status)))
            .await
            .map_err(|e| anyhow::anyhow!("no recovery after {label}: {e:#}"))?;
    }
    env.emulator
        .wait_for("no session left", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    Ok(())
}

#[tokio::test]
async fn dropped_websocket_ends_that_connection_only() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "dropper"]).await?;

    for mode in [DropMode::Abrupt, DropMode::CloseFrame] {
        env.emulator
            .faults()
            .drop_websockets_after(Some(256 * 1024), mode);
        expect_cut(local(port), &payload(8 * MIB, 3)).await?;
        env.emulator.faults().drop_websockets_after(None, mode);
        echo_roundtrip(local(port), &payload(MIB, 4))
            .await
            .map_err(|e| anyhow::anyhow!("forward dead after a {mode:?} drop: {e:#}"))?;
    }

    // A live, idle connection whose tunnel is dropped now.
    let mut stream = TcpStream::connect(local(port)).await?;
    stream.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await?;
    env.emulator
        .wait_for(
            "the tunnel to be open",
            |l| l.open_websockets >= 1,
            STEP_TIMEOUT,
        )
        .await?;
    env.emulator.faults().drop_all_websockets(DropMode::Abrupt);
    let ended = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await;
    assert!(
        matches!(ended, Ok(Ok(0) | Err(_))),
        "the client connection outlived its tunnel: {ended:?}"
    );
    echo_roundtrip(local(port), &payload(MIB, 5)).await?;

    let forward = env.forward("dropper").await?;
    assert_eq!(forward["state"], "listening", "{forward}");
    env.emulator
        .wait_for("no session left", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    Ok(())
}

#[tokio::test]
async fn no_sessions_left_after_close_and_after_sigterm() -> Result {
    const OPEN_AT_SHUTDOWN: u64 = 3;
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "echo"]).await?;
    for seed in 0..5 {
        echo_roundtrip(local(port), &payload(16 * 1024, seed)).await?;
    }
    env.emulator
        .wait_for(
            "sessions deleted after their connections closed",
            |l| l.sessions_created == 5 && l.live_sessions == 0 && l.deletes >= 5,
            STEP_TIMEOUT,
        )
        .await?;

    let mut streams = Vec::new();
    for _ in 0..OPEN_AT_SHUTDOWN {
        let mut stream = TcpStream::connect(local(port)).await?;
        stream.write_all(b"up").await?;
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await?;
        streams.push(stream);
    }
    env.emulator
        .wait_for(
            "open tunnels",
            |l| l.live_sessions == OPEN_AT_SHUTDOWN,
            STEP_TIMEOUT,
        )
        .await?;

    let status = daemon.stop().await?;
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        daemon.logs()
    );
    let ledger = env.wait_all_ended("sessions deleted at shutdown").await?;
    assert!(unexpected_rejects(&ledger).is_empty(), "{ledger:?}");
    assert!(
        daemon
            .notifications()
            .iter()
            .any(|m| m.contains("STOPPING=1")),
        "{:?}",
        daemon.notifications()
    );
    for mut stream in streams {
        let mut buf = [0u8; 1];
        let ended = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await;
        assert!(matches!(ended, Ok(Ok(0) | Err(_))), "{ended:?}");
    }
    Ok(())
}

/// A forward removed (or a daemon stopped) while the Bastion is still answering
/// a token POST: the session exists on the Bastion, and only the daemon can
/// learn its token to delete it.
#[tokio::test]
async fn no_session_left_when_a_request_is_cut_short() -> Result {
    const SLOW_ANSWER: Duration = Duration::from_secs(2);
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "slow"]).await?;
    env.emulator.faults().set_reply_delay(SLOW_ANSWER);

    // The forward's own connection: removed while its POST is unanswered.
    let _removed = TcpStream::connect(local(port)).await?;
    env.emulator
        .wait_for(
            "a session created, its answer held back",
            |l| l.sessions_created == 1,
            STEP_TIMEOUT,
        )
        .await?;
    env.ctl_ok(&["forward", "remove", "slow"]).await?;
    env.emulator
        .wait_for(
            "the session of the removed forward deleted",
            |l| l.live_sessions == 0 && l.deletes == 1,
            STEP_TIMEOUT,
        )
        .await?;

    // The same at shutdown.
    let port = env.add_forward(ECHO, &["--name", "slow2"]).await?;
    let _stopped = TcpStream::connect(local(port)).await?;
    env.emulator
        .wait_for(
            "a second session created",
            |l| l.sessions_created == 2,
            STEP_TIMEOUT,
        )
        .await?;
    let status = daemon.stop().await?;
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        daemon.logs()
    );
    env.emulator
        .wait_for(
            "the session cut short by shutdown deleted",
            |l| l.live_sessions == 0 && l.deletes == 2,
            STEP_TIMEOUT,
        )
        .await?;
    Ok(())
}

/// Runs of at least this many hex digits look like the Bastion's authToken
/// (64) or websocketToken (48); nothing legitimate in a log is that long.
const SECRET_HEX_RUN: usize = 40;

fn longest_hex_run(text: &str) -> (usize, String) {
    let mut best = (0, String::new());
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            current.push(c);
        } else {
            if current.len() > best.0 {
                best = (current.len(), current.clone());
            }
            current.clear();
        }
    }
    best
}

#[tokio::test]
async fn logs_carry_no_token_text() -> Result {
    let env = TestEnv::start_with(|cfg| cfg.token_lifetime = Duration::from_secs(4)).await?;
    let mut daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "echo"]).await?;
    // Sessions, a refresh of the Entra token, and an error answer.
    echo_roundtrip(local(port), &payload(64 * 1024, 1)).await?;
    let faults = env.emulator.faults();
    faults.fail_token_posts(
        FAULT_REPEATS,
        401,
        FaultBody::Json("Token validation failed".into()),
    );
    expect_cut(local(port), b"x").await?;
    faults.fail_token_posts(0, 200, FaultBody::Empty);
    let refreshed_after = env.emulator.ledger().az_calls;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while env.emulator.ledger().az_calls == refreshed_after && Instant::now() < deadline {
        echo_roundtrip(local(port), &payload(4096, 2)).await?;
        // Pacing while a 4 s token ages; the loop's exit is the ledger's count.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.ctl_ok(&["status"]).await?;
    daemon.stop().await?;

    let logs = env.all_logs();
    assert!(
        logs.lines().count() > 5,
        "too few log lines to judge:\n{logs}"
    );
    assert!(!logs.contains("eyJ"), "a JWT-looking token is in the logs");
    let (len, run) = longest_hex_run(&logs);
    assert!(
        len < SECRET_HEX_RUN,
        "a token-looking hex string ({len} digits) is in the logs: {run}"
    );
    assert!(!logs.contains(&env.emulator.info().client_secret));
    Ok(())
}

#[tokio::test]
async fn bastion_settings_that_forbid_tunnels_are_explained() -> Result {
    let env = TestEnv::start_with(|cfg| {
        cfg.bastions = vec![
            BastionSpec::standard("hub"),
            BastionSpec::standard("notunnel").with(|b| b.enable_tunneling = false),
            BastionSpec::standard("noip").with(|b| b.enable_ip_connect = false),
            BastionSpec::standard("basic").with(|b| b.sku = "Basic".into()),
            BastionSpec::standard("dev").with(|b| b.sku = "Developer".into()),
        ];
    })
    .await?;
    let _daemon = Daemon::start(&env).await?;
    for (bastion, expected) in [
        ("notunnel", "Native client support"),
        ("noip", "IP-based connection"),
        ("basic", "Standard or Premium"),
        ("dev", "Developer"),
    ] {
        let reason = env
            .ctl(&["connect", "--bastion", bastion, ECHO])
            .await?
            .one_line_error()?;
        assert!(reason.contains(expected), "{bastion}: {reason}");
    }

    // A forward through such a bastion still listens, and says why it fails.
    let port = env
        .add_forward(ECHO, &["--name", "blocked", "--bastion", "notunnel"])
        .await?;
    assert_eq!(expect_cut(local(port), b"x").await?, 0);
    env.wait_for_forward("blocked", "the reason in last_error", STEP_TIMEOUT, |f| {
        f["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Native client support"))
    })
    .await?;
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.sessions_created, 0, "{ledger:?}");
    Ok(())
}

#[tokio::test]
async fn handshake_quirks_and_stalled_tunnels() -> Result {
    // Keepalive in seconds, not the default half minute, so a stall shows fast.
    const KEEPALIVE: &str = "\n[tunnel]\nkeepalive_interval_secs = 1\nkeepalive_timeout_secs = 1\n";
    let env = TestEnv::start().await?;
    let mut config = std::fs::read_to_string(env.config_file())?;
    config.push_str(KEEPALIVE);
    std::fs::write(env.config_file(), config)?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "quirky"]).await?;
    let faults = env.emulator.faults();

    // A 101 without Upgrade/Connection headers: the tunnel works anyway.
    faults.set_handshake_quirk(Some(HandshakeQuirk::NoUpgradeHeaders));
    echo_roundtrip(local(port), &payload(256 * 1024, 1)).await?;

    // HTTP text after the 101: that connection fails, with a reason.
    faults.set_handshake_quirk(Some(HandshakeQuirk::HttpTextAfter101));
    expect_cut(local(port), &payload(64 * 1024, 2)).await?;
    env.wait_for_forward("quirky", "a last_error", STEP_TIMEOUT, |f| {
        f["last_error"].as_str().is_some_and(|e| !e.is_empty())
    })
    .await?;

    // Silence after the upgrade: the keepalive ends that connection.
    faults.set_handshake_quirk(Some(HandshakeQuirk::StallAfterUpgrade));
    expect_cut(local(port), b"anyone there?").await?;
    faults.set_handshake_quirk(None);

    // A live tunnel that stalls mid-stream is closed by the keepalive too.
    let mut stream = TcpStream::connect(local(port)).await?;
    stream.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await?;
    faults.stall_websockets(true);
    let ended = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await;
    faults.stall_websockets(false);
    assert!(
        matches!(ended, Ok(Ok(0) | Err(_))),
        "stalled tunnel kept: {ended:?}"
    );

    echo_roundtrip(local(port), &payload(256 * 1024, 3)).await?;
    assert_eq!(env.forward("quirky").await?["state"], "listening");
    Ok(())
}

//! The real Bastion's reported faults, survived: intermittent upgrade
//! failures retried unseen, a portal fix picked up without a reload, slow
//! targets that are not dead, a session budget, frames the backend refuses.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bastion_tests::emulator::HandshakeQuirk;
use bastion_tests::harness::net::{echo_roundtrip, expect_cut, local, payload, sha256_hex};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

type Result = anyhow::Result<()>;

const ECHO: &str = "10.1.0.4:7";
/// A VNet address the tests map to servers of their own.
const MAPPED: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 20));

#[tokio::test]
async fn every_third_upgrade_failing_goes_unseen() -> Result {
    const CONNECTIONS: u64 = 30;
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "flaky"]).await?;
    // The backend answers every third upgrade with a Tomcat 400 page after
    // the 101; clients speak first, so their bytes are already on the way.
    env.emulator
        .faults()
        .set_handshake_quirk_every(Some(HandshakeQuirk::HttpTextAfter101), 3);
    for i in 0..CONNECTIONS {
        echo_roundtrip(local(port), &payload(4096, i)).await?;
    }
    env.wait_no_live_sessions().await?;
    let forward = env.forward("flaky").await?;
    let retries = forward["setup_retries"].as_u64().unwrap_or_default();
    assert!(retries >= CONNECTIONS / 3, "{forward}");
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["setup_retries"].as_u64(), Some(retries), "{status}");
    assert_eq!(forward["last_error"], serde_json::Value::Null, "{forward}");
    Ok(())
}

#[tokio::test]
async fn a_stalled_upgrade_is_replaced_for_a_server_first_target() -> Result {
    // Like sshd: the target speaks first, so a client waits in silence and a
    // stalled tunnel would leave it waiting for the keepalive (45 s).
    let env = TestEnv::start().await?;
    let banner = env.mapped_server(MAPPED, 22).await?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = banner.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(b"SSH-2.0-test\r\n").await;
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let _daemon = Daemon::start(&env).await?;
    let port = env
        .add_forward(&format!("{MAPPED}:22"), &["--name", "ssh"])
        .await?;
    env.emulator
        .faults()
        .set_handshake_quirk_every(Some(HandshakeQuirk::StallAfterUpgrade), 2);
    for _ in 0..2 {
        let stream = TcpStream::connect(local(port)).await?;
        let mut line = String::new();
        tokio::time::timeout(STEP_TIMEOUT, BufReader::new(stream).read_line(&mut line)).await??;
        assert_eq!(line, "SSH-2.0-test\r\n");
    }
    let forward = env.forward("ssh").await?;
    assert!(forward["setup_retries"].as_u64() >= Some(1), "{forward}");
    Ok(())
}

#[tokio::test]
async fn a_fixed_portal_setting_is_seen_without_reload() -> Result {
    let env = TestEnv::start().await?;
    env.emulator
        .faults()
        .set_bastion("hub", |b| b.enable_ip_connect = false);
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "fixme"]).await?;
    assert_eq!(expect_cut(local(port), b"x").await?, 0);
    let forward = env.forward("fixme").await?;
    assert!(
        forward["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("IP-based connection")),
        "{forward}"
    );
    // The user turns "IP-based connection" on in the portal: the very next
    // connection works, with no reload and no restart.
    env.emulator
        .faults()
        .set_bastion("hub", |b| b.enable_ip_connect = true);
    echo_roundtrip(local(port), b"fixed").await?;
    Ok(())
}

#[tokio::test]
async fn an_upload_to_a_target_that_pauses_survives_the_keepalive() -> Result {
    // Big enough to fill every buffer between us and the paused target, so
    // the daemon's writes wait for the whole pause.
    const UPLOAD: usize = 16 << 20;
    const PAUSE: Duration = Duration::from_secs(4);
    let env = TestEnv::start().await?;
    env.add_settings("\n[tunnel]\nkeepalive_interval_secs = 1\nkeepalive_timeout_secs = 1\n")?;
    // A sink that reads the first 64 KiB, stops reading for PAUSE, then
    // reads the rest and answers with its SHA-256.
    let sink = env.mapped_server(MAPPED, 9000).await?;
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = sink.accept().await {
            let mut data = vec![0u8; UPLOAD];
            let (head, tail) = data.split_at_mut(64 * 1024);
            if stream.read_exact(head).await.is_ok() {
                tokio::time::sleep(PAUSE).await;
                if stream.read_exact(tail).await.is_ok() {
                    let _ = stream.write_all(sha256_hex(&data).as_bytes()).await;
                }
            }
        }
    });
    let _daemon = Daemon::start(&env).await?;
    let port = env
        .add_forward(&format!("{MAPPED}:9000"), &["--name", "upload"])
        .await?;
    let data = payload(UPLOAD, 7);
    let stream = TcpStream::connect(local(port)).await?;
    let (mut reader, mut writer) = stream.into_split();
    let upload = async { writer.write_all(&data).await };
    let answer = async {
        let mut answer = vec![0u8; 64];
        reader.read_exact(&mut answer).await.map(|_| answer)
    };
    let (sent, answer) =
        tokio::time::timeout(STEP_TIMEOUT, async { tokio::join!(upload, answer) }).await?;
    sent?;
    assert_eq!(String::from_utf8(answer?)?, sha256_hex(&data));
    Ok(())
}

#[tokio::test]
async fn max_sessions_caps_live_sessions_and_everyone_gets_through() -> Result {
    const CONNECTIONS: u64 = 32;
    const MAX_SESSIONS: u64 = 8;
    let env = TestEnv::start().await?;
    env.set_bastion_settings("hub", &format!("max_sessions = {MAX_SESSIONS}"))?;
    env.add_settings("\n[tunnel]\neof_linger_secs = 1\n")?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "busy"]).await?;
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            tokio::spawn(async move { echo_roundtrip(local(port), &payload(64 * 1024, i)).await })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    env.wait_no_live_sessions().await?;
    let ledger = env.emulator.ledger();
    assert!(ledger.sessions_created >= CONNECTIONS, "{ledger:?}");
    assert!(
        ledger.peak_live_sessions <= MAX_SESSIONS,
        "{} sessions were live at once: {ledger:?}",
        ledger.peak_live_sessions
    );
    Ok(())
}

#[tokio::test]
async fn a_frame_too_big_for_the_backend_names_the_setting() -> Result {
    let env = TestEnv::start().await?;
    env.emulator.faults().set_max_frame(Some(8 * 1024));
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "frames"]).await?;
    expect_cut(local(port), &payload(256 * 1024, 1)).await?;
    env.wait_for_forward("frames", "the 1009 explained", STEP_TIMEOUT, |f| {
        f["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_frame_bytes"))
    })
    .await?;
    // The fix the message names works, through a reload.
    env.add_settings("\n[tunnel]\nmax_frame_bytes = 4096\n")?;
    env.ctl_ok(&["reload"]).await?;
    echo_roundtrip(local(port), &payload(256 * 1024, 2)).await?;
    Ok(())
}

#[tokio::test]
async fn keepalive_can_be_turned_off() -> Result {
    let env = TestEnv::start().await?;
    env.add_settings("\n[tunnel]\nkeepalive_interval_secs = 0\n")?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "nopings"]).await?;
    echo_roundtrip(local(port), b"no pings").await?;
    Ok(())
}

#[tokio::test]
async fn an_arm_401_gets_one_fresh_token() -> Result {
    let env = TestEnv::start().await?;
    // The first token the daemon gets is refused by ARM (revoked, or from a
    // clock that jumped): the start-up lookup asks for a fresh one and retries.
    env.emulator.faults().fail_arm_auth(1);
    let _daemon = Daemon::start(&env).await?;
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        status = env.ctl_json(&["status", "--json"]).await?;
        if status["bastions"][0]["endpoint"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
        {
            break;
        }
        env.emulator
            .wait_for("another ARM call", |l| l.arm_calls >= 2, STEP_TIMEOUT)
            .await?;
    }
    assert!(
        status["bastions"][0]["endpoint"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the bastion was not looked up again with a fresh token: {status}"
    );
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.rejected("injected_arm_401"), 1, "{ledger:?}");
    assert!(
        ledger.az_calls >= 2,
        "no fresh token was asked for: {ledger:?}"
    );
    Ok(())
}

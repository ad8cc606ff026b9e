//! A slow tunnel told from a dead one: a target that stops reading keeps its
//! upload, a network path that goes silent (no FIN, no RST) ends its
//! tunnels within the keepalive bound while new connections go through at
//! once, and no Bastion session is left behind; after a resume or a network
//! change, the first connection does not wait on a connection gone stale.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bastion_tests::harness::net::{echo_roundtrip, local, payload, sha256_hex};
use bastion_tests::harness::silence::{Silence, enter_private_network};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

type Result = anyhow::Result<()>;

const ECHO: &str = "10.1.0.4:7";
/// A target of the test's own in the VNet.
const SLOW_TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 21));
const SLOW_PORT: u16 = 9000;
const MIB: usize = 1024 * 1024;
/// Keepalive in seconds, so a verdict shows within a test.
const KEEPALIVE: &str = "\n[tunnel]\nkeepalive_interval_secs = 1\nkeepalive_timeout_secs = 1\n";
/// `keepalive_interval_secs + keepalive_timeout_secs` above.
const KEEPALIVE_BOUND: Duration = Duration::from_secs(2);
/// What the issue allows beyond the keepalive bound for a dead tunnel's end.
const VERDICT_MARGIN: Duration = Duration::from_secs(2);
/// A connection made right after the path changed must echo within this.
const FRESH_CONNECTION_BOUND: Duration = Duration::from_secs(3);
/// How the client of the silenced connection writes: 100 bytes every 200 ms.
/// Below the daemon's 2 s bound on a warm connection's answer: a first
/// connection after a resume or network change that took this long waited on
/// a stale warm connection.
const STALE_WAIT: Duration = Duration::from_millis(1500);
const TICK: Duration = Duration::from_millis(200);
const TICK_BYTES: usize = 100;

fn add_settings(env: &TestEnv, extra: &str) -> Result {
    let mut config = std::fs::read_to_string(env.config_file())?;
    config.push_str(extra);
    std::fs::write(env.config_file(), config)?;
    Ok(())
}

/// A target that reads `first` bytes, stops reading for `pause` (a slow
/// disk, a busy database), reads the rest of `total`, then answers with the
/// SHA-256 (hex) of all it read.
async fn pausing_target(listener: TcpListener, first: usize, pause: Duration, total: usize) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut data = vec![0u8; total];
            stream.read_exact(&mut data[..first]).await?;
            // The pause is the behaviour under test, not a wait for something.
            tokio::time::sleep(pause).await;
            stream.read_exact(&mut data[first..]).await?;
            stream.write_all(sha256_hex(&data).as_bytes()).await?;
            anyhow::Ok(())
        });
    }
}

#[tokio::test]
async fn uploads_to_a_target_that_stops_reading_complete() -> Result {
    const PAUSE: Duration = Duration::from_secs(4);
    const FIRST: usize = 64 * 1024;
    let env = TestEnv::start().await?;
    add_settings(&env, KEEPALIVE)?;
    let _daemon = Daemon::start(&env).await?;
    for (seed, size) in [MIB, 4 * MIB, 16 * MIB].into_iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        env.emulator
            .map_target(SLOW_TARGET, SLOW_PORT, listener.local_addr()?);
        let target = tokio::spawn(pausing_target(listener, FIRST, PAUSE, size));
        let name = format!("slow{seed}");
        let port = env
            .add_forward(
                &format!("{SLOW_TARGET}:{SLOW_PORT}"),
                &["--name", name.as_str()],
            )
            .await?;
        let data = payload(size, seed as u64);
        let answer = within(
            &format!("an upload of {} MiB", size / MIB),
            STEP_TIMEOUT,
            async {
                let mut stream = TcpStream::connect(local(port)).await?;
                stream.write_all(&data).await?;
                let mut answer = vec![0u8; 64];
                stream.read_exact(&mut answer).await?;
                Ok(String::from_utf8(answer)?)
            },
        )
        .await?;
        assert_eq!(answer, sha256_hex(&data), "upload of {} MiB", size / MIB);
        target.abort();
        env.ctl_ok(&["forward", "remove", name.as_str()]).await?;
    }
    Ok(())
}

/// Runs `test` in a network namespace of its own (see `harness::silence`).
fn in_private_network(test: impl std::future::Future<Output = Result>) -> Result {
    enter_private_network()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(test)
}

/// The port of the emulator's one endpoint (Entra, ARM and the Bastion).
fn emulator_port(env: &TestEnv) -> anyhow::Result<u16> {
    env.emulator
        .info()
        .endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no port in the emulator's endpoint"))
}

/// Writes 100 bytes every 200 ms to `addr` (an echo) and reads the echo,
/// until the connection ends; returns when it ended. `silenced` is called
/// once the echo has been seen working.
async fn write_until_cut(
    addr: SocketAddr,
    silenced: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Instant> {
    let stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let mut echoed = 0usize;
    let mut buf = vec![0u8; 4096];
    // The echo works before the change.
    writer.write_all(&[7u8; TICK_BYTES]).await?;
    while echoed < TICK_BYTES {
        match reader.read(&mut buf).await? {
            0 => anyhow::bail!("closed before the change"),
            n => echoed += n,
        }
    }
    let _ = silenced.send(());
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if writer.write_all(&[7u8; TICK_BYTES]).await.is_err() {
                    return Ok(Instant::now());
                }
            }
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(Instant::now()),
                Ok(_) => {}
            },
        }
    }
}

/// Needs root: it runs in a network namespace of its own.
#[test]
fn a_silent_path_ends_its_tunnels_and_new_connections_go_through() -> Result {
    in_private_network(silent_path())
}

/// A daemon with 1 s keepalive and a forward `name` to the echo, used once:
/// warm connections and pooled ones exist, as on a laptop in use.
async fn laptop_in_use(name: &str) -> anyhow::Result<(TestEnv, Daemon, u16)> {
    let env = TestEnv::start().await?;
    add_settings(&env, KEEPALIVE)?;
    let daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", name]).await?;
    echo_roundtrip(local(port), b"warm up").await?;
    Ok((env, daemon, port))
}

async fn silent_path() -> Result {
    let (env, _daemon, port) = laptop_in_use("laptop").await?;
    let emulator_port = emulator_port(&env)?;

    let (ready, echoing) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn(write_until_cut(local(port), ready));
    within("the echo before the change", STEP_TIMEOUT, async {
        Ok(echoing.await?)
    })
    .await?;
    let silence = Silence::existing(emulator_port).await?;
    let changed = Instant::now();
    eprintln!("silenced {} connections", silence.connections);

    // A new connection right after the change does not wait on a silent one.
    echo_roundtrip(local(port), &payload(1000, 1))
        .await
        .map(|()| changed.elapsed())
        .and_then(|took| {
            eprintln!("a new connection echoed {took:?} after the change");
            anyhow::ensure!(
                took < FRESH_CONNECTION_BOUND,
                "a connection made right after the change took {took:?}"
            );
            Ok(())
        })?;

    let ended = within("the silenced connection's end", STEP_TIMEOUT, async {
        writer.await?
    })
    .await?;
    let took = ended - changed;
    eprintln!("the silenced connection ended {took:?} after the change");
    assert!(
        took <= KEEPALIVE_BOUND + VERDICT_MARGIN,
        "the silenced connection lived {took:?} (bound {:?})",
        KEEPALIVE_BOUND + VERDICT_MARGIN
    );
    let forward = env.forward("laptop").await?;
    assert_eq!(forward["state"], "listening", "{forward}");

    silence.lift().await?;
    env.emulator
        .wait_for("no session left", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    echo_roundtrip(local(port), b"after").await?;
    Ok(())
}

/// libfaketime, which moves the daemon's wall clock (not its monotonic
/// one) as a resume from suspend does (`apt-get install faketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How far the wall clock jumps: longer than a token's life.
const ASLEEP: &str = "+2h";

/// Needs root: it runs in a network namespace of its own.
#[test]
fn after_a_resume_connections_do_not_wait_on_stale_ones() -> Result {
    in_private_network(resume())
}

async fn resume() -> Result {
    anyhow::ensure!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing (apt-get install faketime)"
    );
    let env = TestEnv::start().await?;
    add_settings(&env, KEEPALIVE)?;
    let clock = env.root().join("faketime");
    std::fs::write(&clock, "+0")?;
    let clock_file = clock.display().to_string();
    let daemon = Daemon::start_with(
        &env,
        &[],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", clock_file.as_str()),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await?;
    let port = env.add_forward(ECHO, &["--name", "lid"]).await?;
    echo_roundtrip(local(port), b"before the lid closes").await?;
    let tokens_before = env.emulator.ledger();

    // The lid closes: every connection goes silent, the wall clock jumps.
    let emulator_port = emulator_port(&env)?;
    let silence = Silence::existing(emulator_port).await?;
    std::fs::write(&clock, ASLEEP)?;
    within("the daemon to notice the resume", STEP_TIMEOUT, async {
        loop {
            let status = env.ctl_json(&["status", "--json"]).await?;
            if status["resumes_seen"].as_u64() >= Some(1) {
                return Ok(());
            }
            tokio::time::sleep(bastion_tests::harness::POLL_INTERVAL).await;
        }
    })
    .await?;

    let started = Instant::now();
    echo_roundtrip(local(port), &payload(1000, 2)).await?;
    let took = started.elapsed();
    eprintln!("the first connection after the resume took {took:?}");
    assert!(
        took < STALE_WAIT,
        "the first connection after the resume took {took:?}: it waited on a stale connection"
    );
    let ledger = env.emulator.ledger();
    assert!(
        ledger.az_calls + ledger.entra_tokens > tokens_before.az_calls + tokens_before.entra_tokens,
        "no fresh token after the resume: {ledger:?}"
    );
    assert!(
        daemon.logs().contains("resumed after"),
        "no log line about the resume"
    );
    silence.lift().await?;
    Ok(())
}

/// Needs root: it runs in a network namespace of its own, whose loopback
/// gains an address (a kernel address event, as when Wi-Fi or a VPN comes up).
#[test]
fn after_a_network_change_connections_do_not_wait_on_stale_ones() -> Result {
    in_private_network(network_change())
}

async fn network_change() -> Result {
    let (env, daemon, port) = laptop_in_use("wifi").await?;

    // The old network's connections go silent; the new one has an address.
    let silence = Silence::existing(emulator_port(&env)?).await?;
    let added = tokio::process::Command::new("ip")
        .args(["address", "add", "127.0.0.2/8", "dev", "lo"])
        .status()
        .await?;
    anyhow::ensure!(added.success(), "`ip address add` failed: {added}");
    within("the daemon to act on the change", STEP_TIMEOUT, async {
        while !daemon.logs().contains("network changed: dropped") {
            tokio::time::sleep(bastion_tests::harness::POLL_INTERVAL).await;
        }
        Ok(())
    })
    .await?;
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert!(
        status["network_changes_seen"].as_u64() >= Some(1),
        "{status}"
    );

    // Without the change seen, this lands on a silent warm connection and
    // waits out its 2 s bound before dialling afresh.
    let started = Instant::now();
    echo_roundtrip(local(port), &payload(1000, 3)).await?;
    let took = started.elapsed();
    eprintln!("the first connection after the network change took {took:?}");
    assert!(
        took < STALE_WAIT,
        "the first connection after the change took {took:?}: it waited on a stale connection"
    );
    silence.lift().await?;
    env.wait_no_live_sessions().await?;
    Ok(())
}

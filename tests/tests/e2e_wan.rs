//! The daemon across a WAN: the harness's emulator a round trip away
//! (`TestEnv::start_with_latency`), as every user's Bastion is. Connections
//! through a forward still carry their bytes, and cost round trips no
//! client can avoid: proof that the daemon, bastionctl and the fake az all
//! reach the emulator through the delay line.

use std::time::{Duration, Instant};

use bastion_tests::harness::net::{echo_roundtrip, local};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Result = anyhow::Result<()>;

/// Long enough to stand out from a debug daemon's own work on two busy cores.
const RTT: Duration = Duration::from_millis(100);
/// The least any client pays for a connection: its token POST (one round
/// trip), then the WebSocket upgrade with the first byte right behind it
/// and the echo back (one more).
const FLOOR_RTTS: u32 = 2;

#[tokio::test]
async fn a_forward_across_a_wan_pays_round_trips() -> Result {
    let env = TestEnv::start_with_latency(RTT).await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward("10.1.0.4:7", &["--name", "wan"]).await?;
    // The first connection also fetches the daemon's token and looks the
    // bastion up: not timed.
    echo_roundtrip(local(port), b"warm-up").await?;
    for _ in 0..2 {
        let start = Instant::now();
        echo_roundtrip(local(port), b"across the WAN").await?;
        let took = start.elapsed();
        assert!(
            took >= RTT * FLOOR_RTTS,
            "a connection through a forward took {took:?}, less than {FLOOR_RTTS} round trips of {RTT:?}"
        );
    }
    Ok(())
}

/// The round trips no setup can avoid once the TCP and TLS handshakes are
/// paid ahead: token POST, WebSocket upgrade, first byte there and back.
const SETUP_RTTS: f64 = 3.0;
/// Slack for a debug daemon and bastionctl on two busy cores: half a round
/// trip. Paying one handshake on the way (TCP or TLS) would be a whole one.
const SLACK_RTTS: f64 = 0.5;
/// Timed connections per path; the median is checked.
const TIMED: usize = 5;

fn median(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() / 2]
}

fn assert_three_round_trips(path: &str, took: Vec<Duration>) {
    let limit = RTT.mul_f64(SETUP_RTTS + SLACK_RTTS);
    let median = median(took.clone());
    assert!(
        median < limit,
        "{path}: median setup {median:?} ({:.2} round trips of {RTT:?}), over {limit:?}; all: {took:?}",
        median.as_secs_f64() / RTT.as_secs_f64()
    );
}

/// A byte through `bastionctl connect`, from its start to the echo.
async fn connect_once(env: &TestEnv) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = env
        .ctl_command(&["connect", "10.1.0.4:7"])?
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        anyhow::bail!("bastionctl connect without pipes");
    };
    stdin.write_all(b"x").await?;
    let mut echoed = [0u8; 1];
    within("the echo through bastionctl connect", STEP_TIMEOUT, async {
        Ok(stdout.read_exact(&mut echoed).await?)
    })
    .await?;
    let took = start.elapsed();
    drop(stdin);
    within("bastionctl connect to exit", STEP_TIMEOUT, async {
        Ok(child.wait().await?)
    })
    .await?;
    Ok(took)
}

#[tokio::test]
async fn setup_takes_three_round_trips_through_a_forward_and_connect() -> Result {
    let env = TestEnv::start_with_latency(RTT).await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward("10.1.0.4:7", &["--name", "wan"]).await?;
    echo_roundtrip(local(port), b"warm-up").await?;
    let mut forward = Vec::new();
    let mut connect = Vec::new();
    for _ in 0..TIMED {
        let start = Instant::now();
        echo_roundtrip(local(port), b"x").await?;
        forward.push(start.elapsed());
        connect.push(connect_once(&env).await?);
    }
    assert_three_round_trips("forward", forward);
    assert_three_round_trips("bastionctl connect", connect);
    // Warm connections are not sessions: one session per connection, all gone.
    env.emulator
        .wait_for("no live sessions", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    let made = 1 + 2 * TIMED as u64;
    assert_eq!(env.emulator.ledger().sessions_created, made);
    Ok(())
}

#[tokio::test]
async fn spares_the_bastion_closed_cost_no_retry() -> Result {
    // The Bastion closes connections that sent no request within 200 ms;
    // ours keep spares up to 15 s, so every spare is found closed.
    let env = TestEnv::start_with_latency(RTT).await?;
    env.emulator
        .faults()
        .close_idle_after(Some(Duration::from_millis(200)));
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward("10.1.0.4:7", &["--name", "idle"]).await?;
    for _ in 0..3 {
        echo_roundtrip(local(port), b"after the spares were closed").await?;
        // Past the Bastion's idle timeout: the spares made meanwhile are gone.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let forward = env.forward("idle").await?;
    assert_eq!(forward["setup_retries"].as_u64(), Some(0), "{forward}");
    assert_eq!(forward["last_error"], serde_json::Value::Null, "{forward}");
    assert_eq!(env.emulator.ledger().sessions_created, 3);
    Ok(())
}

//! The daemon across a WAN: the harness's emulator a round trip away
//! (`TestEnv::start_with_latency`), as every user's Bastion is. Connections
//! through a forward still carry their bytes, and cost round trips no
//! client can avoid: proof that the daemon, bastionctl and the fake az all
//! reach the emulator through the delay line.

use std::time::{Duration, Instant};

use bastion_tests::harness::net::{echo_roundtrip, local};
use bastion_tests::harness::{Daemon, TestEnv};

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

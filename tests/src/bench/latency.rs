//! Latency: connection setup (TCP connect → first echoed byte, over many
//! sequential connections) and 64-byte round trips on one connection, both
//! against the echo service.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::within;

/// The small message of the round-trip figure (a keystroke or an RPC).
pub const MESSAGE: usize = 64;
/// Round trips before timing starts: the first ones pay for buffers and caches.
const RTT_WARMUP: usize = 20;
/// Bound for any one connection or round trip: setup through a Bastion takes
/// milliseconds, so this only catches a stuck path.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to an echo at `addr` and gets one byte echoed: a usable tunnel.
pub async fn open(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    within("connection setup", STEP_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        first_echo(&mut stream).await?;
        Ok(stream)
    })
    .await
}

/// One byte to the echo service and back: the end of a timed setup.
pub async fn first_echo(stream: &mut TcpStream) -> anyhow::Result<()> {
    stream.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.context("no echo")?;
    ensure!(&byte == b"x", "echoed {byte:?}, not the byte sent");
    Ok(())
}

/// `n` sequential setups, each timed from connect to the first echoed byte.
pub async fn setup_samples(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let stream = open(addr).await?;
        samples.push(start.elapsed());
        drop(stream);
    }
    Ok(samples)
}

/// `n` timed round trips of [`MESSAGE`] bytes on one connection to an echo.
pub async fn rtt_samples(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut stream = open(addr).await?;
    let mut samples = Vec::with_capacity(n);
    let mut message = [0u8; MESSAGE];
    let mut echoed = [0u8; MESSAGE];
    for i in 0..RTT_WARMUP + n {
        message.fill(i as u8);
        let start = Instant::now();
        within("a round trip", STEP_TIMEOUT, async {
            stream.write_all(&message).await?;
            stream.read_exact(&mut echoed).await.context("echo ended")?;
            Ok(())
        })
        .await?;
        let took = start.elapsed();
        ensure!(echoed == message, "round trip {i} echoed other bytes");
        if i >= RTT_WARMUP {
            samples.push(took);
        }
    }
    Ok(samples)
}

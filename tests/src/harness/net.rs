//! Byte helpers for the data path: payloads, echo round trips verified by
//! SHA-256, the source service's pattern. Every one is bounded in time.

use std::net::{SocketAddr, TcpListener};

use anyhow::{Context as _, ensure};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::emulator::source_byte;
use crate::harness::{STEP_TIMEOUT, within};

/// Writes go out in pieces this big, like a real client's socket writes.
const WRITE_CHUNK: usize = 16 * 1024;

/// A port nobody listens on right now, chosen by the OS.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `len` deterministic pseudo-random bytes (xorshift), distinct per `seed`,
/// so a swapped or shifted byte shows up in the checksum.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Sends `data` to an echo service at `addr` while reading the echo back
/// concurrently, and checks the SHA-256 of what came back.
pub async fn echo_roundtrip(addr: SocketAddr, data: &[u8]) -> anyhow::Result<()> {
    echo_roundtrip_within(addr, data, STEP_TIMEOUT).await
}

/// [`echo_roundtrip`] within `timeout`, for connections that queue for a
/// session behind others.
pub async fn echo_roundtrip_within(
    addr: SocketAddr,
    data: &[u8],
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    within(
        &format!("echo round trip of {} bytes via {addr}", data.len()),
        timeout,
        async {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            echo_over(stream, data).await
        },
    )
    .await
}

/// [`echo_roundtrip`] on a connection already made (through a SOCKS5
/// handshake, say); not bounded in time by itself.
pub async fn echo_over(stream: TcpStream, data: &[u8]) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        for chunk in data.chunks(WRITE_CHUNK) {
            writer.write_all(chunk).await.context("write failed")?;
        }
        anyhow::Ok(())
    };
    let read = async {
        let mut echoed = vec![0u8; data.len()];
        reader
            .read_exact(&mut echoed)
            .await
            .context("the echo ended early")?;
        anyhow::Ok(echoed)
    };
    let ((), echoed) = tokio::try_join!(write, read)?;
    ensure!(
        sha256_hex(&echoed) == sha256_hex(data),
        "echoed bytes differ from the bytes sent ({} bytes)",
        data.len()
    );
    Ok(())
}

/// Asks a source service at `addr` for `n` bytes, reads to EOF and checks
/// the pattern: proves the target's close reaches the client.
pub async fn source_read(addr: SocketAddr, n: u64) -> anyhow::Result<()> {
    within(
        &format!("{n} bytes from the source via {addr}"),
        STEP_TIMEOUT,
        async {
            let mut stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            stream.write_all(format!("{n}\n").as_bytes()).await?;
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.context("read failed")?;
            ensure!(got.len() as u64 == n, "got {} bytes, wanted {n}", got.len());
            let bad = (0..n).zip(&got).find(|&(i, &b)| source_byte(i) != b);
            ensure!(
                bad.is_none(),
                "pattern differs at byte {:?}",
                bad.map(|(i, _)| i)
            );
            Ok(())
        },
    )
    .await
}

/// Streams `data` to an echo service and reads until the connection ends
/// (EOF or error), expecting it to end before everything came back; returns
/// how many bytes were echoed. For tunnels dropped mid-stream.
pub async fn expect_cut(addr: SocketAddr, data: &[u8]) -> anyhow::Result<usize> {
    within(
        &format!("the connection via {addr} to be cut"),
        STEP_TIMEOUT,
        async {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            let (mut reader, mut writer) = stream.into_split();
            let write = async {
                for chunk in data.chunks(WRITE_CHUNK) {
                    if writer.write_all(chunk).await.is_err() {
                        break;
                    }
                }
            };
            let read = async {
                let mut echoed = 0usize;
                let mut buf = vec![0u8; WRITE_CHUNK];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    echoed += n;
                }
                echoed
            };
            // The read side decides; the writer may stall once the peer stops reading.
            tokio::pin!(read);
            let echoed = tokio::select! {
                echoed = &mut read => echoed,
                () = write => read.await,
            };
            ensure!(
                echoed < data.len(),
                "the connection was not cut: all {echoed} bytes came back"
            );
            Ok(echoed)
        },
    )
    .await
}

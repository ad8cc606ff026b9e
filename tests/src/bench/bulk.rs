//! Bulk throughput: upload to the sink, download from the source,
//! both ways through the echo. Every byte is checked (SHA-256 from the sink,
//! the pattern for the rest), and each transfer is timed from TCP connect to
//! the last verified byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::pattern::{self, CHUNK};
use crate::harness::within;

/// The sink's answer is "<N> <64 hex digits>\n".
const MAX_ANSWER: u64 = 128;
/// No transfer takes longer than this plus its size at this rate (a 100×
/// margin below anything seen): a stuck path fails instead of hanging.
const BASE_TIMEOUT: Duration = Duration::from_secs(30);
const SLOWEST_RATE: u64 = 4_000_000;

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_sec(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

fn timeout_for(bytes: u64) -> Duration {
    BASE_TIMEOUT + Duration::from_secs(bytes / SLOWEST_RATE)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes `bytes` pattern bytes in [`CHUNK`] pieces.
async fn send_pattern(writer: &mut (impl AsyncWrite + Unpin), bytes: u64) -> anyhow::Result<()> {
    let mut at = 0;
    while at < bytes {
        let piece = pattern::slice(at, (bytes - at).min(CHUNK as u64) as usize);
        writer.write_all(piece).await.context("write failed")?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Reads exactly `bytes` pattern bytes (or to EOF when `to_eof`), checking each.
async fn receive_pattern(
    reader: &mut (impl AsyncRead + Unpin),
    bytes: u64,
    to_eof: bool,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while to_eof || at < bytes {
        let want = if to_eof {
            CHUNK
        } else {
            (bytes - at).min(CHUNK as u64) as usize
        };
        let n = reader.read(&mut buf[..want]).await.context("read failed")?;
        if n == 0 {
            break;
        }
        ensure!(pattern::matches(at, &buf[..n]), "corrupt data at byte {at}");
        at += n as u64;
    }
    ensure!(at == bytes, "got {at} bytes, wanted {bytes}");
    Ok(())
}

/// Uploads `bytes` to a counting sink at `addr`; `sha256` is what it must report.
pub async fn upload(addr: SocketAddr, bytes: u64, sha256: &str) -> anyhow::Result<Duration> {
    within("bulk upload", timeout_for(bytes), async {
        let start = Instant::now();
        let mut stream = connect(addr).await?;
        stream.write_all(format!("{bytes}\n").as_bytes()).await?;
        send_pattern(&mut stream, bytes).await?;
        let mut answer = String::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_string(&mut answer)
            .await
            .context("reading the sink's answer")?;
        let took = start.elapsed();
        let expected = format!("{bytes} {sha256}");
        ensure!(
            answer.trim() == expected,
            "the sink saw {:?}, expected {expected:?}",
            answer.trim()
        );
        Ok(took)
    })
    .await
}

/// Downloads `bytes` from a source at `addr`, to its EOF.
pub async fn download(addr: SocketAddr, bytes: u64) -> anyhow::Result<Duration> {
    within("bulk download", timeout_for(bytes), async {
        let start = Instant::now();
        let mut stream = connect(addr).await?;
        stream.write_all(format!("{bytes}\n").as_bytes()).await?;
        receive_pattern(&mut stream, bytes, true).await?;
        Ok(start.elapsed())
    })
    .await
}

/// Sends `bytes` to an echo at `addr` while reading them back.
pub async fn both_ways(addr: SocketAddr, bytes: u64) -> anyhow::Result<Duration> {
    within("bulk both ways", timeout_for(bytes), async {
        let start = Instant::now();
        echo(connect(addr).await?, bytes).await?;
        Ok(start.elapsed())
    })
    .await
}

/// Echoes `bytes` through an open connection to an echo service, checked.
pub async fn echo(mut stream: TcpStream, bytes: u64) -> anyhow::Result<()> {
    let (mut reader, mut writer) = stream.split();
    tokio::try_join!(
        send_pattern(&mut writer, bytes),
        receive_pattern(&mut reader, bytes, false)
    )?;
    Ok(())
}

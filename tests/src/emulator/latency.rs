//! WAN mode: a TCP proxy that puts a round trip between its clients and a
//! listener on 127.0.0.1. The emulator advertises it instead of its own
//! listener when `EmulatorConfig::latency` is set; the bench puts one in
//! front of the echo target for direct TCP.
//!
//! Each direction is a delay line: a reader stamps every chunk it reads with
//! the instant it is due on the other side, a writer sends it then. Half a
//! round trip each way, and no byte before the TCP handshake would have let
//! it leave: a real client's `connect` returns one round trip after its SYN,
//! so its first bytes arrive one and a half round trips after it started; a
//! server's `accept` returns when the client's ACK arrives (one and a half),
//! so its first bytes arrive no earlier than two round trips. Order is kept
//! (due instants only grow), EOF is passed on after the data before it,
//! memory is bounded (a full line stops the reader, as a full TCP window
//! would), and an error on either side ends the connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::precise_sleep::sleep_until;

/// One read, one chunk on the line: a TLS record and a bit.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction: 4 MiB, which is what a 40 ms line needs
/// to carry 200 MB/s, and the most one connection holds in memory per way.
const LINE_CHUNKS: usize = 256;

/// Listens on 127.0.0.1 (OS-chosen port) and relays every connection to
/// `upstream` with `rtt` between them; runs until `cancel`, on `tracker`.
pub async fn latency_proxy(
    upstream: SocketAddr,
    rtt: Duration,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    spawn_latency_proxy(listener, upstream, rtt, tracker, cancel);
    Ok(addr)
}

/// As [`latency_proxy`], on a listener the caller bound.
pub(crate) fn spawn_latency_proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    rtt: Duration,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) {
    let (tasks, cancel) = (tracker.clone(), cancel.clone());
    tracker.spawn(async move {
        loop {
            let (client, peer) = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => { tracing::warn!(error = %e, "delay line: accept failed"); continue; }
                },
            };
            // Taken before anything else: the handshake is counted from here.
            let accepted = Instant::now();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    relayed = relay(client, accepted, upstream, rtt) => if let Err(e) = relayed {
                        tracing::debug!(%peer, error = %e, "delay line: connection ended with an error");
                    },
                }
            });
        }
    });
}

/// Both directions of one connection; the first error ends both.
async fn relay(
    client: TcpStream,
    accepted: Instant,
    upstream: SocketAddr,
    rtt: Duration,
) -> io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let half = rtt / 2;
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = server.into_split();
    tokio::try_join!(
        // The client may send once its connect() has returned.
        delay_line(from_client, to_server, half, accepted + rtt),
        // The server may send once its accept() has returned.
        delay_line(from_server, to_client, half, accepted + rtt + half),
    )?;
    Ok(())
}

/// One direction: what `from` sends leaves on `to` `delay` later, and never
/// before `earliest + delay`; `from`'s EOF becomes `to`'s after the data.
async fn delay_line(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    earliest: Instant,
) -> io::Result<()> {
    let (line, mut arriving) = mpsc::channel::<(Instant, Bytes)>(LINE_CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                // Dropping the line lets the writer drain it, then shut down.
                return Ok(());
            }
            let due = Instant::now().max(earliest) + delay;
            if line
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                // The writer has stopped; its error is the one reported.
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = arriving.recv().await {
            sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

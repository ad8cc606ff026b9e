//! Bytes between a client (TCP socket, or a gRPC stream adapted to a byte
//! stream) and a Bastion WebSocket, with `copy_bidirectional` semantics as far
//! as the protocol allows. The protocol has no half-close: a Close frame ends
//! the session at once. So after the client's EOF the tunnel stays open while
//! the target is still sending (an answer to the client's last request), and
//! the Close frame goes out once it has been quiet for [`EOF_IDLE_LINGER`]
//! (at most [`EOF_MAX_LINGER`]); upstream data is delivered until the peer's
//! Close. An upstream Close or EOF shuts down the client's write side. Idle
//! tunnels are pinged; an unanswered ping closes the connection.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::keepalive::{self, Activity, Keepalive};

/// Each client read goes straight into the frame payload; 64 KiB frames keep
/// per-frame overhead negligible for bulk transfers (the official client
/// reads 4 KiB at a time, which is why it is slow).
pub const READ_CHUNK: usize = 64 * 1024;
/// After the client's EOF, this much silence from the target means it has
/// nothing more to say; long enough for a reply to cross a slow link.
pub const EOF_IDLE_LINGER: Duration = Duration::from_secs(2);
/// After the client's EOF, the longest a still-talking target keeps the tunnel open.
pub const EOF_MAX_LINGER: Duration = Duration::from_secs(30);
/// After our Close frame, how long the peer may take to answer with its own;
/// a peer that never does must not pin the connection forever.
pub const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for sending a Close frame when the daemon cancels a connection.
const CANCEL_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Byte counters one pump adds to (a connection's, its forward's).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Client → target.
    pub up: AtomicU64,
    /// Target → client.
    pub down: AtomicU64,
}

/// Why a tunnel ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// The local side failed (reset, broken pipe): not the tunnel's fault.
    #[error("client connection: {0}")]
    Client(io::Error),
    #[error("tunnel: {0}")]
    Tunnel(tungstenite::Error),
    /// The Bastion ended the tunnel with an error code (target refused, dropped…).
    #[error("tunnel closed by the Bastion: {0}")]
    Closed(String),
    #[error("tunnel stalled: no answer to a keepalive ping within {0:?}")]
    Keepalive(Duration),
    #[error("tunnel: the Bastion did not answer our Close frame within {0}s")]
    CloseTimeout(u64),
}

/// The read half of a client, able to wait for data without holding a
/// buffer, so an idle connection costs no read buffer.
pub trait ClientRead: AsyncRead + Unpin + Send {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl ClientRead for tokio::net::tcp::ReadHalf<'_> {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

impl<T: AsyncRead + Send> ClientRead for tokio::io::ReadHalf<T> {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Moves bytes both ways until both sides are done, an error, or `cancel`.
pub async fn pump<R, W, S>(
    reader: R,
    writer: W,
    ws: WebSocketStream<S>,
    keepalive_timing: Keepalive,
    meters: &[&Traffic],
    cancel: &CancellationToken,
) -> Result<(), PumpError>
where
    R: ClientRead,
    W: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut sink, mut stream) = ws.split();
    let activity = Activity::default();
    let ping_wanted = Notify::new();
    {
        let up = upstream(reader, &mut sink, &ping_wanted, &activity, meters);
        let down = downstream(writer, &mut stream, &activity, meters);
        let keepalive = keepalive::watch(&activity, &ping_wanted, keepalive_timing);
        tokio::pin!(up, down, keepalive);
        // Keepalive applies while data may flow; once our Close is out, the
        // close handshake has its own bound.
        let transfer = async {
            tokio::select! {
                result = &mut down => result,
                () = &mut keepalive => Err(PumpError::Keepalive(keepalive_timing.timeout)),
                result = &mut up => {
                    result?;
                    timeout(CLOSE_REPLY_TIMEOUT, &mut down)
                        .await
                        .unwrap_or(Err(PumpError::CloseTimeout(CLOSE_REPLY_TIMEOUT.as_secs())))
                }
            }
        };
        tokio::select! {
            result = transfer => return result,
            () = cancel.cancelled() => {}
        }
    }
    let _ = timeout(CANCEL_CLOSE_TIMEOUT, sink.send(Message::Close(None))).await;
    Ok(())
}

/// Client → WebSocket. Returns after the client's EOF, once the target has
/// gone quiet and the Close frame is sent.
async fn upstream<R, S>(
    mut reader: R,
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    ping_wanted: &Notify,
    activity: &Activity,
    meters: &[&Traffic],
) -> Result<(), PumpError>
where
    R: ClientRead,
    S: AsyncRead + AsyncWrite + Unpin,
{
    // One read buffer, reused: each frame is split off it, and once
    // tungstenite has copied a frame out (masking needs that copy anyway)
    // `reserve` reclaims its room, so steady traffic allocates nothing. It is
    // allocated on the first data and released when the tunnel goes idle
    // long enough to be pinged, so idle connections hold none.
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            () = ping_wanted.notified() => {
                buf = BytesMut::new();
                ping(sink).await?;
                continue;
            }
            ready = reader.ready() => ready.map_err(PumpError::Client)?,
        }
        // Read a burst: feed each chunk as one frame and flush only when the
        // client has nothing more right now, so bulk data is batched and
        // interactive data goes out at once. The first read is awaited (a
        // reader without readiness, like the Connect pipe, blocks there),
        // the rest only taken if immediately available.
        let mut fed = false;
        loop {
            buf.reserve(READ_CHUNK);
            let read = if fed {
                match reader.read_buf(&mut buf).now_or_never() {
                    Some(read) => read,
                    None => break,
                }
            } else {
                tokio::select! {
                    biased;
                    () = ping_wanted.notified() => {
                        ping(sink).await?;
                        continue;
                    }
                    read = reader.read_buf(&mut buf) => read,
                }
            };
            match read.map_err(PumpError::Client)? {
                0 => {
                    if fed {
                        sink.flush().await.map_err(PumpError::Tunnel)?;
                    }
                    linger(sink, ping_wanted, activity).await?;
                    sink.send(Message::Close(None))
                        .await
                        .map_err(PumpError::Tunnel)?;
                    return Ok(());
                }
                n => {
                    for meter in meters {
                        meter.up.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    sink.feed(Message::Binary(buf.split().freeze()))
                        .await
                        .map_err(PumpError::Tunnel)?;
                    fed = true;
                    // A long upload to a quiet target still answers keepalives.
                    if ping_wanted.notified().now_or_never().is_some() {
                        ping(sink).await?;
                    }
                }
            }
        }
        if fed {
            sink.flush().await.map_err(PumpError::Tunnel)?;
        }
    }
}

/// Waits, after the client's EOF, until the target has been quiet for
/// [`EOF_IDLE_LINGER`] (at most [`EOF_MAX_LINGER`]), still answering keepalives.
async fn linger<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    ping_wanted: &Notify,
    activity: &Activity,
) -> Result<(), PumpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let eof_at = Instant::now();
    let give_up = eof_at + EOF_MAX_LINGER;
    loop {
        let deadline = (activity.last_data().max(eof_at) + EOF_IDLE_LINGER).min(give_up);
        if Instant::now() >= deadline {
            return Ok(());
        }
        tokio::select! {
            () = ping_wanted.notified() => {
                ping(sink).await?;
            }
            () = sleep_until(deadline) => {}
        }
    }
}

/// Sends a keepalive ping (written out at once: it must not wait for a burst).
async fn ping<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
) -> Result<(), PumpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    sink.send(Message::Ping(Default::default()))
        .await
        .map_err(PumpError::Tunnel)
}

/// WebSocket → client. Returns when the Bastion closes the tunnel.
async fn downstream<W, S>(
    mut writer: W,
    stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>,
    activity: &Activity,
    meters: &[&Traffic],
) -> Result<(), PumpError>
where
    W: AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = stream.next().await {
        let message = message.map_err(PumpError::Tunnel)?;
        activity.frame_received();
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(text) => text.into(),
            Message::Close(frame) => match frame {
                Some(frame) if !matches!(frame.code, CloseCode::Normal) => {
                    return Err(PumpError::Closed(format!(
                        "{} ({})",
                        frame.reason,
                        u16::from(frame.code)
                    )));
                }
                _ => break,
            },
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if data.is_empty() {
            continue;
        }
        activity.data_received();
        activity.set_delivering(true);
        writer.write_all(&data).await.map_err(PumpError::Client)?;
        writer.flush().await.map_err(PumpError::Client)?;
        activity.set_delivering(false);
        for meter in meters {
            meter.down.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    // The target finished: pass the EOF on (the client may be gone already).
    let _ = writer.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests;

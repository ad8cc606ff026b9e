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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

/// Each client read goes straight into the frame payload; 64 KiB frames keep
/// per-frame overhead negligible for bulk transfers (the official client
/// reads 4 KiB at a time, which is why it is slow).
pub const READ_CHUNK: usize = 64 * 1024;
/// tungstenite's read buffer, allocated per connection: its 128 KiB default
/// would dominate memory with hundreds of idle ssh sessions; 8 KiB measured
/// the same bulk throughput as 16 KiB and ~10 KiB less per idle connection.
pub const WS_READ_BUFFER: usize = 8 * 1024;
/// Frames are written out once this much is buffered (or on flush).
pub const WS_WRITE_BUFFER: usize = 64 * 1024;
/// Back-pressure bound on tungstenite's outgoing buffer.
pub const WS_MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// Largest frame/message accepted from the Bastion; the tunnel is a byte
/// stream, so bigger frames are only a memory risk.
pub const WS_MAX_MESSAGE: usize = 4 * 1024 * 1024;
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

/// The WebSocket configuration for tunnels.
pub fn websocket_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE))
}

/// Byte counters one pump adds to (a connection's, its forward's).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Client → target.
    pub up: AtomicU64,
    /// Target → client.
    pub down: AtomicU64,
}

/// Keepalive timing of one tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
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

/// When the tunnel last showed signs of life, shared by the directions of one pump.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last frame of any kind (pongs prove the tunnel alive).
    frame: AtomicU64,
    /// Milliseconds after `start` of the last data frame (the target is still talking).
    data: AtomicU64,
    /// Set while a frame is being written to the client: a slow client, not
    /// the tunnel, is why no frames are being read then.
    delivering: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            frame: AtomicU64::new(0),
            data: AtomicU64::new(0),
            delivering: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn frame_received(&self) {
        self.frame.store(self.now(), Ordering::Relaxed);
    }

    fn data_received(&self) {
        self.data.store(self.now(), Ordering::Relaxed);
    }

    fn set_delivering(&self, delivering: bool) {
        self.delivering.store(delivering, Ordering::Relaxed);
    }

    fn delivering(&self) -> bool {
        self.delivering.load(Ordering::Relaxed)
    }

    fn last_frame(&self) -> Instant {
        self.start + Duration::from_millis(self.frame.load(Ordering::Relaxed))
    }

    fn last_data(&self) -> Instant {
        self.start + Duration::from_millis(self.data.load(Ordering::Relaxed))
    }
}

/// Moves bytes both ways until both sides are done, an error, or `cancel`.
pub async fn pump<R, W, S>(
    reader: R,
    writer: W,
    ws: WebSocketStream<S>,
    keepalive: Keepalive,
    meters: &[&Traffic],
    cancel: &CancellationToken,
) -> Result<(), PumpError>
where
    R: ClientRead,
    W: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut sink, mut stream) = ws.split();
    let activity = Activity::new();
    let ping = Notify::new();
    {
        let up = upstream(reader, &mut sink, &ping, &activity, meters);
        let down = downstream(writer, &mut stream, &activity, meters);
        let keepalive = watch_keepalive(&activity, &ping, keepalive);
        tokio::pin!(up, down, keepalive);
        // Keepalive applies while data may flow; once our Close is out, the
        // close handshake has its own bound.
        let transfer = async {
            tokio::select! {
                result = &mut down => result,
                error = &mut keepalive => Err(error),
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
    ping: &Notify,
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
            () = ping.notified() => {
                buf = BytesMut::new();
                sink.send(Message::Ping(Default::default())).await.map_err(PumpError::Tunnel)?;
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
                    () = ping.notified() => {
                        sink.send(Message::Ping(Default::default())).await.map_err(PumpError::Tunnel)?;
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
                    linger(sink, ping, activity).await?;
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
                    if ping.notified().now_or_never().is_some() {
                        sink.feed(Message::Ping(Default::default()))
                            .await
                            .map_err(PumpError::Tunnel)?;
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
    ping: &Notify,
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
            () = ping.notified() => {
                sink.send(Message::Ping(Default::default())).await.map_err(PumpError::Tunnel)?;
            }
            () = sleep_until(deadline) => {}
        }
    }
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

/// Pings the tunnel after `interval` without incoming frames; fails when
/// nothing arrives within `timeout` of a ping.
async fn watch_keepalive(activity: &Activity, ping: &Notify, keepalive: Keepalive) -> PumpError {
    loop {
        let seen = activity.last_frame();
        sleep_until(seen + keepalive.interval).await;
        if activity.last_frame() > seen {
            continue;
        }
        if activity.delivering() {
            // Frames wait unread while a slow client drains the last one.
            sleep(keepalive.interval).await;
            continue;
        }
        ping.notify_one();
        sleep(keepalive.timeout).await;
        if activity.last_frame() <= seen && !activity.delivering() {
            return PumpError::Keepalive(keepalive.timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

    const FAST: Keepalive = Keepalive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
    };

    /// A client pipe and a WebSocket peer ("the Bastion") around a pump task.
    async fn setup(
        keepalive: Keepalive,
    ) -> (
        DuplexStream,
        WebSocketStream<DuplexStream>,
        tokio::task::JoinHandle<(Result<(), PumpError>, Traffic)>,
    ) {
        let (client, pump_side) = tokio::io::duplex(1 << 20);
        let (ws_client, ws_server) = tokio::io::duplex(1 << 20);
        let ws =
            WebSocketStream::from_raw_socket(ws_client, Role::Client, Some(websocket_config()))
                .await;
        let peer = WebSocketStream::from_raw_socket(ws_server, Role::Server, None).await;
        let task = tokio::spawn(async move {
            let traffic = Traffic::default();
            let (r, w) = tokio::io::split(pump_side);
            let result = pump(r, w, ws, keepalive, &[&traffic], &CancellationToken::new()).await;
            (result, traffic)
        });
        (client, peer, task)
    }

    #[tokio::test]
    async fn echoes_and_delivers_the_reply_after_client_eof() {
        let (mut client, mut peer, task) = setup(FAST).await;
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let Some(Ok(Message::Binary(data))) = peer.next().await else {
            panic!("no data")
        };
        assert_eq!(&data[..], b"ping");
        // The reply still arrives: no Close was sent on the client's EOF yet.
        peer.send(Message::Binary("pong".into())).await.unwrap();
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"pong");
        // Then, once quiet, the pump closes, answering pings meanwhile.
        loop {
            match peer.next().await {
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Ping(_))) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
        // Reading on sends tungstenite's reply to the Close.
        assert!(peer.next().await.is_none());
        let (result, traffic) = task.await.unwrap();
        result.unwrap();
        assert_eq!(traffic.up.load(Ordering::Relaxed), 4);
        assert_eq!(traffic.down.load(Ordering::Relaxed), 4);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn upstream_close_ends_the_client_and_error_codes_are_reported() {
        let (mut client, mut peer, task) = setup(FAST).await;
        peer.send(Message::Binary("bye".into())).await.unwrap();
        peer.close(None).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        task.await.unwrap().0.unwrap();

        let (_client, mut peer, task) = setup(FAST).await;
        peer.close(Some(CloseFrame {
            code: CloseCode::Error,
            reason: "Connection to target failed".into(),
        }))
        .await
        .unwrap();
        let error = task.await.unwrap().0.unwrap_err().to_string();
        assert!(error.contains("Connection to target failed"), "{error}");
    }

    #[tokio::test]
    async fn a_slow_client_is_not_a_stalled_tunnel() {
        let (mut client, mut peer, task) = setup(FAST).await;
        const TOTAL: usize = 4 << 20;
        let sender = tokio::spawn(async move {
            for _ in 0..TOTAL / READ_CHUNK {
                peer.send(Message::Binary(vec![7u8; READ_CHUNK].into()))
                    .await
                    .unwrap();
            }
            peer
        });
        // Read nothing for several keepalive periods while the pipe is full.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            !task.is_finished(),
            "the tunnel was closed while the client was slow"
        );
        let mut got = vec![0u8; TOTAL];
        client.read_exact(&mut got).await.unwrap();
        let _peer = sender.await.unwrap();
        assert!(!task.is_finished());
    }

    #[tokio::test]
    async fn a_long_upload_to_a_quiet_target_keeps_answering_pings() {
        let (mut client, mut peer, task) = setup(FAST).await;
        let reader = tokio::spawn(async move {
            let mut received = 0;
            while let Some(Ok(message)) = peer.next().await {
                if let Message::Binary(data) = message {
                    received += data.len();
                }
            }
            received
        });
        let chunk = vec![1u8; 16 * 1024];
        let until = Instant::now() + Duration::from_millis(1000);
        let mut sent = 0;
        while Instant::now() < until {
            client.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        assert!(
            !task.is_finished(),
            "the tunnel was closed during the upload"
        );
        drop(client);
        let (result, traffic) = task.await.unwrap();
        result.unwrap();
        assert_eq!(traffic.up.load(Ordering::Relaxed), sent as u64);
        assert_eq!(reader.await.unwrap(), sent);
    }

    #[tokio::test]
    async fn a_stalled_tunnel_fails_the_keepalive() {
        let (_client, peer, task) = setup(FAST).await;
        // The peer never reads, so it never answers the ping.
        let error = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .0
            .unwrap_err();
        assert!(matches!(error, PumpError::Keepalive(_)), "{error}");
        drop(peer);
    }

    #[tokio::test]
    async fn an_answering_peer_keeps_an_idle_tunnel_open() {
        let (mut client, mut peer, task) = setup(FAST).await;
        // tungstenite answers pings while we read; stay idle for several intervals.
        let idle_until = Instant::now() + Duration::from_millis(800);
        let mut pings = 0;
        while let Ok(message) = tokio::time::timeout_at(idle_until, peer.next()).await {
            assert!(matches!(message, Some(Ok(Message::Ping(_)))), "{message:?}");
            pings += 1;
        }
        assert!(pings >= 2, "an idle tunnel is pinged");
        assert!(!task.is_finished());
        client.write_all(b"still here").await.unwrap();
        let Some(Ok(Message::Binary(data))) = peer.next().await else {
            panic!("no data")
        };
        assert_eq!(&data[..], b"still here");
    }
}

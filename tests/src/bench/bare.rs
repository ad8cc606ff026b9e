//! (b) The bare protocol client: what a connection through a Bastion costs
//! with no daemon, the floor bastiond is measured against. It is a *good*
//! client, so the floor is honest: one pooled keep-alive HTTP/1.1 client for
//! the token POST and DELETE, the Entra token fetched once, WebSockets over a
//! shared rustls config (TLS resumption) with TCP_NODELAY, 64 KiB reads sent
//! as one binary frame each, bounded tungstenite buffers. Like a forward it
//! listens on 127.0.0.1, so every workload reaches (a), (b) and (c) the same way.
//!
//! No linger after the client's EOF: the workloads never half-close before
//! they have everything, so the Close goes out at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::emulator::EmulatorInfo;
use crate::emulator::client::{BastionClient, ClientWs, SessionTokens};

/// Client reads go straight into one frame of at most this much.
const READ_CHUNK: usize = 64 * 1024;
/// tungstenite's read buffer (its default is 128 KiB). It zero-fills up to
/// this much before every socket read, so a small buffer costs less per small
/// frame, the same per byte of a 64 KiB frame (read in four pieces), and a
/// quarter of the memory per idle connection.
const WS_READ_BUFFER: usize = 16 * 1024;
/// Each frame is flushed as it is sent; this only bounds batching.
const WS_WRITE_BUFFER: usize = 64 * 1024;
/// Back-pressure bound on the outgoing buffer.
const WS_MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// Largest frame accepted; the emulator sends at most 64 KiB per frame.
const WS_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// After our Close, how long the Bastion may take to answer with its own.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Bare {
    client: BastionClient,
    /// The Entra token, fetched once (a secret: never printed).
    aztoken: String,
    ws_config: WebSocketConfig,
    failures: AtomicU64,
}

impl Bare {
    /// A client for the emulator in `info`, with its Entra token in hand.
    pub async fn new(info: &EmulatorInfo) -> anyhow::Result<Arc<Bare>> {
        let client = BastionClient::new(info).context("building the bare client")?;
        let aztoken = client
            .entra_token()
            .await
            .context("bare client: Entra token")?;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(WS_WRITE_BUFFER)
            .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
            .max_message_size(Some(WS_MAX_MESSAGE))
            .max_frame_size(Some(WS_MAX_MESSAGE));
        Ok(Arc::new(Bare {
            client,
            aztoken,
            ws_config,
            failures: AtomicU64::new(0),
        }))
    }

    /// Connections that failed inside the bare client (token, WebSocket, pump).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Listens on 127.0.0.1 (OS-chosen port); every connection becomes a
    /// tunnel to `ip:port`, until `cancel`.
    pub async fn forward(
        self: &Arc<Self>,
        ip: Ipv4Addr,
        port: u16,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (bare, tasks, cancel) = (self.clone(), tracker.clone(), cancel.clone());
        tracker.spawn(async move {
            loop {
                let socket = tokio::select! {
                    () = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(e) => { tracing::warn!(error = %e, "bare accept failed"); continue; }
                    },
                };
                let (bare, cancel) = (bare.clone(), cancel.clone());
                tasks.spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        served = bare.serve(socket, ip, port) => if let Err(e) = served {
                            bare.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %format!("{e:#}"), "bare connection failed");
                        },
                    }
                });
            }
        });
        Ok(addr)
    }

    /// Token POST, WebSocket, pump, DELETE (also after a failed pump).
    async fn serve(&self, socket: TcpStream, ip: Ipv4Addr, port: u16) -> anyhow::Result<()> {
        socket.set_nodelay(true)?;
        let session = self
            .client
            .session(&self.aztoken, &ip.to_string(), port)
            .await?;
        let pumped = match self.open_ws(&session).await {
            Ok(ws) => pump(socket, ws).await,
            Err(e) => Err(e),
        };
        let deleted = self.client.delete(&session).await?;
        anyhow::ensure!(
            deleted.is_success() || deleted == http::StatusCode::NOT_FOUND,
            "DELETE /api/tokens: {deleted}"
        );
        pumped
    }

    /// The WebSocket handshake over the shared TLS config, bounded buffers.
    async fn open_ws(&self, session: &SessionTokens) -> anyhow::Result<ClientWs> {
        let info = self.client.info();
        let url = format!(
            "wss://{}/webtunnelv2/{}?X-Node-Id={}",
            info.endpoint, session.websocket_token, session.node_id
        );
        let mut request = url.into_client_request()?;
        let origin = http::HeaderValue::from_str(&info.base_url())?;
        request.headers_mut().insert(http::header::ORIGIN, origin);
        let tls = self.client.tls_connect().await?;
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, tls, Some(self.ws_config)).await?;
        Ok(ws)
    }
}

/// Client ↔ WebSocket until the tunnel ends: the client's EOF sends Close and
/// awaits the reply; the Bastion's Close ends the client's write side.
async fn pump(socket: TcpStream, ws: ClientWs) -> anyhow::Result<()> {
    let (mut reader, mut writer) = socket.into_split();
    let (mut sink, mut stream) = ws.split();
    // Each read becomes one frame; reads already waiting join the same
    // flush, so bulk data is batched and a lone keystroke leaves at once.
    let up = async {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            if reader.read_buf(&mut buf).await? == 0 {
                sink.send(Message::Close(None)).await?;
                return anyhow::Ok(());
            }
            loop {
                sink.feed(Message::Binary(buf.split().freeze())).await?;
                buf.reserve(READ_CHUNK);
                match reader.try_read_buf(&mut buf) {
                    Ok(0) => {
                        sink.send(Message::Close(None)).await?;
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            sink.flush().await?;
        }
    };
    let down = async {
        while let Some(message) = stream.next().await {
            match message? {
                Message::Binary(data) if !data.is_empty() => writer.write_all(&data).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = writer.shutdown().await;
        anyhow::Ok(())
    };
    tokio::pin!(down);
    tokio::select! {
        ended = &mut down => ended,
        sent = up => {
            sent?;
            tokio::time::timeout(CLOSE_REPLY_TIMEOUT, down)
                .await
                .context("the Bastion did not answer our Close")?
        }
    }
}

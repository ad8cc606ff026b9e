//! The WebSocket to a Bastion: a lenient HTTP/1.1 upgrade handshake on a
//! TLS connection (a spare, or a new one from `dial`). The real Bastion has been seen answering 101 without the
//! `Upgrade`/`Connection` headers; we accept that, but still require status
//! 101 and a correct `Sec-WebSocket-Accept` when one is sent. Bytes read past
//! the response head are replayed to tungstenite before the socket.

use std::io;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::bastion::dial::{self, Failure, TlsConn, Warm};
use crate::bastion::tcp::OverTcp;
use crate::error::AzureError;
use crate::error_body::{error_message, printable, truncate};
use crate::secret::Secret;

/// Upgrade request to complete response head.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// A 101 head is a few hundred bytes; anything larger is not a WebSocket upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Enough headers for any real upgrade response.
const MAX_HEADERS: usize = 32;
/// How much of an unexpected HTTP status line goes into the error.
const STATUS_LINE_CHARS: usize = 80;
/// First read size while waiting for the response head.
const HEAD_READ_CHUNK: usize = 2048;

/// tungstenite's read buffer, allocated per connection: its 128 KiB default
/// would dominate memory with hundreds of idle ssh sessions; 8 KiB measured
/// the same bulk throughput as 16 KiB and ~10 KiB less per idle connection.
const WS_READ_BUFFER: usize = 8 * 1024;
/// Frames are written out once this much is buffered (or on flush).
const WS_WRITE_BUFFER: usize = 64 * 1024;
/// Back-pressure bound on tungstenite's outgoing buffer.
const WS_MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// Largest frame/message accepted from the Bastion: the tunnel is a byte
/// stream the Bastion sends in frames of 4–64 KiB; 4× that is headroom, and
/// more would only let one connection hold megabytes of the daemon's memory.
pub const WS_MAX_MESSAGE: usize = 256 * 1024;
/// The WebSocket configuration for tunnels.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE))
}

/// The Bastion answered with HTTP where WebSocket frames should be (its
/// backend refused the tunnel after the 101): nothing sent on this tunnel
/// reached a target, so it may be sent again on a fresh one.
#[derive(Debug, thiserror::Error)]
#[error("the Bastion sent an HTTP response after accepting the WebSocket: {0}")]
pub struct HttpAfterUpgrade(String);

impl HttpAfterUpgrade {
    /// Whether `error` is, at its root, this one.
    pub fn is_cause_of(error: &tokio_tungstenite::tungstenite::Error) -> bool {
        match error {
            tokio_tungstenite::tungstenite::Error::Io(io) => io
                .get_ref()
                .is_some_and(|inner| inner.is::<HttpAfterUpgrade>()),
            _ => false,
        }
    }
}

/// A tunnel's WebSocket, over TLS over TCP.
pub type TunnelSocket = WebSocketStream<Prefixed<TlsConn>>;

/// Opens the WebSocket at `path` on `conn`, a TLS connection to `host`.
/// [`Failure::Unanswered`] when the connection ended before any byte of an
/// answer (a spare the Bastion had closed); [`Failure::Silent`] when, on a
/// `warm` connection, none came and the request was never acknowledged (a
/// spare on a path that went silent: [`dial::await_answer`]).
pub async fn open(
    mut conn: TlsConn,
    host: &str,
    path: &Secret,
    config: WebSocketConfig,
    warm: Option<Warm>,
) -> Result<TunnelSocket, Failure> {
    let leftover = timeout(UPGRADE_TIMEOUT, upgrade(&mut conn, host, path, warm))
        .await
        .map_err(|_| {
            Failure::Answered(AzureError::WebSocket(format!(
                "WebSocket upgrade timed out after {}s",
                UPGRADE_TIMEOUT.as_secs()
            )))
        })??;
    let stream = Prefixed::new(leftover, conn);
    Ok(WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await)
}

/// Sends the upgrade request and reads the response head; returns the bytes
/// that followed it.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &Secret,
    mut warm: Option<Warm>,
) -> Result<Bytes, Failure> {
    let key = generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: https://{host}\r\n\
         User-Agent: bastiond/{}\r\n\r\n",
        path.expose(),
        env!("CARGO_PKG_VERSION"),
    );
    let io_fail = |e: io::Error| AzureError::WebSocket(format!("WebSocket upgrade failed: {e}"));
    // Nothing read yet: the server never saw (or never took) the request.
    let unanswered = |e: io::Error| Failure::Unanswered(io_fail(e));
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(unanswered)?;
    stream.flush().await.map_err(unanswered)?;
    let mut buf = BytesMut::with_capacity(HEAD_READ_CHUNK);
    loop {
        if let Some(head_len) = parse_response(&buf, &key).map_err(Failure::Answered)? {
            buf.advance(head_len);
            return Ok(buf.freeze());
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(Failure::Answered(AzureError::WebSocket(
                "WebSocket upgrade failed: response head too large".into(),
            )));
        }
        buf.reserve(HEAD_READ_CHUNK);
        let closed = || {
            AzureError::WebSocket(
                "WebSocket upgrade failed: the Bastion closed the connection before answering"
                    .into(),
            )
        };
        // Only the first read waits on the warm connection's bound.
        let read = dial::await_answer(warm.take(), stream.read_buf(&mut buf), |bound| {
            AzureError::WebSocket(format!(
                "WebSocket upgrade failed: no answer within {}s on a warm connection, \
                 and none of the request acknowledged",
                bound.as_secs_f32()
            ))
        })
        .await?;
        match read {
            Ok(0) if buf.is_empty() => return Err(Failure::Unanswered(closed())),
            Ok(0) => return Err(Failure::Answered(closed())),
            Ok(_) => {}
            Err(e) if buf.is_empty() => return Err(unanswered(e)),
            Err(e) => return Err(Failure::Answered(io_fail(e))),
        }
    }
}

/// Parses a complete response head in `buf`: `Ok(Some(len))` for an accepted
/// 101, `Ok(None)` if more bytes are needed.
fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, AzureError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(AzureError::WebSocket(format!(
                "WebSocket upgrade failed: malformed response ({e}): {}",
                error_message(0, &buf[..buf.len().min(MAX_HEADERS * 4)])
            )));
        }
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(AzureError::Rejected {
            what: "Bastion refused the WebSocket",
            status,
            message: error_message(status, &buf[head_len..]),
        });
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
    if let Some(accept) = accept
        && accept.value.trim_ascii() != derive_accept_key(key.as_bytes()).as_bytes()
    {
        return Err(AzureError::WebSocket(
            "WebSocket upgrade failed: wrong Sec-WebSocket-Accept".into(),
        ));
    }
    Ok(Some(head_len))
}

/// A stream that first yields `prefix`, then reads from `inner`. The first
/// bytes are checked for an HTTP response: a Bastion has been seen sending an
/// error page right after its 101, which must fail the tunnel with a clear
/// message rather than be parsed as (or waited on as) a WebSocket frame.
/// The check holds whatever the reads are cut into: "HTTP/" may come one
/// byte at a time.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
    /// The first bytes while they may still be the start of "HTTP/"; `None`
    /// once they are known not to be.
    head: Option<Vec<u8>>,
}

/// How an HTTP response starts.
const HTTP_MARK: &[u8] = b"HTTP/";

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            inner,
            head: Some(Vec::new()),
        }
    }

    /// Notes `read`, the next bytes of the stream: the error if they
    /// complete "HTTP/" at the stream's start.
    fn sniff(&mut self, read: &[u8]) -> Option<HttpAfterUpgrade> {
        let head = self.head.as_mut()?;
        let take = (HTTP_MARK.len() - head.len()).min(read.len());
        head.extend_from_slice(&read[..take]);
        if !HTTP_MARK.starts_with(head) {
            self.head = None;
            return None;
        }
        if head.len() < HTTP_MARK.len() {
            return None;
        }
        let mut text = std::mem::take(head);
        self.head = None;
        text.extend_from_slice(&read[take..]);
        let status_line = text.split(|b| *b == b'\r').next().unwrap_or_default();
        Some(HttpAfterUpgrade(printable(&truncate(
            &String::from_utf8_lossy(status_line),
            STATUS_LINE_CHARS,
        ))))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
        } else {
            std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        }
        let read = &buf.filled()[before..];
        if self.head.is_some()
            && let Some(refusal) = self.sniff(read)
        {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, refusal)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: OverTcp> OverTcp for Prefixed<S> {
    fn tcp(&self) -> Option<BorrowedFd<'_>> {
        self.inner.tcp()
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

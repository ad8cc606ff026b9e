//! Bytes between a client (TCP socket, or a gRPC stream adapted to a byte
//! stream) and a Bastion WebSocket, with `copy_bidirectional` semantics as far
//! as the protocol allows. The protocol has no half-close: a Close frame ends
//! the session at once. So after the client's EOF the tunnel stays open while
//! the target is still sending (an answer to the client's last request), and
//! the Close frame goes out once it has been quiet for `eof_linger` (at most
//! [`EOF_MAX_LINGER`]); upstream data is delivered until the peer's Close. An
//! upstream Close or EOF shuts down the client's write side. Idle tunnels are
//! pinged; an unanswered ping closes the connection unless the peer's TCP
//! vouches for it ([`crate::relay::keepalive`]).
//!
//! A tunnel that fails before it has carried anything (the reported upgrade
//! faults: HTTP text after the 101, a stall, a vanished connection) ends in
//! [`PumpError::Unconfirmed`]: the caller may replace it with a fresh one
//! without the client noticing. Client bytes already sent on it are handed
//! back for the next tunnel only where the Bastion proved it never relayed
//! them (it answered with HTTP instead of frames); after a stall or a
//! vanished connection nobody can tell, so those are replaced only while no
//! client byte has gone up.

use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::bastion::tcp::OverTcp;
use crate::bastion::websocket::HttpAfterUpgrade;
use crate::relay::keepalive::{self, Activity, Keepalive};

mod downstream;
mod upstream;

/// Client reads go straight into one buffer this big, cut into frames of at
/// most `max_frame` bytes: big reads keep syscalls few for bulk transfers.
pub const READ_CHUNK: usize = 64 * 1024;
/// After the client's EOF, the longest a still-talking target keeps the tunnel open.
pub const EOF_MAX_LINGER: Duration = Duration::from_secs(30);
/// After our Close frame, how long the peer may take to answer with its own;
/// a peer that never does must not pin the connection forever.
pub const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for sending a Close frame when the daemon cancels a connection.
const CANCEL_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// When a fresh tunnel has neither sent a frame nor been given client bytes
/// by now, it is pinged: ssh's banner or a client's first bytes come within
/// a round trip, so only a tunnel that may be stalled gets this ping.
const PROBE_PING_AFTER: Duration = Duration::from_secs(1);
/// After a write to an unconfirmed tunnel fails, how long the Bastion's
/// answer (an HTTP error page) may take to be read: it was sent before the
/// connection closed, so it is normally there already.
const REFUSAL_READ_GRACE: Duration = Duration::from_secs(1);
/// Client bytes sent on a tunnel before it proves itself, kept to send again
/// on a fresh one: more than any protocol's opening (an ssh KEXINIT, a TLS
/// ClientHello, an HTTP request head), so only a client that uploads at once
/// (an echo, a push) reaches it; such a client is then held (not read) until
/// the Bastion answers our ping, one round trip.
const REPLAY_LIMIT: usize = 64 * 1024;

/// How one tunnel behaves, from `[tunnel]`.
#[derive(Debug, Clone)]
pub struct PumpOptions {
    pub keepalive: Keepalive,
    /// Changes when every live tunnel should be checked at once (after a
    /// resume or a network change: [`crate::bastion::session::Sessions::check_tunnels`]).
    pub checks: Option<watch::Receiver<u64>>,
    /// Largest frame sent (`max_frame_bytes`).
    pub max_frame: usize,
    /// After the client's EOF, this much silence from the target ends the tunnel.
    pub eof_linger: Duration,
    /// Give up on a fresh tunnel as [`PumpError::Unconfirmed`] if neither a
    /// frame nor a client byte has moved within this long (pinging it part
    /// way, so a healthy Bastion can answer). `None` on a connection's last try, where
    /// there is nothing better to fall back to than waiting.
    pub probe: Option<Duration>,
}

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
    #[error(
        "the Bastion refused a {0}-byte WebSocket frame as too big (Close 1009); \
         lower `max_frame_bytes` under [tunnel] in config.toml (4096 is what the Azure CLI sends)"
    )]
    FrameTooBig(usize),
    /// Neither a frame, nor a pong, nor a peer busy with what we sent
    /// (its TCP acknowledging it) within the keepalive timeout.
    #[error(
        "tunnel dead: no frame and no answer to a keepalive ping within {0:?}, \
         and nothing we sent was waiting on a busy target (the network path went silent?)"
    )]
    Keepalive(Duration),
    #[error("tunnel stalled after the upgrade: no frame from the Bastion within {0:?}")]
    Silent(Duration),
    #[error("the Bastion ended the tunnel without a Close frame")]
    Vanished,
    #[error("tunnel: the Bastion did not answer our Close frame within {0}s")]
    CloseTimeout(u64),
    /// Failed before carrying anything: a fresh tunnel may take over,
    /// sending `replay` (client bytes this one swallowed) first.
    #[error("{error}")]
    Unconfirmed {
        error: Box<PumpError>,
        replay: Bytes,
    },
}

/// Client bytes sent on a tunnel that has not proved itself yet: never more
/// than [`REPLAY_LIMIT`], as upstream stops reading the client there (unless
/// pings are off: then they are given up past it).
struct Held {
    bytes: BytesMut,
    /// The tunnel was confirmed, or more than [`REPLAY_LIMIT`] went up.
    given_up: bool,
}

impl Held {
    /// How many more client bytes may go up before the tunnel is confirmed.
    fn room(&self) -> usize {
        REPLAY_LIMIT.saturating_sub(self.bytes.len())
    }

    fn keep(&mut self, data: &[u8], confirmed: bool) {
        if self.given_up {
            return;
        }
        if confirmed || self.bytes.len() + data.len() > REPLAY_LIMIT {
            self.given_up = true;
            self.bytes = BytesMut::new();
        } else {
            self.bytes.extend_from_slice(data);
        }
    }

    fn replay(&mut self) -> Option<Bytes> {
        (!self.given_up).then(|| std::mem::take(&mut self.bytes).freeze())
    }
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

/// A retried connection hands the same client to each tunnel in turn.
impl<T: ClientRead> ClientRead for &mut T {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        (**self).ready()
    }
}

/// Moves bytes both ways until both sides are done, an error, or `cancel`;
/// `replay` (from a tunnel this one replaces) goes up first.
pub async fn pump<R, W, S>(
    reader: R,
    writer: W,
    ws: WebSocketStream<S>,
    replay: Bytes,
    options: &PumpOptions,
    meters: &[&Traffic],
    cancel: &CancellationToken,
) -> Result<(), PumpError>
where
    R: ClientRead,
    W: AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + OverTcp + Unpin + Send,
{
    let tcp = ws.get_ref().tcp().map(|fd| fd.as_raw_fd());
    let (mut sink, mut stream) = ws.split();
    // SAFETY: the socket is owned by `sink` and `stream`, which live until
    // this function returns, longer than the keepalive that asks it.
    let tcp = tcp.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    let activity = Activity::default();
    let ping_wanted = Notify::new();
    let confirmed = Notify::new();
    let held = Mutex::new(Held {
        bytes: BytesMut::new(),
        given_up: false,
    });
    let result = {
        let up = upstream::Upstream {
            sink: &mut sink,
            ping_wanted: &ping_wanted,
            confirmed: &confirmed,
            activity: &activity,
            held: &held,
            options,
            meters,
        }
        .run(reader, replay.clone());
        let down = downstream::run(
            writer,
            &mut stream,
            &activity,
            &confirmed,
            options.max_frame,
            meters,
        );
        let keepalive = keepalive::watch(
            &activity,
            &ping_wanted,
            options.keepalive,
            tcp,
            options.checks.clone(),
        );
        let probe = probe(&activity, &ping_wanted, options.probe);
        tokio::pin!(up, down, keepalive, probe);
        // Keepalive applies while data may flow; once our Close is out, the
        // close handshake has its own bound.
        let transfer = async {
            tokio::select! {
                result = &mut down => result,
                () = &mut keepalive => Err(PumpError::Keepalive(options.keepalive.timeout)),
                error = &mut probe => Err(error),
                result = &mut up => match result {
                    Ok(()) => timeout(CLOSE_REPLY_TIMEOUT, &mut down)
                        .await
                        .unwrap_or(Err(PumpError::CloseTimeout(CLOSE_REPLY_TIMEOUT.as_secs()))),
                    // A write failed before the tunnel proved itself (a
                    // backend that refused the upgrade closes at once): what
                    // the Bastion sent meanwhile tells why, and whether the
                    // bytes can be sent again.
                    Err(error) if !activity.confirmed() => {
                        match timeout(REFUSAL_READ_GRACE, &mut down).await {
                            Ok(Err(answer)) => Err(answer),
                            _ => Err(error),
                        }
                    }
                    Err(error) => Err(error),
                }
            }
        };
        tokio::select! {
            result = transfer => Some(result),
            () = cancel.cancelled() => None,
        }
    };
    match result {
        Some(Err(error)) => Err(match replayable(&error, &activity, &held, replay) {
            Some(replay) => PumpError::Unconfirmed {
                error: Box::new(error),
                replay,
            },
            None => error,
        }),
        Some(Ok(())) => Ok(()),
        None => {
            let _ = timeout(CANCEL_CLOSE_TIMEOUT, sink.send(Message::Close(None))).await;
            Ok(())
        }
    }
}

/// What to send again on a fresh tunnel, when `error` is a failure of the
/// tunnel itself (not of the client, not a deliberate Close from the
/// Bastion) before any frame came back, and no client byte can be lost.
/// `replay`, this tunnel's own, is handed on whole if it failed before
/// sending anything (the Bastion's refusal can come first).
fn replayable(
    error: &PumpError,
    activity: &Activity,
    held: &Mutex<Held>,
    replay: Bytes,
) -> Option<Bytes> {
    let tunnel_fault = matches!(
        error,
        PumpError::Tunnel(_) | PumpError::Keepalive(_) | PumpError::Silent(_) | PumpError::Vanished
    );
    if !tunnel_fault || activity.confirmed() {
        return None;
    }
    if !activity.committed() {
        return Some(replay);
    }
    match error {
        PumpError::Tunnel(e) if HttpAfterUpgrade::is_cause_of(e) => held.lock().replay(),
        _ => None,
    }
}

/// Completes with [`PumpError::Silent`] if, `after` the start, no frame has
/// come and no client byte has gone; never otherwise. A tunnel still silent
/// part way is pinged (through `ping`), so a healthy Bastion proves itself
/// with a pong; most tunnels never need that ping, as the first client bytes
/// or the target's banner settle the question first.
async fn probe(activity: &Activity, ping: &Notify, after: Option<Duration>) -> PumpError {
    if let Some(after) = after {
        let ping_at = PROBE_PING_AFTER.min(after / 2);
        sleep(ping_at).await;
        // Settled already (the usual case): no more timers for this tunnel.
        if !activity.confirmed() && !activity.committed() {
            ping.notify_one();
            sleep(after.saturating_sub(ping_at)).await;
            if !activity.confirmed() && !activity.committed() {
                return PumpError::Silent(after);
            }
        }
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests;

//! Moves bytes between a tunnel's WebSocket (binary frames) and its target TCP
//! connection, honouring the stall and drop faults, then closes both ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Shared;
use super::faults::DropMode;

pub(crate) type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Target reads go straight into one frame: big enough for bulk speed, the most a
/// real Bastion sends per frame.
const READ_CHUNK: usize = 64 * 1024;
/// After we send Close, how long the client gets to answer before we hang up.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why a tunnel ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client sent Close.
    ClientClosed,
    /// The client vanished without a Close.
    ClientGone,
    TargetEof,
    TargetError,
    /// A client protocol violation: close code and reject reason.
    Protocol(CloseCode, &'static str),
    Dropped(DropMode),
    Shutdown,
}

/// A tunnel about to relay, already listening to the drop and stall switches.
pub(crate) struct Relay<'a> {
    pump: Pump<'a>,
    drops: broadcast::Receiver<DropMode>,
    stall: watch::Receiver<bool>,
}

/// The two directions' shared state.
struct Pump<'a> {
    shared: &'a Shared,
    relayed: AtomicU64,
    drop_after: Option<(u64, DropMode)>,
    max_frame: Option<usize>,
}

impl<'a> Relay<'a> {
    /// Subscribes to the drop and stall switches: create it before the tunnel counts
    /// as open, so a `drop_all_websockets` after that is never missed.
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Self {
            pump: Pump {
                shared,
                relayed: AtomicU64::new(0),
                drop_after: shared.faults.drop_after(),
                max_frame: shared.faults.max_frame(),
            },
            drops: shared.faults.subscribe_drops(),
            stall: shared.faults.subscribe_stall(),
        }
    }

    /// Relays until one side ends, then closes the WebSocket as `End` calls for.
    pub(crate) async fn run(self, ws: Ws, target: TcpStream) -> End {
        let Relay {
            pump,
            mut drops,
            stall,
        } = self;
        let (mut sink, mut stream) = ws.split();
        let (mut tr, mut tw) = target.into_split();
        let end = tokio::select! {
            e = pump.up(&mut stream, &mut tw, stall.clone()) => e,
            e = pump.down(&mut sink, &mut tr, stall) => e,
            mode = next_drop(&mut drops) => End::Dropped(mode),
            _ = pump.shared.cancel.cancelled() => End::Shutdown,
        };
        // The target goes first: nothing more will be relayed to it.
        drop((tr, tw));
        pump.finish(sink, stream, &end).await;
        end
    }
}

impl Pump<'_> {
    /// Adds relayed bytes; Some(mode) once the drop budget is spent.
    fn spend(&self, n: usize) -> Option<DropMode> {
        let total = self.relayed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        self.drop_after
            .and_then(|(limit, mode)| (total >= limit).then_some(mode))
    }

    /// Client -> target.
    async fn up(
        &self,
        stream: &mut SplitStream<Ws>,
        tw: &mut OwnedWriteHalf,
        mut stall: watch::Receiver<bool>,
    ) -> End {
        loop {
            until(&mut stall, false).await;
            let msg = tokio::select! {
                biased;
                _ = until(&mut stall, true) => continue,
                m = stream.next() => m,
            };
            match msg {
                Some(Ok(Message::Binary(data))) => {
                    if data.is_empty() {
                        // Peers read an empty frame as end of stream; clients must not send one.
                        return End::Protocol(CloseCode::Normal, "empty_frame");
                    }
                    if self.max_frame.is_some_and(|max| data.len() > max) {
                        return End::Protocol(CloseCode::Size, "injected_frame_too_big");
                    }
                    if tw.write_all(&data).await.is_err() {
                        return End::TargetError;
                    }
                    let n = data.len();
                    self.shared.ledger.update(|l| l.bytes_up += n as u64);
                    if let Some(mode) = self.spend(n) {
                        return End::Dropped(mode);
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    return End::Protocol(CloseCode::Unsupported, "text_frame");
                }
                Some(Ok(Message::Close(_))) => return End::ClientClosed,
                // Pings: tungstenite queued the pong, flushed by the next read.
                Some(Ok(_)) => {}
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)))
                | None => {
                    return End::ClientGone;
                }
                Some(Err(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient))) => {
                    return End::Protocol(CloseCode::Protocol, "unmasked_frame");
                }
                Some(Err(WsError::Protocol(_) | WsError::Utf8(_))) => {
                    return End::Protocol(CloseCode::Protocol, "protocol_error");
                }
                Some(Err(WsError::Capacity(_))) => {
                    return End::Protocol(CloseCode::Size, "frame_too_big");
                }
                Some(Err(_)) => return End::ClientGone,
            }
        }
    }

    /// Target -> client, one binary frame per read, never an empty one.
    async fn down(
        &self,
        sink: &mut SplitSink<Ws, Message>,
        tr: &mut OwnedReadHalf,
        mut stall: watch::Receiver<bool>,
    ) -> End {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            until(&mut stall, false).await;
            buf.reserve(READ_CHUNK);
            let mut room = (&mut buf).limit(READ_CHUNK);
            let read = tokio::select! {
                biased;
                _ = until(&mut stall, true) => continue,
                r = tr.read_buf(&mut room) => r,
            };
            let n = match read {
                Ok(0) => return End::TargetEof,
                Ok(n) => n,
                Err(_) => return End::TargetError,
            };
            if sink
                .send(Message::Binary(buf.split().freeze()))
                .await
                .is_err()
            {
                return End::ClientGone;
            }
            self.shared.ledger.update(|l| l.bytes_down += n as u64);
            if let Some(mode) = self.spend(n) {
                return End::Dropped(mode);
            }
        }
    }

    async fn finish(
        &self,
        mut sink: SplitSink<Ws, Message>,
        mut stream: SplitStream<Ws>,
        end: &End,
    ) {
        let close = |code, reason| Some(close_frame(code, reason));
        let frame = match end {
            End::ClientGone | End::Dropped(DropMode::Abrupt) => return,
            // tungstenite already queued its reply to the client's Close.
            End::ClientClosed => None,
            End::TargetEof => close(CloseCode::Normal, ""),
            End::TargetError => close(CloseCode::Error, "Connection to target lost"),
            End::Protocol(code, reason) => {
                self.shared.ledger.reject(reason);
                close(*code, reason)
            }
            End::Dropped(DropMode::CloseFrame) => close(CloseCode::Error, "Connection dropped"),
            End::Shutdown => close(CloseCode::Away, "Emulator shutting down"),
        };
        // Errors here mean the client is already gone: nothing left to close.
        let _ = match frame {
            Some(frame) => sink.send(Message::Close(Some(frame))).await,
            None => sink.close().await,
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(m)) = stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
        if let Ok(mut ws) = stream.reunite(sink) {
            // TLS close_notify, so the client sees a clean end of stream.
            let _ = ws.get_mut().shutdown().await;
        }
    }
}

pub(crate) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }
}

/// Resolves once the stall switch is `stalled` (never, if the switch is gone).
async fn until(rx: &mut watch::Receiver<bool>, stalled: bool) {
    if rx.wait_for(|s| *s == stalled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn next_drop(rx: &mut broadcast::Receiver<DropMode>) -> DropMode {
    loop {
        match rx.recv().await {
            Ok(mode) => return mode,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

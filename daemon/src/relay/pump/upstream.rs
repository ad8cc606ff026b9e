//! Client → WebSocket: reads in bursts, frames of at most `max_frame` bytes,
//! one flush per burst; after the client's EOF, the linger and our Close.
//! Before the tunnel is confirmed, no more than the replay budget goes up:
//! the client waits, and a ping asks the Bastion for its first frame.

use parking_lot::Mutex;
use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{ClientRead, EOF_MAX_LINGER, Held, PumpError, PumpOptions, READ_CHUNK, Traffic};
use crate::relay::keepalive::Activity;

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

pub(super) struct Upstream<'a, S> {
    pub sink: &'a mut Sink<S>,
    pub ping_wanted: &'a Notify,
    /// Woken by the Bastion's first frame.
    pub confirmed: &'a Notify,
    pub activity: &'a Activity,
    pub held: &'a Mutex<Held>,
    pub options: &'a PumpOptions,
    pub meters: &'a [&'a Traffic],
}

impl<S> Upstream<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends `replay`, then the client's bytes; returns after the client's
    /// EOF, once the target has gone quiet and the Close frame is sent.
    pub async fn run<R: ClientRead>(
        mut self,
        mut reader: R,
        replay: Bytes,
    ) -> Result<(), PumpError> {
        // One read buffer, reused: frames are split off it, and once
        // tungstenite has copied them out (masking needs that copy anyway)
        // `reserve` reclaims its room, so steady traffic allocates nothing.
        // It is allocated on the first data and released when the tunnel
        // goes idle long enough to be pinged, so idle connections hold none.
        let mut buf = BytesMut::from(replay);
        if !buf.is_empty() {
            self.send_up(&mut buf).await?;
            flush(self.sink, self.activity).await?;
        }
        loop {
            if self.room() == Some(0) {
                self.await_confirmation().await?;
            }
            tokio::select! {
                biased;
                () = self.ping_wanted.notified() => {
                    buf = BytesMut::new();
                    ping(self.sink).await?;
                    continue;
                }
                ready = reader.ready() => ready.map_err(PumpError::Client)?,
            }
            // Read a burst: feed each chunk as frames and flush only when the
            // client has nothing more right now, so bulk data is batched and
            // interactive data goes out at once. The first read is awaited (a
            // reader without readiness, like the Connect pipe, blocks there),
            // the rest only taken if immediately available.
            let mut fed = false;
            loop {
                let room = self.room();
                if room == Some(0) {
                    break;
                }
                buf.reserve(READ_CHUNK);
                let read = if fed {
                    match read_some(&mut reader, &mut buf, room).now_or_never() {
                        Some(read) => read,
                        None => break,
                    }
                } else {
                    tokio::select! {
                        biased;
                        () = self.ping_wanted.notified() => {
                            ping(self.sink).await?;
                            continue;
                        }
                        read = read_some(&mut reader, &mut buf, room) => read,
                    }
                };
                match read.map_err(PumpError::Client)? {
                    0 => {
                        if fed {
                            flush(self.sink, self.activity).await?;
                        }
                        linger(self.sink, self.ping_wanted, self.activity, self.options).await?;
                        self.sink
                            .send(Message::Close(None))
                            .await
                            .map_err(PumpError::Tunnel)?;
                        return Ok(());
                    }
                    n => {
                        for meter in self.meters {
                            meter.up.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        self.send_up(&mut buf).await?;
                        fed = true;
                        // A long upload to a quiet target still answers keepalives.
                        if self.ping_wanted.notified().now_or_never().is_some() {
                            ping(self.sink).await?;
                        }
                    }
                }
            }
            if fed {
                flush(self.sink, self.activity).await?;
            }
        }
    }

    /// How many client bytes may go up now: any number once the tunnel is
    /// confirmed, else what is left of the replay budget. With pings off
    /// nothing could confirm a tunnel to a target that only listens (an
    /// upload): the client is never held then, as before the budget existed.
    fn room(&self) -> Option<usize> {
        let pings = self.options.keepalive.interval.is_some();
        (pings && !self.activity.confirmed()).then(|| self.held.lock().room())
    }

    /// Holds the client while the tunnel has its replay budget's worth and
    /// no frame yet: pings at once, so a working Bastion answers within a
    /// round trip; a failing one ends the pump from downstream meanwhile.
    async fn await_confirmation(&mut self) -> Result<(), PumpError> {
        ping(self.sink).await?;
        loop {
            tokio::select! {
                biased;
                () = self.confirmed.notified() => return Ok(()),
                () = self.ping_wanted.notified() => ping(self.sink).await?,
            }
        }
    }

    /// Feeds all of `buf` as frames of at most `max_frame` bytes.
    async fn send_up(&mut self, buf: &mut BytesMut) -> Result<(), PumpError> {
        self.held.lock().keep(buf, self.activity.confirmed());
        self.activity.commit();
        while !buf.is_empty() {
            let frame = buf.split_to(buf.len().min(self.options.max_frame));
            self.activity.set_sending(true);
            let fed = self.sink.feed(Message::Binary(frame.freeze())).await;
            self.activity.set_sending(false);
            fed.map_err(PumpError::Tunnel)?;
        }
        Ok(())
    }
}

/// Reads what the client has into `buf`, at most `room` bytes if given.
async fn read_some<R: ClientRead>(
    reader: &mut R,
    buf: &mut BytesMut,
    room: Option<usize>,
) -> std::io::Result<usize> {
    match room {
        None => reader.read_buf(buf).await,
        Some(room) => reader.read_buf(&mut (&mut *buf).limit(room)).await,
    }
}

/// Writes out what was fed; a wait here is back-pressure, not silence.
async fn flush<S>(sink: &mut Sink<S>, activity: &Activity) -> Result<(), PumpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    activity.set_sending(true);
    let flushed = sink.flush().await;
    activity.set_sending(false);
    flushed.map_err(PumpError::Tunnel)
}

/// Waits, after the client's EOF, until the target has been quiet for
/// `eof_linger` (at most [`EOF_MAX_LINGER`]), still answering keepalives.
async fn linger<S>(
    sink: &mut Sink<S>,
    ping_wanted: &Notify,
    activity: &Activity,
    options: &PumpOptions,
) -> Result<(), PumpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let eof_at = Instant::now();
    // A target still talking keeps the tunnel this long at most, or the
    // linger itself if the user asked for a longer one.
    let give_up = eof_at + EOF_MAX_LINGER.max(options.eof_linger);
    loop {
        let deadline = (activity.last_data().max(eof_at) + options.eof_linger).min(give_up);
        if Instant::now() >= deadline {
            return Ok(());
        }
        tokio::select! {
            () = ping_wanted.notified() => ping(sink).await?,
            () = sleep_until(deadline) => {}
        }
    }
}

/// Sends a ping (written out at once: it must not wait for a burst).
async fn ping<S>(sink: &mut Sink<S>) -> Result<(), PumpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    sink.send(Message::Ping(Default::default()))
        .await
        .map_err(PumpError::Tunnel)
}

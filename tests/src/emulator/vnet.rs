//! The private VNet every bastion reaches: fixed IPs mapped to local services (echo,
//! sink, source, refusing), the managed clusters' private endpoints and anything a
//! test adds with `map_target`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const ECHO_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 4);
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
pub const SOURCE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 6);
pub const REFUSING_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 9);

/// Big enough that bulk transfers are not syscall-bound.
const SERVICE_BUF: usize = 64 * 1024;
/// Sink and source start with a "<N>\n" line: a u64 fits in far less.
const MAX_COUNT_LINE: u64 = 32;
/// The source pattern repeats every 251 bytes (byte i = (i * 31 + 7) % 251).
const PATTERN_PERIOD: usize = 251;

/// The real TCP listeners behind the fixed VNet IPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    pub echo: SocketAddr,
    pub sink: SocketAddr,
    pub source: SocketAddr,
}

/// Where a tunnel to a VNet address goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    Connect(SocketAddr),
    /// Known host, nothing listening: the tunnel closes right after the upgrade.
    Refuse,
}

pub(crate) struct Vnet {
    services: Services,
    mapped: Mutex<HashMap<(IpAddr, u16), SocketAddr>>,
}

impl Vnet {
    /// Binds and serves echo, sink and source on 127.0.0.1 with OS-chosen ports.
    pub(crate) async fn start(
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> io::Result<Self> {
        let echo = serve(tracker, cancel, Service::Echo).await?;
        let sink = serve(tracker, cancel, Service::Sink).await?;
        let source = serve(tracker, cancel, Service::Source).await?;
        Ok(Self {
            services: Services { echo, sink, source },
            mapped: Mutex::default(),
        })
    }

    pub(crate) fn services(&self) -> Services {
        self.services
    }

    pub(crate) fn map(&self, ip: IpAddr, port: u16, to: SocketAddr) {
        self.lock().insert((ip, port), to);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, u16), SocketAddr>> {
        self.mapped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// None: the address is not reachable from the bastion.
    pub(crate) fn route(&self, ip: IpAddr, port: u16) -> Option<Route> {
        if let Some(to) = self.lock().get(&(ip, port)) {
            return Some(Route::Connect(*to));
        }
        match ip {
            IpAddr::V4(v4) if v4 == ECHO_IP => Some(Route::Connect(self.services.echo)),
            IpAddr::V4(v4) if v4 == SINK_IP => Some(Route::Connect(self.services.sink)),
            IpAddr::V4(v4) if v4 == SOURCE_IP => Some(Route::Connect(self.services.source)),
            IpAddr::V4(v4) if v4 == REFUSING_IP => Some(Route::Refuse),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Service {
    Echo,
    Sink,
    Source,
}

async fn serve(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    service: Service,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    accept_loop(listener, tracker, cancel, move |stream| async move {
        if let Err(e) = handle(service, stream).await {
            tracing::debug!(?service, error = %e, "service connection ended");
        }
    });
    Ok(addr)
}

/// Serves each connection `listener` accepts with `on_conn`, in a task of
/// `tracker`, until `cancel` (which also ends the connections in flight).
pub(crate) fn accept_loop<F, Fut>(
    listener: TcpListener,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    on_conn: F,
) where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (t, c) = (tracker.clone(), cancel.clone());
    tracker.spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = c.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                },
            };
            let (c, conn) = (c.clone(), on_conn(stream));
            t.spawn(async move {
                tokio::select! {
                    _ = c.cancelled() => {}
                    () = conn => {}
                }
            });
        }
    });
}

async fn handle(service: Service, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    match service {
        Service::Echo => {
            let (r, mut w) = stream.split();
            let mut r = BufReader::with_capacity(SERVICE_BUF, r);
            tokio::io::copy_buf(&mut r, &mut w).await?;
            w.shutdown().await
        }
        Service::Sink => {
            // Length-prefixed rather than "until EOF": a Bastion tunnel cannot carry a
            // half-close, so a client behind one could never get the answer otherwise.
            let mut reader = BufReader::with_capacity(SERVICE_BUF, &mut stream);
            let mut left = read_count(&mut reader, "sink").await?;
            let total = left;
            let mut hasher = Sha256::new();
            while left > 0 {
                let chunk = reader.fill_buf().await?;
                if chunk.is_empty() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                hasher.update(&chunk[..n]);
                reader.consume(n);
                left -= n as u64;
            }
            let line = format!("{total} {}\n", hex::encode(hasher.finalize()));
            stream.write_all(line.as_bytes()).await?;
            stream.shutdown().await
        }
        Service::Source => {
            let mut left = read_count(&mut BufReader::new(&mut stream), "source").await?;
            let pattern = pattern_block();
            let mut offset = 0;
            while left > 0 {
                let n = usize::try_from(left).map_or(SERVICE_BUF, |l| l.min(SERVICE_BUF));
                stream.write_all(&pattern[offset..offset + n]).await?;
                offset = (offset + n) % PATTERN_PERIOD;
                left -= n as u64;
            }
            stream.shutdown().await
        }
    }
}

/// Reads the "<N>\n" line that sink and source start with.
async fn read_count(reader: &mut (impl AsyncBufRead + Unpin), service: &str) -> io::Result<u64> {
    let mut line = String::new();
    reader.take(MAX_COUNT_LINE).read_line(&mut line).await?;
    line.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{service} wants \"<N>\\n\""),
        )
    })
}

/// The source pattern, long enough to slice any chunk from any phase without per-byte work.
fn pattern_block() -> Vec<u8> {
    (0..SERVICE_BUF + PATTERN_PERIOD)
        .map(|i| source_byte(i as u64))
        .collect()
}

/// Byte `i` of what the source service sends (tests check against it).
pub fn source_byte(i: u64) -> u8 {
    ((i * 31 + 7) % 251) as u8
}

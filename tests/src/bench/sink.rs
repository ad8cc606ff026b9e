//! An upload sink that knows where the upload ends. The emulator's sink
//! (10.1.0.5) answers "<bytes> <sha256>" at EOF, but the Bastion protocol has
//! no half-close: a tunnel cannot carry the client's EOF and still bring the
//! answer back (the Close frame ends both directions). This one reads "<N>\n",
//! then N bytes, answers "<N> <sha256-hex>\n" and closes, so uploads through
//! every path are timed and checksummed alike. The bench maps it into the VNet.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the sink appears in the emulator's VNet: free next to the fixed
/// services (10.1.0.4 echo, .5 sink, .6 source).
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 7);
/// The discard port, for the reader of a forward list.
pub const SINK_PORT: u16 = 9;
/// The size line is "<N>\n": a u64 fits in far less.
const MAX_LINE: u64 = 32;
/// Reads as big as the tunnels' frames.
const READ_BUF: usize = 64 * 1024;

/// Serves the sink on 127.0.0.1 (OS-chosen port) until `cancel`.
pub async fn start(tracker: &TaskTracker, cancel: &CancellationToken) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (tasks, cancel) = (tracker.clone(), cancel.clone());
    tracker.spawn(async move {
        loop {
            let stream = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => { tracing::warn!(error = %e, "sink accept failed"); continue; }
                },
            };
            let cancel = cancel.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    served = serve(stream) => if let Err(e) = served {
                        tracing::debug!(error = %e, "sink connection ended");
                    },
                }
            });
        }
    });
    Ok(addr)
}

async fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(READ_BUF, reader);
    let mut line = String::new();
    (&mut reader).take(MAX_LINE).read_line(&mut line).await?;
    let want: u64 = line
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "sink wants \"<N>\\n\""))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while got < want {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        let n = buf
            .len()
            .min(usize::try_from(want - got).unwrap_or(usize::MAX));
        hasher.update(&buf[..n]);
        reader.consume(n);
        got += n as u64;
    }
    let answer = format!("{got} {}\n", hex::encode(hasher.finalize()));
    writer.write_all(answer.as_bytes()).await?;
    writer.shutdown().await
}

//! `connect`: stdin/stdout joined to a target through the daemon's Connect
//! stream, for ssh's `ProxyCommand bastionctl connect %h:%p`.
//!
//! stdout carries the target's bytes and nothing else: diagnostics go to
//! stderr. Stdin EOF is passed on as a half-close (`eof`) and the target's
//! output is still copied until it ends too: ssh relies on that. The
//! target's `eof` ends the command (the tunnel has no half-close).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bastion_proto::v1::connect_request::Msg as Up;
use bastion_proto::v1::connect_response::Msg as Down;
use bastion_proto::v1::{ConnectOpen, ConnectRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::ConnectArgs;
use crate::daemon::{self, rpc_error};
use crate::stdio;

/// One read of stdin becomes one `data` message: large enough for bulk
/// copies, far below tonic's 4 MiB message limit.
const STDIN_CHUNK: usize = 64 * 1024;
/// Messages queued towards the daemon; a small bound lets a slow tunnel
/// push back on our stdin reads instead of buffering the whole input.
const OUTBOUND_QUEUE: usize = 4;
/// After the target's `eof`, how long the daemon gets to end the RPC before
/// we exit anyway: everything it had for stdout has been written already.
const FINISH_GRACE: Duration = Duration::from_secs(2);

pub async fn run(socket: Option<PathBuf>, args: ConnectArgs) -> anyhow::Result<()> {
    let (stdin, mut stdout, _restore) = stdio::open().context("cannot set up stdin and stdout")?;
    let mut client = daemon::connect(socket).await?;
    let (up_tx, up_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let open = ConnectOpen {
        target: Some(args.target.into()),
        bastion: args.via.bastion.unwrap_or_default(),
        resource_group: args.via.resource_group.unwrap_or_default(),
    };
    up_tx
        .send(request(Up::Open(open)))
        .await
        .context("cannot queue the open request")?;
    let stdin_pump = tokio::spawn(pump_stdin(stdin, up_tx));
    tokio::pin!(stdin_pump);
    let mut stdin_done = false;
    // Set once the target has finished: the end of the RPC is awaited no longer.
    let mut finish_by = None;

    let mut inbound = client
        .connect(ReceiverStream::new(up_rx))
        .await
        .map_err(rpc_error)?
        .into_inner();
    loop {
        let message = tokio::select! {
            pumped = &mut stdin_pump, if !stdin_done => {
                stdin_done = true;
                pumped.context("the stdin reader failed")??;
                continue;
            }
            () = sleep_until_some(finish_by) => break,
            message = inbound.message() => message.map_err(rpc_error)?,
        };
        let Some(message) = message else { break };
        match message.msg {
            Some(Down::Data(bytes)) => {
                stdout
                    .write_all(&bytes)
                    .await
                    .context("cannot write to stdout")?;
                stdout.flush().await.context("cannot write to stdout")?;
            }
            Some(Down::Eof(_)) => {
                // The tunnel has no half-close: the target is done, so are
                // we. Ending our request stream lets the daemon end the RPC.
                stdin_pump.abort();
                stdin_done = true;
                finish_by = Some(Instant::now() + FINISH_GRACE);
            }
            Some(Down::Opened(_)) | None => {}
        }
    }
    Ok(())
}

/// Copies stdin to the daemon, then sends `eof` and holds the request
/// stream open while the target may still answer.
async fn pump_stdin(
    mut stdin: stdio::Input,
    up: mpsc::Sender<ConnectRequest>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        let n = stdin.read(&mut buf).await.context("cannot read stdin")?;
        let message = if n == 0 {
            Up::Eof(true)
        } else {
            Up::Data(buf[..n].to_vec())
        };
        if up.send(request(message)).await.is_err() {
            // The stream is over; the response side reports why.
            return Ok(());
        }
        if n == 0 {
            break;
        }
    }
    up.closed().await;
    Ok(())
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn request(msg: Up) -> ConnectRequest {
    ConnectRequest { msg: Some(msg) }
}

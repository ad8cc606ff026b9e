//! The `Connect` RPC's stream (`bastionctl connect`, ssh's ProxyCommand):
//! the gRPC messages adapted to a byte stream through an in-memory pipe, so
//! a stdio connection shares all tunnel logic (setup retries, replacement of
//! a tunnel that failed before carrying anything, keepalive) with forwards.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bastion_proto::target::Target;
use bastion_proto::v1::{self as proto, connect_request, connect_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::bastion::tunnel::Tunnel;
use crate::forwards::destination::target_proto;
use crate::relay::connection::{self, ConnectionError, Route};
use crate::relay::pump::Traffic;
use crate::shared::Shared;

/// Bytes buffered between a `Connect` stream and its tunnel in each direction.
const CONNECT_BUFFER: usize = 256 * 1024;
/// gRPC messages queued towards a `Connect` client before the pump waits.
const CONNECT_QUEUE: usize = 16;
/// Largest data message sent to a `Connect` client (gRPC's default limit is 4 MiB).
const CONNECT_CHUNK: usize = 64 * 1024;

type Outbound = mpsc::Sender<Result<proto::ConnectResponse, Status>>;

/// Starts a `Connect` stream to `target`: the tunnel is opened (with setup
/// retries) by a task the daemon owns; the client first sees `opened`, or
/// the error status that says why not.
pub fn start(
    shared: &Arc<Shared>,
    bastion: String,
    target: Target,
    inbound: Streaming<proto::ConnectRequest>,
) -> ReceiverStream<Result<proto::ConnectResponse, Status>> {
    let (tx, rx) = mpsc::channel(CONNECT_QUEUE);
    let id = shared.next_connection_id();
    let span = tracing::info_span!("conn", id, peer = "connect", %target);
    let task = run(shared.clone(), bastion, target, inbound, tx, id);
    shared.tasks.spawn(task.instrument(span));
    ReceiverStream::new(rx)
}

async fn run(
    shared: Arc<Shared>,
    bastion: String,
    target: Target,
    inbound: Streaming<proto::ConnectRequest>,
    tx: Outbound,
    id: u64,
) {
    let connector = shared.connector();
    let cancel = shared.shutdown.child_token();
    let mut setup = connector.setup(vec![shared.setup_retries.clone()]);
    let route = Route {
        connector: &connector,
        bastion: &bastion,
        target: &target,
    };
    let opened = tokio::select! {
        () = cancel.cancelled() => return,
        opened = connector.open(&bastion, &target, &mut setup) => opened,
    };
    let tunnel = match opened {
        Ok(tunnel) => tunnel,
        Err(error) => {
            tracing::warn!(%error, "cannot open a tunnel for Connect");
            let _ = tx.send(Err(Status::from(error))).await;
            return;
        }
    };
    let _ = tx
        .send(Ok(message(connect_response::Msg::Opened(true))))
        .await;
    let event = |active, traffic: &Traffic, error: String| proto::ConnectionEvent {
        connection_id: id,
        peer: "connect".into(),
        target: Some(target_proto(&target)),
        active_connections: active,
        bytes_up: traffic.up.load(Ordering::Relaxed),
        bytes_down: traffic.down.load(Ordering::Relaxed),
        error,
        ..Default::default()
    };
    let traffic = Traffic::default();
    let active = shared.streams_active.fetch_add(1, Ordering::Relaxed) + 1;
    shared
        .events
        .connection_opened(event(active, &traffic, String::new()));
    let result = bridge(inbound, &tx, &route, tunnel, &mut setup, &traffic, &cancel).await;
    let error = match result {
        Ok(()) => {
            let _ = tx.send(Ok(message(connect_response::Msg::Eof(true)))).await;
            String::new()
        }
        Err(e) => {
            tracing::info!(error = %e, "Connect stream failed");
            let text = e.to_string();
            let _ = tx.send(Err(Status::unavailable(text.clone()))).await;
            text
        }
    };
    let active = shared.streams_active.fetch_sub(1, Ordering::Relaxed) - 1;
    shared
        .events
        .connection_closed(event(active, &traffic, error));
}

fn message(msg: connect_response::Msg) -> proto::ConnectResponse {
    proto::ConnectResponse { msg: Some(msg) }
}

/// Carries the connection with the gRPC stream adapted to a byte stream (a
/// duplex pipe).
async fn bridge(
    mut inbound: Streaming<proto::ConnectRequest>,
    tx: &Outbound,
    route: &Route<'_>,
    tunnel: Tunnel,
    setup: &mut crate::bastion::setup::Setup,
    traffic: &Traffic,
    cancel: &CancellationToken,
) -> Result<(), ConnectionError> {
    let (ours, theirs) = tokio::io::duplex(CONNECT_BUFFER);
    let (their_read, their_write) = tokio::io::split(theirs);
    let (mut our_read, mut our_write) = tokio::io::split(ours);
    let meters = [traffic];
    let tunnel = connection::carry(
        route,
        tunnel,
        setup,
        their_read,
        their_write,
        &meters,
        cancel,
    );
    // Client messages → pipe. Ends at the client's EOF; a broken stream cancels the tunnel.
    let from_client = async {
        loop {
            let msg = match inbound.message().await {
                Ok(Some(request)) => request.msg,
                Ok(None) => Some(connect_request::Msg::Eof(true)),
                Err(status) => {
                    tracing::debug!(%status, "Connect client went away");
                    cancel.cancel();
                    return;
                }
            };
            let data = match msg {
                Some(connect_request::Msg::Data(data)) => data,
                Some(connect_request::Msg::Eof(_)) => {
                    let _ = our_write.shutdown().await;
                    return;
                }
                _ => continue,
            };
            if our_write.write_all(&data).await.is_err() {
                return;
            }
        }
    };
    // Pipe → client messages, until the tunnel's EOF.
    let to_client = async {
        loop {
            let mut buf = Vec::with_capacity(CONNECT_CHUNK);
            match our_read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx
                        .send(Ok(message(connect_response::Msg::Data(buf))))
                        .await
                        .is_err()
                    {
                        cancel.cancel();
                        return;
                    }
                }
            }
        }
    };
    let transfer = async {
        tokio::pin!(tunnel);
        tokio::select! {
            result = &mut tunnel => result,
            () = from_client => tunnel.await,
        }
    };
    let (result, ()) = tokio::join!(transfer, to_client);
    result
}

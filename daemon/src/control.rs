//! The gRPC control service (`bastion.v1.Control`) on the Unix socket.
//! Every call is checked against the daemon's uid (SO_PEERCRED) first.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bastion_proto::v1::control_server::Control;
use bastion_proto::v1::{self as proto, connect_request, connect_response, event::Kind};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream, errors::BroadcastStreamRecvError};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::error_body::printable;
use crate::forward::target_proto;
use crate::forwards::Forwards;
use crate::keepalive::Keepalive;
use crate::pump::{self, PumpError, Traffic};
use crate::shared::Shared;
use bastion_proto::target::Target;

/// Bytes buffered between a `Connect` stream and its tunnel in each direction.
const CONNECT_BUFFER: usize = 256 * 1024;
/// gRPC messages queued towards a `Connect` client before the pump waits.
const CONNECT_QUEUE: usize = 16;
/// Largest data message sent to a `Connect` client (gRPC's default limit is 4 MiB).
const CONNECT_CHUNK: usize = 64 * 1024;

/// Refuses callers that are not the daemon's own user.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn check_peer(request: Request<()>) -> Result<Request<()>, Status> {
    let uid = nix::unistd::getuid().as_raw();
    match request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
    {
        Some(cred) if cred.uid() == uid => Ok(request),
        Some(cred) => Err(Status::permission_denied(format!(
            "uid {} may not control the bastiond of uid {uid}",
            cred.uid()
        ))),
        None => Err(Status::permission_denied(
            "cannot identify the caller (SO_PEERCRED)",
        )),
    }
}

pub struct ControlService {
    shared: Arc<Shared>,
    forwards: Arc<Forwards>,
    config_file: PathBuf,
}

impl ControlService {
    pub fn new(
        shared: Arc<Shared>,
        forwards: Arc<Forwards>,
        config_file: PathBuf,
    ) -> ControlService {
        ControlService {
            shared,
            forwards,
            config_file,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn add_forward(
        &self,
        request: Request<proto::AddForwardRequest>,
    ) -> Result<Response<proto::AddForwardResponse>, Status> {
        let forward = self.forwards.add(request.into_inner()).await?;
        tracing::info!(forward = %forward.name, "added forward");
        Ok(Response::new(proto::AddForwardResponse {
            forward: Some(forward),
        }))
    }

    async fn list_forwards(
        &self,
        _request: Request<proto::ListForwardsRequest>,
    ) -> Result<Response<proto::ListForwardsResponse>, Status> {
        let forwards = self.forwards.protos();
        Ok(Response::new(proto::ListForwardsResponse { forwards }))
    }

    async fn remove_forward(
        &self,
        request: Request<proto::RemoveForwardRequest>,
    ) -> Result<Response<proto::RemoveForwardResponse>, Status> {
        let forward = self.forwards.remove(&request.into_inner().selector).await?;
        Ok(Response::new(proto::RemoveForwardResponse {
            forward: Some(forward),
        }))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        Ok(Response::new(crate::status::status(
            &self.shared,
            &self.forwards,
            &self.config_file,
        )))
    }

    async fn reload(
        &self,
        _request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let changes = crate::reload::reload(&self.shared, &self.forwards, &self.config_file)
            .await
            .map_err(|e| Status::failed_precondition(format!("{e:#}")))?;
        Ok(Response::new(proto::ReloadResponse { changes }))
    }

    type WatchStream = BoxStream<proto::Event>;

    async fn watch(
        &self,
        _request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let events = BroadcastStream::new(self.shared.events.subscribe()).map(|item| match item {
            Ok(event) => Ok(event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Ok(proto::Event {
                at_ms: bastion_proto::time::now_ms(),
                kind: Some(Kind::Notice(format!(
                    "this watcher fell behind and missed {missed} events; call ListForwards for a fresh snapshot"
                ))),
            }),
        });
        // Watchers must not hold the daemon up at shutdown.
        let stream = events.take_until(self.shared.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    type ConnectStream = BoxStream<proto::ConnectResponse>;

    async fn connect(
        &self,
        request: Request<Streaming<proto::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let open = match inbound.message().await?.and_then(|m| m.msg) {
            Some(connect_request::Msg::Open(open)) => open,
            _ => {
                return Err(Status::invalid_argument(
                    "the first Connect message must be `open`",
                ));
            }
        };
        let target = open
            .target
            .ok_or_else(|| Status::invalid_argument("`open` needs a target"))?;
        let target = Target::from_parts(&target.host, target.port)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let bastion = self.forwards.bastion_for(&open.bastion)?;
        let connector = self.shared.connector();
        let id = self.shared.next_connection_id();
        let span = tracing::info_span!("conn", id, peer = "connect", %target);
        let tunnel = connector
            .open(&bastion, &target)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                tracing::warn!(parent: &span, error = %e, "cannot open a tunnel for Connect");
                Status::from(e)
            })?;
        let (tx, rx) = mpsc::channel(CONNECT_QUEUE);
        let _ = tx
            .send(Ok(proto::ConnectResponse {
                msg: Some(connect_response::Msg::Opened(true)),
            }))
            .await;
        let keepalive = connector.keepalive();
        let shared = self.shared.clone();
        let event =
            move |active, traffic: Option<&Traffic>, error: String| proto::ConnectionEvent {
                connection_id: id,
                peer: "connect".into(),
                target: Some(target_proto(&target)),
                active_connections: active,
                bytes_up: traffic.map_or(0, |t| t.up.load(Ordering::Relaxed)),
                bytes_down: traffic.map_or(0, |t| t.down.load(Ordering::Relaxed)),
                error,
                ..Default::default()
            };
        let active = shared.streams_active.fetch_add(1, Ordering::Relaxed) + 1;
        shared
            .events
            .connection_opened(event(active, None, String::new()));
        let task = async move {
            let traffic = Traffic::default();
            let cancel = shared.shutdown.child_token();
            let result = bridge(inbound, &tx, tunnel.socket, keepalive, &traffic, &cancel).await;
            drop(tunnel.session);
            let error = match result {
                Ok(()) => {
                    let _ = tx
                        .send(Ok(proto::ConnectResponse {
                            msg: Some(connect_response::Msg::Eof(true)),
                        }))
                        .await;
                    String::new()
                }
                Err(e) => {
                    tracing::info!(error = %e, "Connect stream failed");
                    // A Close reason is the Bastion's text: printable only.
                    let text = printable(&e.to_string());
                    let _ = tx.send(Err(Status::unavailable(text.clone()))).await;
                    text
                }
            };
            let active = shared.streams_active.fetch_sub(1, Ordering::Relaxed) - 1;
            shared
                .events
                .connection_closed(event(active, Some(&traffic), error));
        };
        self.shared.tasks.spawn(task.instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Runs the pump with the gRPC stream adapted to a byte stream (a duplex
/// pipe), so `Connect` shares all tunnel logic with forwards.
async fn bridge(
    mut inbound: Streaming<proto::ConnectRequest>,
    tx: &mpsc::Sender<Result<proto::ConnectResponse, Status>>,
    socket: crate::websocket::TunnelSocket,
    keepalive: Keepalive,
    traffic: &Traffic,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), PumpError> {
    let (ours, theirs) = tokio::io::duplex(CONNECT_BUFFER);
    let (their_read, their_write) = tokio::io::split(theirs);
    let (mut our_read, mut our_write) = tokio::io::split(ours);
    let meters = [traffic];
    let tunnel = pump::pump(their_read, their_write, socket, keepalive, &meters, cancel);
    // Client messages → pipe. Ends at the client's EOF; a broken stream cancels the tunnel.
    let from_client = async {
        loop {
            match inbound.message().await {
                Ok(Some(proto::ConnectRequest {
                    msg: Some(connect_request::Msg::Data(data)),
                })) => {
                    if our_write.write_all(&data).await.is_err() {
                        return;
                    }
                }
                Ok(Some(proto::ConnectRequest {
                    msg: Some(connect_request::Msg::Eof(_)),
                }))
                | Ok(None) => {
                    let _ = our_write.shutdown().await;
                    return;
                }
                Ok(Some(_)) => {}
                Err(status) => {
                    tracing::debug!(%status, "Connect client went away");
                    cancel.cancel();
                    return;
                }
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
                    let message = proto::ConnectResponse {
                        msg: Some(connect_response::Msg::Data(buf)),
                    };
                    if tx.send(Ok(message)).await.is_err() {
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

//! The gRPC control service (`bastion.v1.Control`) on the Unix socket.
//! Every call is checked against the daemon's uid (SO_PEERCRED) first.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bastion_proto::target::{Target, TargetHost};
use bastion_proto::v1::control_server::Control;
use bastion_proto::v1::{self as proto, connect_request, event::Kind};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status, Streaming};

use crate::forwards::destination::target_proto;
use crate::forwards::set::Forwards;
use crate::shared::Shared;

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

/// The target a request carries, parsed; `who` names the request in the error.
#[allow(clippy::result_large_err)] // tonic's Status, as every handler returns
fn required_target(target: Option<&proto::Target>, who: &str) -> Result<Target, Status> {
    let target = target.ok_or_else(|| Status::invalid_argument(format!("{who} needs a target")))?;
    Target::from_parts(&target.host, target.port)
        .map_err(|e| Status::invalid_argument(e.to_string()))
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
        let mut request = request.into_inner();
        if let Some(target) = &request.target {
            let parsed = required_target(Some(target), "the forward")?;
            if matches!(parsed.host, TargetHost::Name(_)) {
                let bastion = self.forwards.bastion_for(&request.bastion)?;
                let resolved = crate::control::names::resolve(
                    &self.shared,
                    &bastion,
                    parsed,
                    &request.resource_group,
                )
                .await?;
                request.target = Some(target_proto(&resolved));
                request.bastion = bastion;
            }
        }
        let forward = self.forwards.add(request).await?;
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
        Ok(Response::new(crate::control::status::status(
            &self.shared,
            &self.forwards,
            &self.config_file,
        )))
    }

    async fn reload(
        &self,
        _request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let changes =
            crate::control::reload::reload(&self.shared, &self.forwards, &self.config_file)
                .await
                // A settings file to fix, not a refusal by Azure.
                .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
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
        let target = required_target(open.target.as_ref(), "`open`")?;
        let bastion = self.forwards.bastion_for(&open.bastion)?;
        let target =
            crate::control::names::resolve(&self.shared, &bastion, target, &open.resource_group)
                .await?;
        let stream = crate::control::connect::start(&self.shared, bastion, target, inbound);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn doctor(
        &self,
        request: Request<proto::DoctorRequest>,
    ) -> Result<Response<proto::DoctorResponse>, Status> {
        let request = request.into_inner();
        let target = required_target(request.target.as_ref(), "doctor")?;
        let bastion = self.forwards.bastion_for(&request.bastion)?;
        // On the daemon's tasks: a caller that goes away does not cut the
        // run between the session's creation and its DELETE.
        let run = crate::control::doctor::run(
            self.shared.connector(),
            bastion,
            target,
            request.resource_group,
        );
        let report = self
            .shared
            .tasks
            .spawn(run)
            .await
            .map_err(|e| Status::internal(format!("doctor failed: {e}")))?;
        Ok(Response::new(report))
    }

    async fn discover_bastions(
        &self,
        _request: Request<proto::DiscoverBastionsRequest>,
    ) -> Result<Response<proto::DiscoverBastionsResponse>, Status> {
        let connector = self.shared.connector();
        let response = crate::control::discover::discover(&connector).await?;
        Ok(Response::new(response))
    }

    async fn cluster_credentials(
        &self,
        request: Request<proto::ClusterCredentialsRequest>,
    ) -> Result<Response<proto::ClusterCredentialsResponse>, Status> {
        let response = crate::control::clusters::credentials(
            &self.shared,
            &self.forwards,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(response))
    }
}

//! One forward: a local listener whose every accepted connection becomes a
//! Bastion tunnel to the forward's target, or, for a SOCKS5 listener, to the
//! target its client names ([`socks`](crate::forwards::socks)). Holds the
//! forward's state and counters. A listener that cannot be bound (port
//! taken after a restart) is retried every [`BIND_RETRY_INTERVAL`] while the
//! forward shows `error`.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use bastion_proto::v1::{self as proto, ForwardState};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bastion::setup::{Counter, Setup};
use crate::bastion::tunnel::{Connector, Tunnel};
use crate::error::AzureError;
use crate::forwards::destination::{Destination, target_proto};
use crate::forwards::peer_owner::OwnerGate;
use crate::forwards::socks;
use crate::forwards::spec::ForwardSpec;
use crate::relay::client_socket::{close_gracefully, tune_socket};
use crate::relay::connection::{self, ConnectionError, Route};
use crate::relay::pump::{PumpError, Traffic};
use crate::shared::Shared;
use bastion_proto::target::{Target, TargetHost};
use bastion_proto::time::now_ms;

/// How often a forward whose port was taken tries to bind again.
pub const BIND_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after accept() fails for lack of resources (EMFILE, ENOBUFS…), so
/// the loop does not spin while the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// Connections the kernel holds for a forward until they are accepted: a
/// burst (many IDE windows, a parallel deploy, a flood being turned away)
/// beyond std's 128 would otherwise leave clients half-connected, waiting
/// for a SYN-ACK retransmission. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;
/// How long removing a forward waits for its listener to be closed, so the
/// port is free when the RPC answers.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds a forward's listener (SO_REUSEADDR, as std does, so a restart
/// finds its port free of the last run's TIME_WAIT connections).
pub fn bind(local: SocketAddr) -> io::Result<TcpListener> {
    let socket = match local {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(local)?;
    socket.listen(LISTEN_BACKLOG)
}

struct Status {
    state: ForwardState,
    last_error: Option<(String, i64)>,
}

pub struct Forward {
    pub spec: ForwardSpec,
    shared: Arc<Shared>,
    traffic: Traffic,
    active: AtomicU64,
    total: AtomicU64,
    /// Tunnels set up again after a transient failure, unseen by clients.
    setup_retries: Counter,
    owners: OwnerGate,
    status: Mutex<Status>,
    cancel: CancellationToken,
    listener_task: Mutex<Option<JoinHandle<()>>>,
}

impl Forward {
    /// Starts serving `spec`; with no listener (bind failed), starts in the
    /// error state and keeps retrying.
    pub fn start(
        spec: ForwardSpec,
        listener: Result<TcpListener, io::Error>,
        shared: &Arc<Shared>,
    ) -> Arc<Forward> {
        let (state, last_error, listener) = match listener {
            Ok(listener) => (ForwardState::Listening, None, Some(listener)),
            Err(e) => (
                ForwardState::Error,
                Some((bind_error(spec.local, &e), now_ms())),
                None,
            ),
        };
        let forward = Arc::new(Forward {
            spec,
            shared: shared.clone(),
            traffic: Traffic::default(),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            setup_retries: Counter::default(),
            owners: OwnerGate::default(),
            status: Mutex::new(Status { state, last_error }),
            cancel: shared.shutdown.child_token(),
            listener_task: Mutex::new(None),
        });
        let span = tracing::info_span!("forward", name = %forward.spec.name);
        let task = shared
            .tasks
            .spawn(forward.clone().run(listener).instrument(span));
        *forward.listener_task.lock() = Some(task);
        forward
    }

    /// Closes the listener and every live connection; returns once the
    /// listener is closed (bounded).
    pub async fn stop(&self) {
        self.lock().state = ForwardState::Stopping;
        self.cancel.cancel();
        let task = self.listener_task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
        }
    }

    pub fn state(&self) -> ForwardState {
        self.lock().state
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn to_proto(&self) -> proto::Forward {
        let status = self.lock();
        let (last_error, last_error_at_ms) = status.last_error.clone().unwrap_or_default();
        proto::Forward {
            id: self.spec.id.clone(),
            name: self.spec.name.clone(),
            bastion: self.spec.bastion.clone(),
            target: Some(self.spec.target.to_proto()),
            bind_address: self.spec.local.ip().to_string(),
            local_port: u32::from(self.spec.local.port()),
            state: status.state.into(),
            active_connections: self.active.load(Ordering::Relaxed),
            total_connections: self.total.load(Ordering::Relaxed),
            bytes_up: self.traffic.up.load(Ordering::Relaxed),
            bytes_down: self.traffic.down.load(Ordering::Relaxed),
            last_error,
            created_at_ms: self.spec.created_at_ms,
            last_error_at_ms,
            setup_retries: self.setup_retries.get(),
            refused_connections: self.owners.refused(),
            allow_other_users: self.spec.allow_other_users,
            source: self.spec.source.as_str().to_owned(),
            socks5: self.spec.target.is_socks5(),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Status> {
        self.status.lock()
    }

    fn set_status(&self, state: ForwardState, error: Option<String>) {
        {
            let mut status = self.lock();
            if status.state == ForwardState::Stopping {
                return;
            }
            status.state = state;
            if let Some(error) = error {
                status.last_error = Some((error, now_ms()));
            }
        }
        self.shared.events.forward_changed(self.to_proto());
    }

    async fn run(self: Arc<Self>, listener: Option<TcpListener>) {
        let listener = match listener {
            Some(listener) => listener,
            None => match self.rebind().await {
                Some(listener) => listener,
                None => return,
            },
        };
        tracing::info!(local = %self.spec.local, target = %self.spec.target, bastion = %self.spec.bastion, "listening");
        loop {
            let accepted = tokio::select! {
                () = self.cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, peer)) => self.spawn_connection(socket, peer),
                Err(e) if is_resource_error(&e) => {
                    tracing::warn!(error = %e, "cannot accept connections: out of resources; pausing");
                    tokio::select! {
                        () = self.cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
                // Errors of one pending connection (ECONNABORTED…): skip it.
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            }
        }
        tracing::info!("stopped listening");
    }

    /// Retries binding until it works or the forward is stopped.
    async fn rebind(&self) -> Option<TcpListener> {
        tracing::warn!(local = %self.spec.local, "cannot listen yet; retrying every {}s", BIND_RETRY_INTERVAL.as_secs());
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(BIND_RETRY_INTERVAL) => {}
            }
            match bind(self.spec.local) {
                Ok(listener) => {
                    // The bind error is history now that the port is ours.
                    self.lock().last_error = None;
                    self.set_status(ForwardState::Listening, None);
                    return Some(listener);
                }
                Err(e) => {
                    let error = bind_error(self.spec.local, &e);
                    let changed = self
                        .lock()
                        .last_error
                        .as_ref()
                        .is_none_or(|(last, _)| *last != error);
                    if changed {
                        self.set_status(ForwardState::Error, Some(error));
                    }
                }
            }
        }
    }

    fn spawn_connection(self: &Arc<Self>, socket: TcpStream, peer: SocketAddr) {
        let id = self.shared.next_connection_id();
        let span = tracing::info_span!("conn", id, %peer);
        let forward = self.clone();
        self.shared
            .tasks
            .spawn(async move { forward.serve(socket, peer, id).await }.instrument(span));
    }

    async fn serve(self: Arc<Self>, mut socket: TcpStream, peer: SocketAddr, id: u64) {
        // Owner-only: another local user's connection gets no tunnel (it
        // would run on this user's Azure identity); dropped here, unserved
        // (a SOCKS5 client is told so, after its handshake).
        let admitted = self.spec.allow_other_users
            || socket
                .local_addr()
                .is_ok_and(|local| self.owners.admit(local, peer));
        let target = match &self.spec.target {
            Destination::Fixed(target) if admitted => Cow::Borrowed(target),
            Destination::Fixed(_) => return,
            Destination::Socks5 => {
                let request = socks::request(&mut socket, admitted);
                let requested = tokio::select! {
                    () = self.cancel.cancelled() => return,
                    requested = request => requested,
                };
                match requested {
                    Some(target) => Cow::Owned(target),
                    None => return,
                }
            }
        };
        if let Err(e) = tune_socket(&socket) {
            tracing::debug!(error = %e, "cannot tune the client socket");
        }
        let active = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        let event = |active| proto::ConnectionEvent {
            forward_id: self.spec.id.clone(),
            forward_name: self.spec.name.clone(),
            connection_id: id,
            peer: peer.to_string(),
            target: Some(target_proto(&target)),
            active_connections: active,
            ..Default::default()
        };
        self.shared.events.connection_opened(event(active));
        let traffic = Traffic::default();
        let error = self.tunnel(&mut socket, &target, &traffic).await.err();
        let active = self.active.fetch_sub(1, Ordering::Relaxed) - 1;
        self.shared
            .events
            .connection_closed(proto::ConnectionEvent {
                bytes_up: traffic.up.load(Ordering::Relaxed),
                bytes_down: traffic.down.load(Ordering::Relaxed),
                error: error.map(|e| e.to_string()).unwrap_or_default(),
                ..event(active)
            });
    }

    /// The target as a tunnel takes it (a VM name, declared or asked for
    /// by a SOCKS5 client, looked up through the 5-minute cache, so it
    /// follows the VM), and a tunnel to it.
    async fn open(
        &self,
        connector: &Connector,
        setup: &mut Setup,
        target: &Target,
    ) -> Result<(Tunnel, Target), ConnectionError> {
        let target = match &target.host {
            TargetHost::Name(name) => Target {
                host: TargetHost::Vm(
                    connector
                        .vm_id(
                            &self.shared.vm_names,
                            &self.spec.bastion,
                            name,
                            self.spec.resource_group.as_deref(),
                        )
                        .await?,
                ),
                port: target.port,
            },
            _ => target.clone(),
        };
        let tunnel = connector.open(&self.spec.bastion, &target, setup).await?;
        Ok((tunnel, target))
    }

    /// Opens the tunnel (retrying what can be retried) and carries the connection.
    async fn tunnel(
        &self,
        socket: &mut TcpStream,
        target: &Target,
        traffic: &Traffic,
    ) -> Result<(), ConnectionError> {
        let connector = self.shared.connector();
        let mut setup = connector.setup(vec![
            self.setup_retries.clone(),
            self.shared.setup_retries.clone(),
        ]);
        let opened = tokio::select! {
            () = self.cancel.cancelled() => return Ok(()),
            opened = self.open(&connector, &mut setup, target) => opened,
        };
        let (tunnel, target) = match opened {
            Ok(opened) => opened,
            // A flood turned away: logged once per burst where it is
            // counted, not once per connection, and not the forward's fault.
            Err(e @ ConnectionError::Open(AzureError::Crowded(_))) => {
                tracing::debug!(error = %e, "turned away");
                self.turn_away(socket, &e).await;
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a tunnel; closing the client connection");
                self.set_status(self.state(), Some(last_error(target, &e)));
                self.turn_away(socket, &e).await;
                return Err(e);
            }
        };
        let route = Route {
            connector: &connector,
            bastion: &self.spec.bastion,
            target: &target,
        };
        tracing::debug!("tunnel open");
        if self.spec.target.is_socks5() {
            socks::grant(socket).await?;
        }
        let (reader, writer) = socket.split();
        let meters = [traffic, &self.traffic];
        let result = connection::carry(
            &route,
            tunnel,
            &mut setup,
            reader,
            writer,
            &meters,
            &self.cancel,
        )
        .await;
        // Whatever ended it, the client's unread output must not be reset away.
        close_gracefully(socket).await;
        match &result {
            Ok(()) => tracing::debug!(
                up = traffic.up.load(Ordering::Relaxed),
                down = traffic.down.load(Ordering::Relaxed),
                "connection closed"
            ),
            // The local side's failure is not the forward's problem.
            Err(ConnectionError::Pump(PumpError::Client(e))) => {
                tracing::debug!(error = %e, "client connection failed")
            }
            Err(e) => {
                tracing::warn!(error = %e, "tunnel failed");
                self.set_status(self.state(), Some(last_error(&target, e)));
            }
        }
        result
    }

    /// Closes a client whose tunnel could not be opened; a SOCKS5 client
    /// is told why first.
    async fn turn_away(&self, socket: &mut TcpStream, error: &ConnectionError) {
        if self.spec.target.is_socks5() {
            socks::refuse(socket, socks::open_reply(error)).await;
        } else {
            close_gracefully(socket).await;
        }
    }
}

/// A forward's `last_error` for `error`: a Bastion refusal of an IP target
/// on a port Azure does not document for IP-based connection names the port.
fn last_error(target: &Target, error: &ConnectionError) -> String {
    let refused = matches!(
        error,
        ConnectionError::Open(AzureError::Rejected { .. } | AzureError::WebSocket(_))
    );
    match target.ip_port_caveat().filter(|_| refused) {
        Some(caveat) => format!("{error} (the port is the likely cause: {caveat})"),
        None => error.to_string(),
    }
}

/// A bind failure, phrased for the user.
pub fn bind_error(local: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!("{local} is already in use by another program"),
        io::ErrorKind::AddrNotAvailable => {
            format!("{} is not an address of this machine", local.ip())
        }
        io::ErrorKind::PermissionDenied => {
            format!("not allowed to listen on {local} (ports below 1024 need privileges)")
        }
        _ => format!("cannot listen on {local}: {e}"),
    }
}

fn is_resource_error(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

//! Wiring: settings → connector → forwards → control service, then serve
//! until shutdown ([`crate::control::reload`] handles SIGHUP). Shutdown stops accepting,
//! closes connections, deletes every live Bastion session and saves state,
//! each step bounded so the daemon exits within a few seconds.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use bastion_proto::v1::control_server::ControlServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::bastion::session::{DELETE_TIMEOUT, Sessions};
use crate::bastion::tunnel::Connector;
use crate::config::Settings;
use crate::control::reload::{catch_sighup, reload_on_sighup, warm_up};
use crate::control::service::{ControlService, check_peer};
use crate::control::status::summary;
use crate::events::Events;
use crate::forwards::set::Forwards;
use crate::forwards::store::Store;
use crate::notify;
use crate::shared::Shared;
use crate::wake::{Change, Watcher};

/// How long shutdown waits for connections to send their Close frames and end.
const SHUTDOWN_CONNECTIONS_GRACE: Duration = Duration::from_secs(3);
/// How long shutdown waits for Bastion session deletes (including retries).
/// Longer than one DELETE attempt may take, with room for a retry's pause;
/// the unit's TimeoutStopSec (20 s) covers all the shutdown graces together.
const SHUTDOWN_DELETES_GRACE: Duration = DELETE_TIMEOUT.saturating_add(Duration::from_secs(3));
/// How long shutdown waits for the control server to finish open calls.
const SHUTDOWN_SERVER_GRACE: Duration = Duration::from_secs(1);
/// The STATUS= line is refreshed this often so the token's remaining time stays current.
const STATUS_REFRESH: Duration = Duration::from_secs(30);

/// Where the daemon's files are.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_file: PathBuf,
    pub state_file: PathBuf,
}

/// Runs the daemon on `listener` until `shutdown` completes.
pub async fn run(
    options: Options,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let hangups = catch_sighup();
    let settings = Settings::load(&options.config_file)?;
    tracing::info!(
        config = %options.config_file.display(),
        bastions = settings.bastions.len(),
        credential = settings.auth.credential.as_str(),
        "settings loaded"
    );
    if settings.bastions.is_empty() {
        tracing::warn!(
            "no bastion is configured yet; add one with `bastionctl bastion add NAME RESOURCE_ID` \
             (`bastionctl bastion discover` lists those you can use)"
        );
    }
    let sessions = Arc::new(Sessions::default());
    let connector = Connector::new(settings, sessions.clone(), None)?;
    let shared = Arc::new(Shared::new(connector, sessions, Events::default()));
    let forwards = Arc::new(Forwards::new(
        shared.clone(),
        Store::new(options.state_file.clone()),
        options.config_file.clone(),
    ));
    forwards.restore().context("restoring saved forwards")?;
    let declared = forwards
        .reconcile(shared.connector().settings())
        .await
        .with_context(|| format!("invalid settings in {}", options.config_file.display()))?;
    for change in declared {
        tracing::info!("{change}");
    }

    let service = ControlService::new(
        shared.clone(),
        forwards.clone(),
        options.config_file.clone(),
    );
    let server = tonic::transport::Server::builder()
        .add_service(ControlServer::with_interceptor(service, check_peer))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shared.shutdown.clone().cancelled_owned(),
        );
    let mut server = tokio::spawn(server);

    let status_line = summary(&shared, &forwards);
    notify::ready(&status_line);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "bastiond ready");
    let background = shared.shutdown.child_token();
    shared.tasks.spawn(report_status(
        shared.clone(),
        forwards.clone(),
        status_line,
        background.clone(),
    ));
    if let Some(period) = notify::watchdog_interval() {
        shared
            .tasks
            .spawn(notify::watchdog(period, background.clone()));
    }
    shared
        .tasks
        .spawn(warm_up(shared.connector(), background.clone()));
    shared
        .tasks
        .spawn(after_changes(shared.clone(), background.clone()));
    shared.tasks.spawn(reload_on_sighup(
        shared.clone(),
        forwards.clone(),
        options.config_file.clone(),
        hangups,
    ));

    tokio::select! {
        () = shutdown => {}
        result = &mut server => {
            result.context("control server panicked")?.context("control server failed")?;
        }
    }

    tracing::info!("shutting down");
    notify::stopping();
    shared.events.notice("bastiond is shutting down");
    shared.shutdown.cancel();
    forwards.stop_all().await;
    shared.tasks.close();
    if tokio::time::timeout(SHUTDOWN_CONNECTIONS_GRACE, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    if !server.is_finished()
        && tokio::time::timeout(SHUTDOWN_SERVER_GRACE, &mut server)
            .await
            .is_err()
    {
        server.abort();
    }
    let remaining = shared.sessions.drain(SHUTDOWN_DELETES_GRACE).await;
    if remaining > 0 {
        tracing::warn!(
            remaining,
            "exiting with Bastion sessions not deleted; they will expire on their own"
        );
    }
    forwards.save().await.context("saving state")?;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps systemd's STATUS= line current.
async fn report_status(
    shared: Arc<Shared>,
    forwards: Arc<Forwards>,
    mut last: String,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut events = shared.events.subscribe();
    loop {
        let line = summary(&shared, &forwards);
        if line != last {
            notify::status(&line);
            last = line;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = events.recv() => {}
            () = tokio::time::sleep(STATUS_REFRESH) => {}
        }
    }
}

/// After a resume from suspend or a network change ([`wake`]), when every
/// connection opened before may lead nowhere: drops the warm connections
/// and the pooled HTTPS client, has every live tunnel pinged (dead ones end
/// within `keepalive_timeout_secs`), and refreshes the token and lookups
/// behind the callers if they are due.
async fn after_changes(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut watcher = Watcher::new();
    loop {
        let change = tokio::select! {
            () = cancel.cancelled() => return,
            change = watcher.next() => change,
        };
        let seen = match change {
            Change::Resumed(asleep) => {
                shared.resumes_seen.fetch_add(1, Ordering::Relaxed);
                format!("resumed after ~{}s asleep", asleep.as_secs())
            }
            Change::Network => {
                shared.network_changes_seen.fetch_add(1, Ordering::Relaxed);
                "network changed".to_string()
            }
        };
        // Not in the middle of a reload, whose connector would be replaced.
        let turn = shared.reloading.lock().await;
        let live = shared.sessions.live();
        match shared.connector().after_network_change() {
            Ok((connector, dropped)) => {
                shared.set_connector(connector);
                tracing::info!(
                    "{seen}: dropped {dropped} warm Bastion connections and the pooled HTTPS \
                     connections, pinged {live} live tunnels"
                );
            }
            Err(error) => tracing::warn!("{seen}: cannot build a new HTTPS client: {error:#}"),
        }
        drop(turn);
        shared
            .tasks
            .spawn(warm_up(shared.connector(), cancel.clone()));
    }
}

/// Completes on SIGTERM or SIGINT. Registered before the daemon starts, so
/// a signal during start-up is a clean shutdown too.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

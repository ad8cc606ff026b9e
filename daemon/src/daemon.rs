//! Wiring: settings → connector → forwards → control service, then serve
//! until shutdown; SIGHUP reloads the settings. Shutdown stops accepting,
//! closes connections, deletes every live Bastion session and saves state,
//! each step bounded so the daemon exits within a few seconds.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use bastion_proto::v1::control_server::ControlServer;
use bastion_proto::v1::{self as proto, ForwardState};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Settings;
use crate::control::{ControlService, check_peer};
use crate::events::{Events, to_ms};
use crate::forwards::Forwards;
use crate::notify;
use crate::session::Sessions;
use crate::shared::Shared;
use crate::store::Store;
use crate::tunnel::Connector;

/// How long shutdown waits for connections to send their Close frames and end.
const SHUTDOWN_CONNECTIONS_GRACE: Duration = Duration::from_secs(3);
/// How long shutdown waits for Bastion session deletes (including retries).
const SHUTDOWN_DELETES_GRACE: Duration = Duration::from_secs(4);
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
    let settings = Settings::load(&options.config_file)?;
    tracing::info!(
        config = %options.config_file.display(),
        bastions = settings.bastions.len(),
        credential = settings.auth.credential.as_str(),
        "settings loaded"
    );
    let connector = Connector::new(settings, Arc::new(Sessions::default()), None)?;
    let shared = Arc::new(Shared::new(connector, Events::default()));
    let forwards = Arc::new(Forwards::new(
        shared.clone(),
        Store::new(options.state_file.clone()),
    ));
    forwards.restore().context("restoring saved forwards")?;

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
    shared.tasks.spawn(reload_on_sighup(
        shared.clone(),
        forwards.clone(),
        options.config_file.clone(),
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
    forwards.save().context("saving state")?;
    tracing::info!("stopped");
    Ok(())
}

/// Re-reads the settings; forwards keep running. Returns one line per change.
pub fn reload(shared: &Shared, forwards: &Forwards, config_file: &Path) -> Result<Vec<String>> {
    let settings = Settings::load(config_file)?;
    let old = shared.connector();
    let mut changes = settings_changes(&old.settings, &settings);
    let connector = Connector::new(settings, shared.sessions.clone(), Some(&old))?;
    for forward in forwards.list() {
        if !connector
            .settings
            .bastions
            .contains_key(&forward.spec.bastion)
        {
            changes.push(format!(
                "forward {} uses bastion {}, which is no longer configured: its connections will fail until it is added back",
                forward.spec.name, forward.spec.bastion
            ));
        }
    }
    shared.set_connector(connector);
    shared
        .tasks
        .spawn(warm_up(shared.connector(), shared.shutdown.child_token()));
    let text = if changes.is_empty() {
        "settings reloaded: no changes".to_string()
    } else {
        format!("settings reloaded: {}", changes.join("; "))
    };
    tracing::info!("{text}");
    shared.events.notice(text);
    Ok(changes)
}

fn settings_changes(old: &Settings, new: &Settings) -> Vec<String> {
    let mut changes = Vec::new();
    for (name, bastion) in &new.bastions {
        match old.bastions.get(name) {
            None => changes.push(format!("bastion {name} added")),
            Some(b) if b != bastion => changes.push(format!("bastion {name} changed")),
            Some(_) => {}
        }
    }
    for name in old
        .bastions
        .keys()
        .filter(|n| !new.bastions.contains_key(*n))
    {
        changes.push(format!("bastion {name} removed"));
    }
    if old.default_bastion() != new.default_bastion() {
        changes.push(format!(
            "default bastion is now {}",
            new.default_bastion().unwrap_or("unset")
        ));
    }
    let sections = [
        ("auth", old.auth != new.auth),
        ("cloud", old.cloud != new.cloud),
        ("tls", old.tls != new.tls),
        ("tunnel", old.tunnel != new.tunnel),
    ];
    for (section, changed) in sections {
        if changed {
            changes.push(format!("[{section}] settings changed"));
        }
    }
    changes
}

/// Gets a token and looks the bastions up in the background, so the first
/// connection does not wait for `az` and ARM, and problems show in `status`
/// right away. Both are cached, so this is free when nothing changed.
async fn warm_up(connector: Arc<Connector>, cancel: tokio_util::sync::CancellationToken) {
    if connector.bastions.is_empty() {
        return;
    }
    let resolve_all = async {
        // A failure is logged and shown in `status` by the token cache.
        let Ok(token) = connector.auth.token().await else {
            return;
        };
        for entry in connector.bastions.values() {
            let resource_manager = &connector.settings.cloud.resource_manager;
            if let Err(error) = entry
                .resolve(&connector.http, resource_manager, &token)
                .await
            {
                tracing::warn!(bastion = %entry.name, %error, "cannot look up bastion");
            }
        }
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = resolve_all => {}
    }
}

async fn reload_on_sighup(shared: Arc<Shared>, forwards: Arc<Forwards>, config_file: PathBuf) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; use `bastionctl reload`");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        if let Err(error) = reload(&shared, &forwards, &config_file) {
            let text = format!("reload failed, keeping the previous settings: {error:#}");
            tracing::error!("{text}");
            shared.events.notice(text);
        }
    }
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

/// "3 forwards, 0 in error, token valid 41m".
pub fn summary(shared: &Shared, forwards: &Forwards) -> String {
    let list = forwards.list();
    let in_error = list
        .iter()
        .filter(|f| f.state() == ForwardState::Error)
        .count();
    let auth = shared.connector().auth.status();
    let token = match (auth.error, auth.expires_at) {
        (Some(_), _) => "token error".to_string(),
        (None, Some(expires)) => match expires.duration_since(SystemTime::now()) {
            Ok(left) => format!("token valid {}m", left.as_secs() / 60),
            Err(_) => "token expired".to_string(),
        },
        (None, None) => "no token yet".to_string(),
    };
    let plural = if list.len() == 1 { "" } else { "s" };
    let mut line = format!(
        "{} forward{plural}, {in_error} in error, {token}",
        list.len()
    );
    for alert in shared.alerts() {
        line.push_str("; ");
        line.push_str(&alert);
    }
    line
}

/// The `Status` RPC's answer.
pub fn status(shared: &Shared, forwards: &Forwards, config_file: &Path) -> proto::StatusResponse {
    let connector = shared.connector();
    let auth = connector.auth.status();
    let list = forwards.list();
    let bastions = connector
        .bastions
        .values()
        .map(|entry| {
            let state = entry.snapshot();
            let host = state.host.as_deref();
            proto::Bastion {
                name: entry.name.clone(),
                resource_id: entry.resource_id.clone(),
                endpoint: host.map(|h| h.dns_name.clone()).unwrap_or_default(),
                sku: host.map(|h| h.sku.clone()).unwrap_or_default(),
                tunneling_enabled: host.is_some_and(|h| h.tunneling),
                ip_connect_enabled: host.is_some_and(|h| h.ip_connect),
                last_error: state.last_error.unwrap_or_default(),
                resolved_at_ms: state.resolved_at.map_or(0, to_ms),
            }
        })
        .collect();
    proto::StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        credential: connector.auth.kind().as_str().to_string(),
        token_expires_at_ms: auth.expires_at.map_or(0, to_ms),
        auth_error: auth.error.unwrap_or_default(),
        bastions,
        forwards: u32::try_from(list.len()).unwrap_or(u32::MAX),
        forwards_in_error: u32::try_from(
            list.iter()
                .filter(|f| f.state() == ForwardState::Error)
                .count(),
        )
        .unwrap_or(u32::MAX),
        active_connections: list.iter().map(|f| f.active()).sum::<u64>()
            + shared.streams_active.load(Ordering::Relaxed),
        pid: std::process::id(),
        config_file: config_file.display().to_string(),
        state_file: forwards.store().path().display().to_string(),
        live_sessions: shared.sessions.live(),
    }
}

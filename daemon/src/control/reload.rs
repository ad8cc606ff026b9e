//! Reloading the settings (`bastionctl reload`, SIGHUP): a new connector is
//! built, reusing what did not change; forwards keep running, the declared
//! ones (`[forwards.NAME]`) are reconciled, and each change is reported in
//! one line. Also the background warm-up that follows start
//! and every reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::bastion::tunnel::Connector;
use crate::config::Settings;
use crate::forwards::set::Forwards;
use crate::shared::Shared;

/// Re-reads the settings; forwards keep running. Returns one line per change.
/// Reloads are serialised; the file and certificate reads run on the
/// blocking pool, off the runtime's workers.
pub async fn reload(
    shared: &Shared,
    forwards: &Forwards,
    config_file: &Path,
) -> Result<Vec<String>> {
    let _one_at_a_time = shared.reloading.lock().await;
    let old = shared.connector();
    let (file, sessions, previous) = (
        config_file.to_path_buf(),
        shared.sessions.clone(),
        old.clone(),
    );
    let (connector, mut changes) = tokio::task::spawn_blocking(move || -> Result<_> {
        let settings = Settings::load(&file)?;
        let changes = settings_changes(previous.settings(), &settings);
        Ok((
            Connector::new(settings, sessions, Some(&previous))?,
            changes,
        ))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the reload did not finish: {e}"))??;
    for forward in forwards.list() {
        if !connector
            .settings()
            .bastions
            .contains_key(&forward.spec.bastion)
        {
            changes.push(format!(
                "forward {} uses bastion {}, which is no longer configured: its connections will fail until it is added back",
                forward.spec.name, forward.spec.bastion
            ));
        }
    }
    // Before the new settings are in force: a declared forward that cannot be
    // had (a name or port already taken) fails the reload with nothing changed.
    let declared = forwards
        .reconcile(connector.settings())
        .await
        .map_err(|e| anyhow::anyhow!("invalid settings in {}: {e}", config_file.display()))?;
    changes.extend(declared);
    // A reload is how a user says "I fixed it" (the login, the portal):
    // ask the credential at once, look every bastion up afresh.
    connector.forget_failures();
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
    if old.tls.ca_file == new.tls.ca_file && old.tls != new.tls {
        changes.push("the CA file's certificates changed".to_string());
    }
    let sections = [
        ("auth", old.auth != new.auth),
        ("cloud", old.cloud != new.cloud),
        ("tls", old.tls.ca_file != new.tls.ca_file),
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
pub async fn warm_up(connector: Arc<Connector>, cancel: CancellationToken) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = connector.warm_up() => {}
    }
}

/// SIGHUP (a reload request) is ignored from the first line of `main` until
/// [`catch_sighup`] catches it for real: its default action would kill a
/// daemon asked to reload while it starts. A request ignored then loses
/// nothing: the settings have not been read yet.
pub fn ignore_sighup_until_caught() -> Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal as set_handler};
    // SAFETY: SIG_IGN runs no code in the handler, and start-up is still
    // single-threaded: nothing else installs handlers meanwhile.
    unsafe { set_handler(Signal::SIGHUP, SigHandler::SigIgn) }
        .map_err(|e| anyhow::anyhow!("cannot ignore SIGHUP: {e}"))?;
    Ok(())
}

/// Starts catching SIGHUP: called first thing at start-up, so a reload
/// asked for while the daemon starts (`systemctl reload` right after
/// `start`) is done once it is ready instead of killing it (SIGHUP's default).
pub fn catch_sighup() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; use `bastionctl reload`");
            None
        }
    }
}

/// Reloads on every SIGHUP caught by `hangups` (those of start-up included).
pub async fn reload_on_sighup(
    shared: Arc<Shared>,
    forwards: Arc<Forwards>,
    config_file: PathBuf,
    hangups: Option<Signal>,
) {
    let Some(mut hangups) = hangups else { return };
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        if let Err(error) = reload(&shared, &forwards, &config_file).await {
            let text = format!("reload failed, keeping the previous settings: {error:#}");
            tracing::error!("{text}");
            shared.events.notice(text);
        }
    }
}

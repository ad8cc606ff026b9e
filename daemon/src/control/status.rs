//! What the daemon reports about itself: the `Status` RPC's answer and the
//! one-line summary systemd shows (STATUS=).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bastion_proto::time::to_ms;
use bastion_proto::v1::{self as proto, ForwardState};

use crate::forwards::set::Forwards;
use crate::shared::Shared;

/// "3 forwards, 0 in error, token valid 41m".
pub fn summary(shared: &Shared, forwards: &Forwards) -> String {
    let list = forwards.list();
    let in_error = list
        .iter()
        .filter(|f| f.state() == ForwardState::Error)
        .count()
        + forwards.unrestored();
    let auth = shared.connector().auth_status();
    let token = match (auth.error, auth.expires_at) {
        (Some(_), _) => "token error".to_string(),
        (None, Some(expires)) => match expires.duration_since(SystemTime::now()) {
            Ok(left) => format!("token valid {}m", left.as_secs() / 60),
            Err(_) => "token expired".to_string(),
        },
        (None, None) => "no token yet".to_string(),
    };
    let total = list.len() + forwards.unrestored();
    let plural = if total == 1 { "" } else { "s" };
    let mut line = format!("{total} forward{plural}, {in_error} in error, {token}");
    for alert in shared.alerts() {
        line.push_str("; ");
        line.push_str(&alert);
    }
    line
}

/// The `Status` RPC's answer.
pub fn status(shared: &Shared, forwards: &Forwards, config_file: &Path) -> proto::StatusResponse {
    let connector = shared.connector();
    let auth = connector.auth_status();
    let identity = connector.identity().unwrap_or_default();
    let list = forwards.list();
    let bastions = connector
        .bastions()
        .map(|entry| {
            let state = entry.snapshot();
            let host = state.host.as_deref();
            proto::Bastion {
                name: entry.name.clone(),
                resource_id: entry.resource_id().to_string(),
                endpoint: host.map(|h| h.dns_name.clone()).unwrap_or_default(),
                sku: host.map(|h| h.sku.clone()).unwrap_or_default(),
                tunneling_enabled: host.is_some_and(|h| h.tunneling),
                ip_connect_enabled: host.is_some_and(|h| h.ip_connect),
                last_error: state.last_error.unwrap_or_default(),
                resolved_at_ms: state.resolved_at.map_or(0, to_ms),
                sessions_in_use: entry.sessions_in_use(),
                max_sessions: entry.settings.max_sessions,
                turned_away: entry.turned_away(),
            }
        })
        .collect();
    proto::StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        credential: connector.credential_name().to_string(),
        token_expires_at_ms: auth.expires_at.map_or(0, to_ms),
        auth_error: auth.error.unwrap_or_default(),
        bastions,
        forwards: u32::try_from(list.len() + forwards.unrestored()).unwrap_or(u32::MAX),
        forwards_in_error: u32::try_from(
            list.iter()
                .filter(|f| f.state() == ForwardState::Error)
                .count()
                + forwards.unrestored(),
        )
        .unwrap_or(u32::MAX),
        active_connections: list.iter().map(|f| f.active()).sum::<u64>()
            + shared.streams_active.load(Ordering::Relaxed),
        pid: std::process::id(),
        config_file: config_file.display().to_string(),
        state_file: forwards.store().path().display().to_string(),
        live_sessions: shared.sessions.live(),
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as u64,
        setup_retries: shared.setup_retries.get(),
        signed_in_tenant: identity.tenant,
        signed_in_account: identity.account,
        signed_in_app_id: identity.app_id,
        tenants: connector
            .tenants()
            .filter(|(auth, _)| auth.expires_at.is_some() || auth.error.is_some())
            .map(|(auth, identity)| {
                let identity = identity.unwrap_or_default();
                proto::TenantToken {
                    tenant: identity.tenant,
                    account: identity.account,
                    app_id: identity.app_id,
                    token_expires_at_ms: auth.expires_at.map_or(0, to_ms),
                    error: auth.error.unwrap_or_default(),
                }
            })
            .collect(),
    }
}

//! `status` and `reload`.

use std::path::PathBuf;

use bastion_proto::v1::{Bastion, StatusResponse};
use serde_json::{Value, json};

use crate::daemon;
use crate::forward::print_json;
use crate::output;
use crate::output::{out, outln};

pub async fn status(socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let socket = daemon::socket_path(socket);
    let mut client = daemon::connect(Some(socket.clone())).await?;
    let status = daemon::status(&mut client).await?;
    if json {
        print_json(&status_json(&status, &socket))?;
    } else {
        out!(
            "{}",
            render_status(&status, &socket, bastion_proto::time::now_ms())
        )?;
    }
    Ok(())
}

pub async fn reload(socket: Option<PathBuf>) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let changes = daemon::reload(&mut client).await?;
    if changes.is_empty() {
        outln!("Settings reloaded: no changes.")?;
    }
    for change in changes {
        outln!("{}", output::one_line(&change))?;
    }
    Ok(())
}

fn status_json(status: &StatusResponse, socket: &std::path::Path) -> Value {
    let bastions: Vec<Value> = status
        .bastions
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "resource_id": b.resource_id,
                "endpoint": output::non_empty(&b.endpoint),
                "sku": output::non_empty(&b.sku),
                "tunneling_enabled": b.tunneling_enabled,
                "ip_connect_enabled": b.ip_connect_enabled,
                "last_error": output::non_empty(&b.last_error),
                "resolved_at_ms": b.resolved_at_ms,
                "sessions_in_use": b.sessions_in_use,
                "max_sessions": b.max_sessions,
                "turned_away": b.turned_away,
            })
        })
        .collect();
    json!({
        "version": status.version,
        "ctl_version": daemon::CTL_VERSION,
        "pid": status.pid,
        "uptime_seconds": status.uptime_seconds,
        "credential": status.credential,
        "token_expires_at_ms": status.token_expires_at_ms,
        "auth_error": output::non_empty(&status.auth_error),
        "signed_in": signed_in_json(status),
        "tenants": tenants_json(status),
        "bastions": bastions,
        "forwards": status.forwards,
        "forwards_in_error": status.forwards_in_error,
        "active_connections": status.active_connections,
        "live_sessions": status.live_sessions,
        "tasks": status.tasks,
        "setup_retries": status.setup_retries,
        "config_file": status.config_file,
        "state_file": status.state_file,
        "socket": socket,
    })
}

/// Every tenant the daemon holds a token of.
fn tenants_json(status: &StatusResponse) -> Value {
    status
        .tenants
        .iter()
        .map(|t| {
            json!({
                "tenant": output::non_empty(&t.tenant),
                "account": output::non_empty(&t.account),
                "app_id": output::non_empty(&t.app_id),
                "token_expires_at_ms": t.token_expires_at_ms,
                "error": output::non_empty(&t.error),
            })
        })
        .collect()
}

/// Who the token names, `null` when the daemon has none or cannot tell.
fn signed_in_json(status: &StatusResponse) -> Value {
    if status.signed_in_tenant.is_empty()
        && status.signed_in_account.is_empty()
        && status.signed_in_app_id.is_empty()
    {
        return Value::Null;
    }
    json!({
        "tenant": output::non_empty(&status.signed_in_tenant),
        "account": output::non_empty(&status.signed_in_account),
        "app_id": output::non_empty(&status.signed_in_app_id),
        "token_expires_at_ms": status.token_expires_at_ms,
    })
}

/// "account me@example.com (tenant t)", "app 04b0… (tenant t)".
fn signed_in_text(status: &StatusResponse) -> Option<String> {
    let who = if !status.signed_in_account.is_empty() {
        format!("account {}", status.signed_in_account)
    } else if !status.signed_in_app_id.is_empty() {
        format!("app {}", status.signed_in_app_id)
    } else if !status.signed_in_tenant.is_empty() {
        "an unnamed identity".to_owned()
    } else {
        return None;
    };
    Some(match output::non_empty(&status.signed_in_tenant) {
        Some(tenant) => format!("{who} (tenant {tenant})"),
        None => who,
    })
}

/// "valid 41m", "expired 3m ago", "none yet".
fn token_text(expires_at_ms: i64, now_ms: i64) -> String {
    if expires_at_ms == 0 {
        return "none yet".to_owned();
    }
    let left = (expires_at_ms - now_ms) / 1000;
    if left >= 0 {
        format!("valid {}", output::human_duration(left.unsigned_abs()))
    } else {
        format!(
            "expired {} ago",
            output::human_duration(left.unsigned_abs())
        )
    }
}

fn render_status(status: &StatusResponse, socket: &std::path::Path, now_ms: i64) -> String {
    let mut out = format!(
        "bastiond {} (pid {}), up {}\n",
        status.version,
        status.pid,
        output::human_duration(status.uptime_seconds)
    );
    let mut field = |label: &str, value: String| out.push_str(&format!("{label:<12} {value}\n"));
    field(
        "credential:",
        format!(
            "{}, token {}",
            status.credential,
            token_text(status.token_expires_at_ms, now_ms)
        ),
    );
    if let Some(who) = signed_in_text(status) {
        field("signed in:", who);
    }
    if let Some(error) = output::non_empty(&status.auth_error) {
        field("auth error:", output::one_line(&error));
    }
    // More than one tenant: each with its identity and token.
    for t in status.tenants.iter().filter(|_| status.tenants.len() > 1) {
        let who = output::non_empty(&t.account)
            .or_else(|| output::non_empty(&t.app_id))
            .unwrap_or_else(|| "?".to_owned());
        let token = match output::non_empty(&t.error) {
            Some(error) => format!("error: {}", output::one_line(&error)),
            None => format!("token {}", token_text(t.token_expires_at_ms, now_ms)),
        };
        field("tenant:", format!("{} as {who}, {token}", t.tenant));
    }
    field(
        "forwards:",
        format!(
            "{} ({} in error), {} active connections, {} live Bastion sessions, {} setups retried",
            status.forwards,
            status.forwards_in_error,
            status.active_connections,
            status.live_sessions,
            status.setup_retries
        ),
    );
    field("config:", status.config_file.clone());
    field("state:", status.state_file.clone());
    field("socket:", socket.display().to_string());
    out.push('\n');
    if status.bastions.is_empty() {
        out.push_str(
            "No bastions configured: add one with `bastionctl bastion add NAME RESOURCE_ID` \
             (`bastionctl bastion discover` lists those you can use).\n",
        );
    } else {
        out.push_str(&bastion_table(&status.bastions));
    }
    out
}

fn bastion_table(bastions: &[Bastion]) -> String {
    let flag = |on: bool| if on { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = bastions
        .iter()
        .map(|b| {
            let resolved = !b.endpoint.is_empty();
            vec![
                b.name.clone(),
                if resolved {
                    b.endpoint.clone()
                } else {
                    "(not resolved yet)".to_owned()
                },
                b.sku.clone(),
                if resolved {
                    flag(b.tunneling_enabled)
                } else {
                    String::new()
                },
                if resolved {
                    flag(b.ip_connect_enabled)
                } else {
                    String::new()
                },
                output::one_line(&b.last_error),
            ]
        })
        .collect();
    output::table(
        &[
            "BASTION",
            "ENDPOINT",
            "SKU",
            "TUNNELING",
            "IP CONNECT",
            "LAST ERROR",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn status() -> StatusResponse {
        StatusResponse {
            version: "0.1.0".into(),
            uptime_seconds: 7500,
            credential: "azure-cli".into(),
            token_expires_at_ms: 1_000_000 + 41 * 60 * 1000 + 500,
            auth_error: String::new(),
            bastions: vec![Bastion {
                name: "hub".into(),
                resource_id:
                    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/bastionHosts/b"
                        .into(),
                endpoint: "127.0.0.1:4443".into(),
                sku: "Standard".into(),
                tunneling_enabled: true,
                ip_connect_enabled: false,
                last_error: String::new(),
                resolved_at_ms: 1,
                sessions_in_use: 3,
                max_sessions: 32,
                turned_away: 0,
            }],
            forwards: 2,
            forwards_in_error: 1,
            active_connections: 3,
            pid: 42,
            config_file: "/c/config.toml".into(),
            state_file: "/s/state.json".into(),
            live_sessions: 3,
            setup_retries: 5,
            signed_in_tenant: "t1".into(),
            signed_in_account: "me@example.com".into(),
            ..Default::default()
        }
    }

    #[test]
    fn token_validity() {
        assert_eq!(token_text(0, 5), "none yet");
        assert_eq!(
            token_text(1_000_000 + 41 * 60 * 1000, 1_000_000),
            "valid 41m"
        );
        assert_eq!(token_text(1_000_000, 1_000_000 + 180_000), "expired 3m ago");
    }

    #[test]
    fn human_status() {
        let text = render_status(&status(), Path::new("/run/b.sock"), 1_000_000);
        assert!(
            text.contains("signed in:   account me@example.com (tenant t1)\n"),
            "{text}"
        );
        assert!(
            text.starts_with("bastiond 0.1.0 (pid 42), up 2h 5m\n"),
            "{text}"
        );
        assert!(text.contains("azure-cli, token valid 41m"), "{text}");
        assert!(text.contains(
            "2 (1 in error), 3 active connections, 3 live Bastion sessions, 5 setups retried"
        ));
        assert!(!text.contains("auth error"));
        assert!(
            text.contains("hub      127.0.0.1:4443  Standard  yes        no"),
            "{text}"
        );
    }

    #[test]
    fn json_status() {
        let value = status_json(&status(), Path::new("/run/b.sock"));
        assert_eq!(value["pid"], 42);
        assert_eq!(value["auth_error"], Value::Null);
        assert_eq!(value["bastions"][0]["sku"], "Standard");
        assert_eq!(value["socket"], "/run/b.sock");
    }
}

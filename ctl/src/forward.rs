//! `forward add|list|remove`.

use std::path::PathBuf;

use bastion_proto::target::Target;
use bastion_proto::v1::{self as proto, AddForwardRequest, Forward, RemoveForwardRequest};

use crate::cli::{AddArgs, Listen};
use crate::daemon::{self, rpc_error};
use crate::output::{self, ForwardJson};
use crate::output::{out, outln};

pub async fn add(socket: Option<PathBuf>, args: AddArgs) -> anyhow::Result<()> {
    let caveat = Target::from_parts(&args.target.host, u32::from(args.target.port))
        .ok()
        .and_then(|t| t.ip_port_caveat());
    let json = args.listen.json;
    let forward = add_listener(socket, Some(args.target.into()), args.listen).await?;
    if let Some(caveat) = caveat {
        eprintln!("bastionctl: warning: {caveat}");
    }
    print_added(&forward, json)
}

/// Asks the daemon for a forward to `target`, or for a SOCKS5 listener
/// (whose clients name theirs) when there is none.
pub async fn add_listener(
    socket: Option<PathBuf>,
    target: Option<proto::Target>,
    listen: Listen,
) -> anyhow::Result<Forward> {
    let mut client = daemon::connect_checked(socket).await?;
    let request = AddForwardRequest {
        socks5: target.is_none(),
        target,
        local_port: u32::from(listen.local_port),
        bind_address: listen.bind.unwrap_or_default(),
        bastion: listen.via.bastion.unwrap_or_default(),
        name: listen.name.unwrap_or_default(),
        allow_other_users: listen.allow_other_users,
        resource_group: listen.via.resource_group.unwrap_or_default(),
    };
    daemon::add_forward(&mut client, request).await
}

/// What `forward add` and `socks add` print for the new forward.
pub fn print_added(forward: &Forward, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&ForwardJson::from(forward))
    } else {
        outln!(
            "Forwarding {} → {} via {} (name {}, id {})",
            output::local_text(&forward.bind_address, forward.local_port),
            output::target_text(forward.target.as_ref()),
            forward.bastion,
            forward.name,
            forward.id
        )
    }
}

pub async fn list(socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let forwards = daemon::forwards(&mut client).await?;
    if json {
        let forwards: Vec<ForwardJson> = forwards.iter().map(ForwardJson::from).collect();
        print_json(&forwards)?;
    } else if forwards.is_empty() {
        outln!("No forwards. Add one with `bastionctl forward add TARGET LOCAL_PORT`.")?;
    } else {
        out!("{}", render_list(&forwards, bastion_proto::time::now_ms()))?;
    }
    Ok(())
}

pub async fn remove(socket: Option<PathBuf>, selector: &str) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let request = RemoveForwardRequest {
        selector: selector.to_owned(),
    };
    let removed = client
        .remove_forward(request)
        .await
        .map_err(rpc_error)?
        .into_inner()
        .forward;
    match removed {
        Some(forward) => outln!(
            "Removed forward {} ({} → {})",
            forward.name,
            output::local_text(&forward.bind_address, forward.local_port),
            output::target_text(forward.target.as_ref())
        ),
        None => outln!("Removed forward {selector}"),
    }
}

/// Pretty JSON on stdout: arrays and objects read well in a terminal and
/// parse the same in scripts.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)
}

fn render_list(forwards: &[Forward], now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = forwards
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                output::local_text(&f.bind_address, f.local_port),
                output::target_cell(f.target.as_ref()),
                f.bastion.clone(),
                f.source.clone(),
                output::state_name(f.state).to_owned(),
                format!("{}/{}", f.active_connections, f.total_connections),
                f.refused_connections.to_string(),
                output::human_bytes(f.bytes_up),
                output::human_bytes(f.bytes_down),
                error_text(&f.last_error, f.last_error_at_ms, now_ms),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "LOCAL",
            "TARGET",
            "BASTION",
            "SOURCE",
            "STATE",
            "CONNS",
            "REFUSED",
            "UP",
            "DOWN",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// The last error on one line, prefixed with its age (`5m ago: …`) so an
/// old error is not mistaken for a current one.
fn error_text(error: &str, at_ms: i64, now_ms: i64) -> String {
    let line = output::one_line(error);
    if line.is_empty() || at_ms <= 0 {
        return line;
    }
    let age = u64::try_from((now_ms - at_ms) / 1000).unwrap_or(0);
    format!("{} ago: {line}", output::human_duration(age))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_proto::v1::ForwardState;

    #[test]
    fn list_renders_a_row_per_forward() {
        let forward = Forward {
            state: ForwardState::Error as i32,
            active_connections: 2,
            total_connections: 7,
            bytes_up: 2048,
            bytes_down: 5,
            last_error: "Target is not reachable\nfrom this Bastion.".into(),
            last_error_at_ms: 1_000_000,
            refused_connections: 4,
            source: "config".into(),
            ..crate::output::tests::forward()
        };
        let rendered = render_list(&[forward], 1_000_000 + 125_000);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME"));
        for expected in [
            "dev-ssh",
            "127.0.0.1:2222",
            "10.1.0.4:22",
            "hub",
            "config",
            "error",
            "2/7",
            "2.0 KiB",
            "5 B",
            "  4  ",
            "2m ago: Target is not reachable; from this Bastion.",
        ] {
            assert!(
                lines[1].contains(expected),
                "{expected} missing in {}",
                lines[1]
            );
        }
    }
}

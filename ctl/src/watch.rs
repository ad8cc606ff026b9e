//! `forward watch`: one line per daemon event until Ctrl-C or the daemon
//! goes away.

use std::path::PathBuf;

use anyhow::anyhow;
use bastion_proto::v1::event::Kind;
use bastion_proto::v1::{ConnectionEvent, Event, WatchRequest};
use serde_json::{Value, json};

use crate::daemon::{self, rpc_error};
use crate::output::outln;
use crate::output::{self, ForwardJson};

pub async fn run(socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let mut events = client
        .watch(WatchRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = events.message() => event,
        };
        match event {
            Ok(Some(event)) => {
                let line = if json {
                    event_json(&event).to_string()
                } else {
                    event_line(&event)
                };
                // Rust's stdout is line-buffered: each event is flushed as it comes.
                outln!("{line}")?;
            }
            Ok(None) => return Err(anyhow!("the daemon ended the event stream (did it stop?)")),
            Err(status) => return Err(rpc_error(status).context("lost the daemon")),
        }
    }
}

/// One JSON object per event, tagged by `event`.
fn event_json(event: &Event) -> Value {
    let mut value = match &event.kind {
        Some(Kind::ForwardChanged(forward)) => {
            json!({"event": "forward_changed", "forward": ForwardJson::from(forward)})
        }
        Some(Kind::ForwardRemoved(id)) => json!({"event": "forward_removed", "id": id}),
        Some(Kind::ConnectionOpened(conn)) => connection_json("connection_opened", conn),
        Some(Kind::ConnectionClosed(conn)) => connection_json("connection_closed", conn),
        Some(Kind::Notice(message)) => json!({"event": "notice", "message": message}),
        None => json!({"event": "unknown"}),
    };
    value["at_ms"] = json!(event.at_ms);
    value
}

fn connection_json(kind: &str, conn: &ConnectionEvent) -> Value {
    json!({
        "event": kind,
        "forward_id": output::non_empty(&conn.forward_id),
        "forward_name": output::non_empty(&conn.forward_name),
        "connection_id": conn.connection_id,
        "peer": conn.peer,
        "target": output::target_text(conn.target.as_ref()),
        "active_connections": conn.active_connections,
        "bytes_up": conn.bytes_up,
        "bytes_down": conn.bytes_down,
        "error": output::non_empty(&conn.error),
    })
}

fn event_line(event: &Event) -> String {
    let text = match &event.kind {
        Some(Kind::ForwardChanged(f)) => {
            let error = output::non_empty(&f.last_error)
                .map(|e| format!(": {}", output::one_line(&e)))
                .unwrap_or_default();
            format!(
                "forward {} {} {} → {}{error}",
                f.name,
                output::state_name(f.state),
                output::local_text(&f.bind_address, f.local_port),
                output::target_text(f.target.as_ref()),
            )
        }
        Some(Kind::ForwardRemoved(id)) => format!("forward {id} removed"),
        Some(Kind::ConnectionOpened(conn)) => format!(
            "{} connection {} opened from {} to {} ({} active)",
            origin(conn),
            conn.connection_id,
            conn.peer,
            output::target_text(conn.target.as_ref()),
            conn.active_connections
        ),
        Some(Kind::ConnectionClosed(conn)) => {
            let error = output::non_empty(&conn.error)
                .map(|e| format!(": {}", output::one_line(&e)))
                .unwrap_or_default();
            format!(
                "{} connection {} closed, up {} down {} ({} active){error}",
                origin(conn),
                conn.connection_id,
                output::human_bytes(conn.bytes_up),
                output::human_bytes(conn.bytes_down),
                conn.active_connections
            )
        }
        Some(Kind::Notice(message)) => format!("notice: {}", output::one_line(message)),
        None => "unknown event (newer daemon?)".to_owned(),
    };
    format!("{} {text}", clock_utc(event.at_ms))
}

/// `forward dev-ssh`, or `connect` for `bastionctl connect` streams.
fn origin(conn: &ConnectionEvent) -> String {
    if conn.forward_name.is_empty() {
        "connect".to_owned()
    } else {
        format!("forward {}", conn.forward_name)
    }
}

/// `HH:MM:SSZ`: enough to relate events to each other and to logs.
fn clock_utc(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_proto::v1::Target;

    fn closed() -> Event {
        Event {
            at_ms: 3_723_000,
            kind: Some(Kind::ConnectionClosed(ConnectionEvent {
                forward_id: "f1".into(),
                forward_name: "dev-ssh".into(),
                connection_id: 7,
                peer: "127.0.0.1:50000".into(),
                target: Some(Target {
                    host: "10.1.0.4".into(),
                    port: 22,
                }),
                active_connections: 0,
                bytes_up: 10,
                bytes_down: 2048,
                error: String::new(),
            })),
        }
    }

    #[test]
    fn json_lines_are_tagged() {
        let value = event_json(&closed());
        assert_eq!(value["event"], "connection_closed");
        assert_eq!(value["forward_name"], "dev-ssh");
        assert_eq!(value["target"], "10.1.0.4:22");
        assert_eq!(value["error"], Value::Null);
        assert_eq!(value["at_ms"], 3_723_000);
        let notice = Event {
            at_ms: 1,
            kind: Some(Kind::Notice("reloaded".into())),
        };
        assert_eq!(event_json(&notice)["message"], "reloaded");
    }

    #[test]
    fn human_lines() {
        assert_eq!(
            event_line(&closed()),
            "01:02:03Z forward dev-ssh connection 7 closed, up 10 B down 2.0 KiB (0 active)"
        );
    }
}

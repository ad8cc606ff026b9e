//! Rendering shared by the commands: the stable JSON shape of a forward,
//! aligned tables, and human-readable sizes and durations.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use bastion_proto::v1::{Forward, ForwardState, Target};
use serde::Serialize;

/// `print!` that reports a closed stdout (`bastionctl forward list | head -1`)
/// as an error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}
/// `println!`, likewise.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use {out, outln};

pub fn write_stdout(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::io::stdout()
        .lock()
        .write_fmt(args)
        .context("cannot write to stdout")
}

/// A forward as `forward list --json` and `forward add --json` print it.
/// Scripts depend on these names: only ever add fields.
#[derive(Debug, Serialize, PartialEq)]
pub struct ForwardJson {
    pub id: String,
    pub name: String,
    pub bastion: String,
    pub target: String,
    pub local: String,
    pub state: &'static str,
    pub active_connections: u64,
    pub total_connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub setup_retries: u64,
    /// Unix ms of `last_error`; null when there is none.
    pub last_error_at_ms: Option<i64>,
    pub refused_connections: u64,
    pub allow_other_users: bool,
    /// "cli" (`forward add`) or "config" (`[forwards.NAME]` in the settings).
    pub source: String,
    /// What the target is: "ip", "vm", "vm-name", "aks" (a managed cluster's
    /// API server) or "socks5" (a SOCKS5 listener).
    pub kind: &'static str,
}

impl From<&Forward> for ForwardJson {
    fn from(forward: &Forward) -> Self {
        Self {
            id: forward.id.clone(),
            name: forward.name.clone(),
            bastion: forward.bastion.clone(),
            target: target_text(forward.target.as_ref()),
            local: local_text(&forward.bind_address, forward.local_port),
            state: state_name(forward.state),
            active_connections: forward.active_connections,
            total_connections: forward.total_connections,
            bytes_up: forward.bytes_up,
            bytes_down: forward.bytes_down,
            last_error: non_empty(&forward.last_error),
            created_at_ms: forward.created_at_ms,
            setup_retries: forward.setup_retries,
            last_error_at_ms: (forward.last_error_at_ms != 0).then_some(forward.last_error_at_ms),
            refused_connections: forward.refused_connections,
            allow_other_users: forward.allow_other_users,
            source: forward.source.clone(),
            kind: forward_kind(forward),
        }
    }
}

/// `None` for the empty strings proto3 uses as "no value".
pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// `10.1.0.4:22`; a target without a port (a SOCKS5 listener's `socks5`,
/// a saved entry the daemon could not read) is its host alone.
pub fn target_text(target: Option<&Target>) -> String {
    match target {
        Some(target) if target.port == 0 => target.host.clone(),
        Some(target) => target.to_string(),
        None => String::new(),
    }
}

/// What a forward reaches: "socks5" for a SOCKS5 listener (its clients
/// name the target), else its target's kind.
pub fn forward_kind(forward: &Forward) -> &'static str {
    match forward.socks5 {
        true => bastion_proto::target::SOCKS5_TARGET,
        false => target_kind(forward.target.as_ref()),
    }
}

/// The target's kind as [`bastion_proto::target::TargetHost::kind`] names it.
pub fn target_kind(target: Option<&Target>) -> &'static str {
    target
        .and_then(|t| bastion_proto::target::Target::from_parts(&t.host, t.port).ok())
        .map_or("unknown", |t| t.host.kind())
}

/// A target as the tables show it: an AKS cluster as `aks:RG/NAME:443`
/// rather than its long resource id.
pub fn target_cell(target: Option<&Target>) -> String {
    match target.and_then(cluster_of) {
        Some(id) => {
            let (rg, name) = cluster_parts(&id);
            let port = target.map_or(0, |t| t.port);
            format!("aks:{rg}/{name}:{port}")
        }
        None => target_text(target),
    }
}

/// The managed cluster a forward goes to, if it goes to one.
pub fn cluster_id(forward: &Forward) -> Option<String> {
    cluster_of(forward.target.as_ref()?)
}

/// The managed cluster's resource id, if `target` is one.
fn cluster_of(target: &Target) -> Option<String> {
    use bastion_proto::target::{Target as Parsed, TargetHost};
    match Parsed::from_parts(&target.host, target.port).ok()?.host {
        TargetHost::Cluster(id) => Some(id),
        _ => None,
    }
}

/// `(resource group, name)` of a managed cluster's resource id.
pub fn cluster_parts(id: &str) -> (&str, &str) {
    let parts: Vec<&str> = id.split('/').collect();
    (
        parts.get(4).copied().unwrap_or_default(),
        parts.last().copied().unwrap_or_default(),
    )
}

/// `127.0.0.1:2222`, `[::1]:2222`.
pub fn local_text(bind_address: &str, port: u32) -> String {
    match (bind_address.parse::<IpAddr>(), u16::try_from(port)) {
        (Ok(ip), Ok(port)) => SocketAddr::new(ip, port).to_string(),
        _ => format!("{bind_address}:{port}"),
    }
}

pub fn state_name(state: i32) -> &'static str {
    match ForwardState::try_from(state) {
        Ok(ForwardState::Listening) => "listening",
        Ok(ForwardState::Error) => "error",
        Ok(ForwardState::Stopping) => "stopping",
        Ok(ForwardState::Unspecified) | Err(_) => "unknown",
    }
}

/// Folds a possibly multi-line message onto one line.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `0 B`, `512 B`, `1.5 KiB`, `12.0 MiB` (binary units, one decimal).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision loss is irrelevant at one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `45s`, `41m`, `2h 5m`, `3d 4h`: the two largest units are plenty.
pub fn human_duration(seconds: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match seconds {
        s if s < MINUTE => format!("{s}s"),
        s if s < HOUR => format!("{}m", s / MINUTE),
        s if s < DAY => format!("{}h {}m", s / HOUR, s % HOUR / MINUTE),
        s => format!("{}d {}h", s / DAY, s % DAY / HOUR),
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column
/// is not padded so long errors don't drag trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A listening forward `dev-ssh` (127.0.0.1:2222 → 10.1.0.4:22 via hub).
    pub(crate) fn forward() -> Forward {
        Forward {
            id: "f1".into(),
            name: "dev-ssh".into(),
            bastion: "hub".into(),
            target: Some(Target {
                host: "10.1.0.4".into(),
                port: 22,
            }),
            bind_address: "127.0.0.1".into(),
            local_port: 2222,
            state: ForwardState::Listening as i32,
            active_connections: 1,
            total_connections: 3,
            bytes_up: 10,
            bytes_down: 20,
            last_error: String::new(),
            created_at_ms: 1_700_000_000_000,
            last_error_at_ms: 0,
            setup_retries: 2,
            refused_connections: 0,
            allow_other_users: false,
            source: "cli".into(),
            socks5: false,
        }
    }

    #[test]
    fn forward_json_has_the_stable_fields() {
        let json = serde_json::to_value(ForwardJson::from(&forward())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "f1", "name": "dev-ssh", "bastion": "hub",
                "target": "10.1.0.4:22", "local": "127.0.0.1:2222",
                "state": "listening", "active_connections": 1, "total_connections": 3,
                "bytes_up": 10, "bytes_down": 20, "last_error": null,
                "created_at_ms": 1_700_000_000_000_i64, "setup_retries": 2,
                "last_error_at_ms": null, "refused_connections": 0,
                "allow_other_users": false, "source": "cli", "kind": "ip",
            })
        );
        let mut failing = forward();
        failing.last_error = "Target unreachable".into();
        failing.state = ForwardState::Error as i32;
        failing.last_error_at_ms = 1_700_000_000_500;
        let json = serde_json::to_value(ForwardJson::from(&failing)).unwrap();
        assert_eq!(json["last_error"], "Target unreachable");
        assert_eq!(json["last_error_at_ms"], 1_700_000_000_500_i64);
        assert_eq!(json["state"], "error");
        let mut socks = forward();
        socks.socks5 = true;
        socks.target = Some(Target {
            host: "socks5".into(),
            port: 0,
        });
        let json = serde_json::to_value(ForwardJson::from(&socks)).unwrap();
        assert_eq!(
            (&json["kind"], &json["target"]),
            (&"socks5".into(), &"socks5".into())
        );
    }

    #[test]
    fn ipv6_is_bracketed() {
        assert_eq!(local_text("::1", 2222), "[::1]:2222");
        assert_eq!(local_text("127.0.0.1", 22), "127.0.0.1:22");
        let target = Target {
            host: "fd00::4".into(),
            port: 22,
        };
        assert_eq!(target_text(Some(&target)), "[fd00::4]:22");
    }

    #[test]
    fn aks_targets_are_shown_as_such() {
        let target = Target {
            host: "/subscriptions/s/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks1".into(),
            port: 443,
        };
        assert_eq!(target_kind(Some(&target)), "aks");
        assert_eq!(target_cell(Some(&target)), "aks:rg-aks/aks1:443");
        let ip = Target {
            host: "10.1.0.4".into(),
            port: 22,
        };
        assert_eq!(
            (target_kind(Some(&ip)), target_cell(Some(&ip)).as_str()),
            ("ip", "10.1.0.4:22")
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(41 * 60 + 5), "41m");
        assert_eq!(human_duration(2 * 3600 + 5 * 60), "2h 5m");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d 4h");
    }

    #[test]
    fn tables_align() {
        let rendered = table(
            &["NAME", "LOCAL", "LAST ERROR"],
            &[
                vec!["a".into(), "127.0.0.1:1".into(), String::new()],
                vec!["long-name".into(), "1.2.3.4:5".into(), "boom".into()],
            ],
        );
        assert_eq!(
            rendered,
            "NAME       LOCAL        LAST ERROR\n\
             a          127.0.0.1:1\n\
             long-name  1.2.3.4:5    boom\n"
        );
    }

    #[test]
    fn one_line_folds() {
        assert_eq!(one_line("a\n  b\n\nc"), "a; b; c");
    }
}

//! `[tunnel]`: how tunnels behave once open, and how hard their setup tries.
//! Every key has a range: a value outside it is refused at load with the
//! range in the message, so no setting can overflow a timer.

use std::time::Duration;

use serde::Deserialize;

/// Bastion (like most load balancers) drops idle connections after a few
/// minutes; a ping every 30 s keeps quiet ssh sessions alive and notices dead
/// tunnels within a minute.
const DEFAULT_KEEPALIVE_INTERVAL_SECS: u64 = 30;
/// A pong normally comes back within one round trip; 15 s tolerates a slow or
/// briefly congested link without leaving a dead tunnel hanging for minutes.
const DEFAULT_KEEPALIVE_TIMEOUT_SECS: u64 = 15;
/// The largest frame we send. The Bastion's backend is a Tomcat stack whose
/// message buffers may be small (it answers too big a frame with Close 1009),
/// and the Azure CLI sends 4 KiB frames, which are known to pass. 16 KiB
/// frames keep bulk throughput within a few per cent of 64 KiB (tungstenite
/// batches frames into one write either way; see BENCHMARKS.md), so we take
/// the smaller, safer size; users who see 1009 can go lower.
const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024;
/// After the client's EOF, this much silence from the target means it has
/// nothing more to say: long enough for a reply to cross a slow link, short
/// enough not to hold a Bastion session for nothing.
const DEFAULT_EOF_LINGER_SECS: u64 = 2;
/// Tries of a connection's setup (token POST, upgrade, first frame) before
/// its client is closed: the reported faults are intermittent and clear on a
/// fresh session, so a few tries hide them without hammering a broken Bastion.
const DEFAULT_SETUP_ATTEMPTS: u32 = 4;
/// Longest a client waits for its tunnel, retries included: ssh's default
/// ConnectTimeout is the kernel's (~2 min), IDEs give up after 15–60 s.
const DEFAULT_SETUP_TIMEOUT_SECS: u64 = 30;
/// Spare TLS connections per recently used Bastion host: one takes the next
/// WebSocket upgrade and one the next token POST when no kept-alive
/// connection is left; more only help bursts, which dial for themselves.
const DEFAULT_SPARE_CONNECTIONS: usize = 2;
/// A spare is replaced before it has been idle this long: servers close
/// connections that carry no request (Tomcat's default is 20 s), and a spare
/// found closed costs the tunnel a new dial.
const DEFAULT_SPARE_MAX_IDLE_SECS: u64 = 15;
/// Spares are kept this long after a host's last tunnel: a working session's
/// next ssh or IDE connection, not a Bastion held warm for a day.
const DEFAULT_SPARE_WARM_SECS: u64 = 600;

/// Upper bounds: generous for any real use, far from overflowing a timer.
const MAX_KEEPALIVE_SECS: u64 = 3600;
const MAX_EOF_LINGER_SECS: u64 = 300;
const MAX_SETUP_TIMEOUT_SECS: u64 = 600;
const MAX_SETUP_ATTEMPTS: u32 = 20;
/// More spares than this only hold sockets on the Bastion.
const MAX_SPARE_CONNECTIONS: u64 = 16;
const MAX_SPARE_MAX_IDLE_SECS: u64 = 3600;
const MAX_SPARE_WARM_SECS: u64 = 24 * 3600;
/// Frames below this cost more in headers than they carry.
const MIN_FRAME_BYTES: usize = 512;
/// Frames above this only risk Close 1009 and hold more memory per write.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// Ping a tunnel that has shown no sign of life for this long; 0 turns pings off.
    pub keepalive_interval_secs: u64,
    /// Close a tunnel whose ping got no answer (nor data) for this long.
    pub keepalive_timeout_secs: u64,
    /// Largest WebSocket frame we send.
    pub max_frame_bytes: usize,
    /// After the client's EOF, how long a quiet target keeps the tunnel.
    pub eof_linger_secs: u64,
    /// Tries of a connection's setup before its client is closed.
    pub setup_attempts: u32,
    /// Longest a connection's setup may take, retries and waiting for a
    /// session slot (`max_sessions`) included.
    pub setup_timeout_secs: u64,
    /// Spare TLS connections kept per recently used Bastion host; 0 turns them off.
    pub spare_connections: usize,
    /// A spare (or kept-alive) connection idle this long is replaced.
    pub spare_max_idle_secs: u64,
    /// How long after a host's last tunnel its spares are kept (at least 1 s:
    /// a keeper started and ended for every tunnel would be waste;
    /// `spare_connections = 0` is the way to keep none).
    pub spare_warm_secs: u64,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        TunnelSettings {
            keepalive_interval_secs: DEFAULT_KEEPALIVE_INTERVAL_SECS,
            keepalive_timeout_secs: DEFAULT_KEEPALIVE_TIMEOUT_SECS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            eof_linger_secs: DEFAULT_EOF_LINGER_SECS,
            setup_attempts: DEFAULT_SETUP_ATTEMPTS,
            setup_timeout_secs: DEFAULT_SETUP_TIMEOUT_SECS,
            spare_connections: DEFAULT_SPARE_CONNECTIONS,
            spare_max_idle_secs: DEFAULT_SPARE_MAX_IDLE_SECS,
            spare_warm_secs: DEFAULT_SPARE_WARM_SECS,
        }
    }
}

impl TunnelSettings {
    /// `None` when pings are off.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.keepalive_interval_secs > 0)
            .then(|| Duration::from_secs(self.keepalive_interval_secs))
    }
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_secs)
    }
    pub fn eof_linger(&self) -> Duration {
        Duration::from_secs(self.eof_linger_secs)
    }
    pub fn setup_timeout(&self) -> Duration {
        Duration::from_secs(self.setup_timeout_secs)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let ranges: [(&str, u64, u64, u64); 9] = [
            (
                "keepalive_interval_secs",
                self.keepalive_interval_secs,
                0,
                MAX_KEEPALIVE_SECS,
            ),
            (
                "keepalive_timeout_secs",
                self.keepalive_timeout_secs,
                1,
                MAX_KEEPALIVE_SECS,
            ),
            (
                "max_frame_bytes",
                self.max_frame_bytes as u64,
                MIN_FRAME_BYTES as u64,
                MAX_FRAME_BYTES as u64,
            ),
            (
                "eof_linger_secs",
                self.eof_linger_secs,
                0,
                MAX_EOF_LINGER_SECS,
            ),
            (
                "setup_attempts",
                u64::from(self.setup_attempts),
                1,
                u64::from(MAX_SETUP_ATTEMPTS),
            ),
            (
                "setup_timeout_secs",
                self.setup_timeout_secs,
                1,
                MAX_SETUP_TIMEOUT_SECS,
            ),
            (
                "spare_connections",
                self.spare_connections as u64,
                0,
                MAX_SPARE_CONNECTIONS,
            ),
            (
                "spare_max_idle_secs",
                self.spare_max_idle_secs,
                1,
                MAX_SPARE_MAX_IDLE_SECS,
            ),
            (
                "spare_warm_secs",
                self.spare_warm_secs,
                1,
                MAX_SPARE_WARM_SECS,
            ),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "`tunnel.{key}` = {value} is out of range ({min} to {max})"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(text: &str) -> Result<TunnelSettings, String> {
        let settings: TunnelSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        settings.validate().map(|()| settings)
    }

    #[test]
    fn zero_turns_pings_off() {
        let settings = tunnel("keepalive_interval_secs = 0").unwrap();
        assert_eq!(settings.keepalive_interval(), None);
        assert_eq!(
            tunnel("").unwrap().keepalive_interval(),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn values_out_of_range_are_refused_with_the_range() {
        for (text, key) in [
            (
                "keepalive_interval_secs = 18446744073709551615",
                "keepalive_interval_secs",
            ),
            ("keepalive_timeout_secs = 0", "keepalive_timeout_secs"),
            ("max_frame_bytes = 100", "max_frame_bytes"),
            ("max_frame_bytes = 100000000", "max_frame_bytes"),
            ("eof_linger_secs = 100000", "eof_linger_secs"),
            ("setup_attempts = 0", "setup_attempts"),
            ("setup_timeout_secs = 0", "setup_timeout_secs"),
            ("spare_connections = 17", "spare_connections"),
            ("spare_max_idle_secs = 0", "spare_max_idle_secs"),
            ("spare_warm_secs = 100000", "spare_warm_secs"),
            ("spare_warm_secs = 0", "spare_warm_secs"),
        ] {
            let error = tunnel(text).unwrap_err();
            assert!(
                error.contains(&format!("tunnel.{key}")) && error.contains(" to "),
                "{text}: {error}"
            );
        }
        let settings = tunnel("max_frame_bytes = 4096\neof_linger_secs = 0").unwrap();
        assert_eq!(settings.max_frame_bytes, 4096);
        assert_eq!(settings.eof_linger(), Duration::ZERO);
    }
}

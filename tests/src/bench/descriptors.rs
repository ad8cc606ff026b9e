//! What a process's open descriptors are, by kind, read from /proc: so a soak
//! that ends with more descriptors than it started with says which ones (an
//! idle pooled connection to the Bastion is not a leaked client socket).

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;

/// /proc/net/tcp's state column, the states a daemon at rest can hold.
const TCP_STATES: [(&str, &str); 5] = [
    ("01", "established"),
    ("06", "time-wait"),
    ("08", "close-wait"),
    ("0A", "listening"),
    ("07", "closed"),
];

/// Open descriptors counted by kind ("tcp established to 127.0.0.1:4431",
/// "unix socket", "anon_inode:[eventpoll]", "file", ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptors(BTreeMap<String, usize>);

impl Descriptors {
    /// The descriptors `pid` holds now.
    pub fn of(pid: u32) -> anyhow::Result<Descriptors> {
        let sockets = tcp_sockets(pid)?;
        let dir = format!("/proc/{pid}/fd");
        let mut kinds = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            // A descriptor closed between the listing and the readlink is gone: skip it.
            let Ok(target) = std::fs::read_link(entry?.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let kind = match target
                .strip_prefix("socket:[")
                .and_then(|inode| inode.strip_suffix(']'))
            {
                Some(inode) => sockets
                    .get(inode)
                    .cloned()
                    .unwrap_or_else(|| "unix or other socket".into()),
                None if target.starts_with('/') => "file".into(),
                None => target.into_owned(),
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
        Ok(Descriptors(kinds))
    }

    /// How many descriptors `pid` holds now, without telling them apart.
    pub fn count(pid: u32) -> anyhow::Result<usize> {
        let dir = format!("/proc/{pid}/fd");
        Ok(std::fs::read_dir(&dir)
            .with_context(|| format!("reading {dir}"))?
            .count())
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Kinds held more often in `self` than in `earlier`, with how many more
    /// ("+2 tcp established to 127.0.0.1:4431"), and fewer ("-1 ...").
    pub fn changes_since(&self, earlier: &Descriptors) -> Vec<String> {
        let kinds: std::collections::BTreeSet<_> = self.0.keys().chain(earlier.0.keys()).collect();
        kinds
            .into_iter()
            .filter_map(|kind| {
                let now = self.0.get(kind).copied().unwrap_or(0) as i64;
                let then = earlier.0.get(kind).copied().unwrap_or(0) as i64;
                (now != then).then(|| format!("{:+} {kind}", now - then))
            })
            .collect()
    }
}

/// The process's TCP sockets by inode, described by state and peer.
fn tcp_sockets(pid: u32) -> anyhow::Result<HashMap<String, String>> {
    let mut sockets = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(peer), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let state = TCP_STATES
                .iter()
                .find(|(code, _)| code == state)
                .map_or(*state, |(_, name)| name);
            let description = match state {
                "listening" => format!("tcp listening ({table})"),
                _ => format!("tcp {state} to {}", peer_address(peer)),
            };
            sockets.insert((*inode).to_string(), description);
        }
    }
    Ok(sockets)
}

/// "0100007F:1F90" (little-endian IPv4, hex port) as "127.0.0.1:8080"; IPv6
/// peers are left in /proc's spelling.
fn peer_address(hex: &str) -> String {
    let Some((ip, port)) = hex.split_once(':') else {
        return hex.into();
    };
    let port = u16::from_str_radix(port, 16).map_or_else(|_| port.to_string(), |p| p.to_string());
    match u32::from_str_radix(ip, 16) {
        // Eight hex digits: IPv4, in host (little-endian) byte order.
        Ok(v4) if ip.len() == 8 => format!("{}:{port}", std::net::Ipv4Addr::from(v4.swap_bytes())),
        _ => format!("[{ip}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_loopback_peer() {
        assert_eq!(peer_address("0100007F:1F90"), "127.0.0.1:8080");
    }

    #[test]
    fn sees_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let before = Descriptors::of(std::process::id()).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let after = Descriptors::of(std::process::id()).unwrap();
        let peer = format!("tcp established to {}", listener.local_addr().unwrap());
        assert!(
            after.changes_since(&before).contains(&format!("+1 {peer}")),
            "{:?}",
            after.changes_since(&before)
        );
    }
}

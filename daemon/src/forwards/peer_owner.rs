//! Who owns the other end of a local TCP connection. The client's socket is
//! the one whose local address is our peer and whose remote address is our
//! own end; the kernel knows its uid. Asked through netlink sock_diag for
//! exactly that 4-tuple (one small message, tens of microseconds, whatever
//! the number of sockets); where netlink is unavailable, the socket table
//! (`/proc/net/tcp{,6}`, which lists every socket and costs milliseconds on a
//! busy machine) is read instead. Only for connections to owner-only forwards.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// A sock_diag answer about one socket is ~100 bytes plus attributes we do
/// not ask for; this leaves ample room.
const SOCK_DIAG_REPLY_BUFFER: usize = 8 * 1024;
/// sock_diag's "any socket with this 4-tuple" cookie.
const NO_COOKIE: [u8; 8] = [0xff; 8];
/// The kernel's TCP socket tables, IPv4 and IPv6.
const TCP4_TABLE: &str = "/proc/net/tcp";
const TCP6_TABLE: &str = "/proc/net/tcp6";
/// Column of a table row holding the socket owner's uid
/// (`sl local rem st tx:rx tr:when retrnsmt uid ...`).
const UID_COLUMN: usize = 7;

/// Why the owner of a connection could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PeerOwnerError {
    #[error("cannot read the kernel's socket table {table}: {source}")]
    Read {
        table: &'static str,
        source: io::Error,
    },
    /// No such socket in this network namespace: a remote peer, or one that
    /// is already gone.
    #[error("no local socket {peer} connected to {local}")]
    NotLocal { peer: SocketAddr, local: SocketAddr },
}

/// Distinct refused owners logged per forward; beyond this a flood of
/// spoofed or churning peers cannot grow the set without bound.
const MAX_LOGGED_OWNERS: usize = 64;

/// The owner-only rule of one forward: admits the daemon's own user's
/// connections, counts the others and logs each refused owner once.
#[derive(Default)]
pub struct OwnerGate {
    refused: AtomicU64,
    /// Owners already logged (None: owner unknown).
    logged: Mutex<HashSet<Option<u32>>>,
}

impl OwnerGate {
    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// True when the connection `peer → local` belongs to this process's
    /// user. Otherwise counts and logs it; the caller closes it.
    pub fn admit(&self, local: SocketAddr, peer: SocketAddr) -> bool {
        let own = nix::unistd::getuid().as_raw();
        let owner = peer_uid(local, peer);
        if matches!(owner, Ok(uid) if uid == own) {
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let key = owner.as_ref().ok().copied();
        let first = {
            let mut logged = self.logged.lock();
            logged.len() < MAX_LOGGED_OWNERS && logged.insert(key)
        };
        if first {
            match owner {
                Ok(uid) => tracing::warn!(
                    %peer, uid,
                    "refused a connection from another local user (uid {uid}); \
                     `forward add --allow-other-users` serves everyone"
                ),
                Err(error) => {
                    tracing::warn!(%peer, %error, "refused a connection whose owner is unknown")
                }
            }
        }
        false
    }
}

/// The uid owning the socket at `peer` that is connected to our `local`.
pub fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Result<u32, PeerOwnerError> {
    // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d to us
    // but sits in the IPv4 table.
    let (local, peer) = (unmap(local), unmap(peer));
    match sock_diag_uid(local, peer) {
        Ok(Some(uid)) => return Ok(uid),
        Ok(None) => return Err(PeerOwnerError::NotLocal { peer, local }),
        Err(error) => {
            tracing::debug!(%error, "sock_diag lookup failed; reading the socket table");
        }
    }
    let table = match peer.ip() {
        IpAddr::V4(_) => TCP4_TABLE,
        IpAddr::V6(_) => TCP6_TABLE,
    };
    let text =
        std::fs::read_to_string(table).map_err(|source| PeerOwnerError::Read { table, source })?;
    find_uid(&text, local, peer).ok_or(PeerOwnerError::NotLocal { peer, local })
}

/// Asks the kernel (netlink sock_diag) for the TCP socket `peer → local`:
/// its uid, or None when there is no such socket.
fn sock_diag_uid(local: SocketAddr, peer: SocketAddr) -> io::Result<Option<u32>> {
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_sys::{Socket, SocketAddr as KernelAddr, protocols::NETLINK_SOCK_DIAG};

    let mut header = NetlinkHeader::default();
    // Not a dump: the kernel looks the one socket up by its 4-tuple.
    header.flags = NLM_F_REQUEST;
    let request = InetRequest {
        family: if peer.is_ipv4() { AF_INET } else { AF_INET6 },
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: SocketId {
            source_port: peer.port(),
            destination_port: local.port(),
            source_address: peer.ip(),
            destination_address: local.ip(),
            interface_id: 0,
            cookie: NO_COOKIE,
        },
    };
    let mut message = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    message.finalize();
    let mut packet = vec![0; message.buffer_len()];
    message.serialize(&mut packet);

    let socket = Socket::new(NETLINK_SOCK_DIAG)?;
    // The kernel answers while handling the send, so the reply is already
    // queued when we read; non-blocking makes sure a surprise cannot hang
    // a runtime worker.
    socket.set_non_blocking(true)?;
    socket.send_to(&packet, &KernelAddr::new(0, 0), 0)?;
    let mut reply = vec![0; SOCK_DIAG_REPLY_BUFFER];
    let n = socket.recv(&mut &mut reply[..], 0)?;
    let answer = NetlinkMessage::<SockDiagMessage>::deserialize(&reply[..n.min(reply.len())])
        .map_err(io::Error::other)?;
    match answer.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
            Ok(Some(response.header.uid))
        }
        NetlinkPayload::Error(error)
            if error.code.map(|c| c.get()) == Some(-(nix::errno::Errno::ENOENT as i32)) =>
        {
            Ok(None)
        }
        other => Err(io::Error::other(format!(
            "unexpected sock_diag answer: {other:?}"
        ))),
    }
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The uid of the row `peer → local` in a socket table's text.
fn find_uid(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (encode(peer), encode(local));
    table.lines().skip(1).find_map(|line| {
        let mut columns = line.split_ascii_whitespace();
        let _slot = columns.next()?;
        let row_local = columns.next()?;
        let row_remote = columns.next()?;
        if row_local != want_local || row_remote != want_remote {
            return None;
        }
        columns.nth(UID_COLUMN - 3)?.parse().ok()
    })
}

/// An address as the kernel prints it: each 32-bit word of the address in
/// host byte order as 8 hex digits, then the port as 4 hex digits.
fn encode(addr: SocketAddr) -> String {
    let mut text = String::with_capacity(37);
    let octets: Vec<u8> = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    for word in octets.chunks_exact(4) {
        let word = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
        text.push_str(&format!("{word:08X}"));
    }
    text.push_str(&format!(":{:04X}", addr.port()));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_client_row_not_the_server_row() {
        let local: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (l, p) = (encode(local), encode(peer));
        if cfg!(target_endian = "little") {
            assert_eq!(l, "0100007F:08AE");
        }
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {l} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1\n\
             1: {l} {p} 01 00000000:00000000 00:00000000 00000000  1000        0 2\n\
             2: {p} {l} 01 00000000:00000000 00:00000000 00000000  1234        0 3\n"
        );
        assert_eq!(find_uid(&table, local, peer), Some(1234));
        assert_eq!(find_uid(&table, peer, local), Some(1000));
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(find_uid(&table, local, other), None);
    }

    #[test]
    fn a_real_connection_is_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let uid = peer_uid(server.local_addr().unwrap(), peer).unwrap();
        assert_eq!(uid, nix::unistd::getuid().as_raw());
        let local = server.local_addr().unwrap();
        assert_eq!(sock_diag_uid(local, peer).unwrap(), Some(uid));
        let table = std::fs::read_to_string(TCP4_TABLE).unwrap();
        assert_eq!(find_uid(&table, local, peer), Some(uid));
        // Our own end is not a client of itself.
        let stranger: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(sock_diag_uid(local, stranger).unwrap(), None);
    }

    #[test]
    fn ipv6_loopback_and_mapped_addresses() {
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 on this machine
        };
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let uid = peer_uid(server.local_addr().unwrap(), peer).unwrap();
        assert_eq!(uid, nix::unistd::getuid().as_raw());
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(unmap(mapped), "127.0.0.1:5".parse::<SocketAddr>().unwrap());
    }
}

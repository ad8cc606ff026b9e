//! What the kernel's TCP knows about a connection to a Bastion, the one
//! witness that tells a slow peer from a dead path: a peer whose TCP
//! acknowledges our bytes is there, however long its application takes to
//! read them; a path that acknowledges nothing is gone. Sockets are set up
//! here so the kernel gives up on such a path by itself (`TCP_USER_TIMEOUT`,
//! TCP keepalive) while they wait or carry a request, and asked here
//! (`TCP_INFO`, one `getsockopt`) when a tunnel has been silent.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{setsockopt, sockopt};

use crate::config::TunnelSettings;

/// Keepalive probes sent before the kernel gives up on an idle connection;
/// with `TCP_USER_TIMEOUT` set the kernel's verdict comes from that bound,
/// so this only has to be more than one, to survive a lost probe.
const KEEPALIVE_PROBES: u32 = 3;

/// How long the kernel lets a connection to a Bastion go without an
/// acknowledgement (from `[tunnel]`): `None` when pings are off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLiveness {
    /// Idle time before the first TCP keepalive probe (`keepalive_interval_secs`).
    pub idle: Duration,
    /// Unacknowledged data, or unanswered probes, for this long end the
    /// connection (`keepalive_interval_secs + keepalive_timeout_secs`).
    pub user_timeout: Duration,
}

impl TcpLiveness {
    pub fn from_settings(tunnel: &TunnelSettings) -> Option<TcpLiveness> {
        let idle = tunnel.keepalive_interval()?;
        Some(TcpLiveness {
            idle,
            user_timeout: idle + tunnel.keepalive_timeout(),
        })
    }

    /// Sets `TCP_USER_TIMEOUT` and TCP keepalive on `socket`.
    pub fn apply(&self, socket: &impl AsFd) -> nix::Result<()> {
        let secs = |d: Duration| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX);
        let millis = u32::try_from(self.user_timeout.as_millis()).unwrap_or(u32::MAX);
        // Probes spread over the part of the bound that follows the idle time.
        let probe_every = self.user_timeout.saturating_sub(self.idle) / KEEPALIVE_PROBES;
        setsockopt(socket, sockopt::TcpUserTimeout, &millis)?;
        setsockopt(socket, sockopt::KeepAlive, &true)?;
        setsockopt(socket, sockopt::TcpKeepIdle, &secs(self.idle))?;
        setsockopt(socket, sockopt::TcpKeepInterval, &secs(probe_every))?;
        setsockopt(socket, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)
    }
}

/// Takes `TCP_USER_TIMEOUT` off a connection that became a tunnel: Linux
/// counts a peer's closed window against it too, so it would abort a
/// tunnel whose target reads slowly; the tunnel's keepalive judges it
/// instead, asking this module's [`acks`]. TCP keepalive stays.
pub fn leave_to_keepalive(socket: &impl AsFd) -> nix::Result<()> {
    setsockopt(socket, sockopt::TcpUserTimeout, &0)
}

/// What the peer's TCP has acknowledged, from `TCP_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acks {
    /// Segments sent and not acknowledged yet.
    pub unacked: u32,
    /// Window probes sent and not answered yet (a peer with a closed
    /// window answers them; a send that fails locally, with no route,
    /// leaves them unanswered while nothing counts as sent).
    pub probes: u8,
    /// Since the last acknowledgement came in.
    pub since_last: Duration,
}

impl Acks {
    /// Whether the peer's TCP has shown, within `window`, that it is there:
    /// everything sent is acknowledged and no probe waits (a peer whose
    /// window is closed answers the kernel's probes, and unsent bytes wait
    /// for it), or an acknowledgement came recently.
    pub fn peer_alive(&self, window: Duration) -> bool {
        (self.unacked == 0 && self.probes == 0) || self.since_last < window
    }
}

/// The acknowledgement state of `socket`; `None` if it is not TCP.
pub fn acks(socket: BorrowedFd<'_>) -> Option<Acks> {
    let info = info(socket)?;
    Some(Acks {
        unacked: info.tcpi_unacked,
        probes: info.tcpi_probes,
        since_last: Duration::from_millis(info.tcpi_last_ack_recv.into()),
    })
}

/// Whether a request sent on a connection reached the peer: taken before
/// the request goes out, asked when no answer has come
/// (by `dial::await_answer`, which gives up only a request never taken).
pub struct Receipt {
    /// A duplicate of the connection's descriptor (one `dup` per warm
    /// request), as the connection itself moves into hyper.
    socket: OwnedFd,
    /// Bytes of ours the peer's TCP had acknowledged before the request.
    acked: u64,
}

impl Receipt {
    /// `None` if `socket` cannot be asked (not TCP).
    pub fn before_sending(socket: BorrowedFd<'_>) -> Option<Receipt> {
        let acked = info(socket)?.tcpi_bytes_acked;
        let socket = socket.try_clone_to_owned().ok()?;
        Some(Receipt { socket, acked })
    }

    /// Whether the peer's TCP acknowledged any byte sent since: the server
    /// has (part of) the request and may have acted on it. Taken when the
    /// kernel cannot say, as that is the side that never loses a session.
    pub fn taken(&self) -> bool {
        info(self.socket.as_fd()).is_none_or(|info| info.tcpi_bytes_acked > self.acked)
    }
}

/// `TCP_INFO` of `socket`: one `getsockopt`.
fn info(socket: BorrowedFd<'_>) -> Option<libc::tcp_info> {
    // SAFETY: `tcp_info` is plain integers, valid when zeroed; the kernel
    // writes at most `len` bytes into it and says how many it wrote.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: a valid descriptor for the call's duration (borrowed), and a
    // buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

/// A stream carried by a TCP connection whose state can be asked.
pub trait OverTcp {
    /// The TCP socket underneath, if there is one.
    fn tcp(&self) -> Option<BorrowedFd<'_>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn acknowledged_bytes_mean_a_live_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        let liveness = TcpLiveness {
            idle: Duration::from_secs(1),
            user_timeout: Duration::from_secs(2),
        };
        liveness.apply(&client).unwrap();
        assert_eq!(
            nix::sys::socket::getsockopt(&client, sockopt::TcpUserTimeout).unwrap(),
            2000
        );
        // The server reads nothing; its kernel acknowledges all the same.
        client.write_all(&[0u8; 1000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let acks = acks(client.as_fd()).unwrap();
        assert_eq!(acks.unacked, 0, "{acks:?}");
        assert!(acks.peer_alive(Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_receipt_tells_a_request_that_reached_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        let receipt = Receipt::before_sending(client.as_fd()).unwrap();
        assert!(!receipt.taken(), "nothing sent yet");
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        // Loopback acknowledges within microseconds; poll a little.
        for _ in 0..100 {
            if receipt.taken() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the peer's kernel never acknowledged the request");
    }
}

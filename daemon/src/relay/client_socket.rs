//! The local side of a forward's connection: socket options for a client
//! that may vanish (a suspended laptop), and a polite close for every
//! connection, served or refused.

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Kernel keepalive on accepted sockets: notice vanished local clients
/// (suspended laptops, killed containers) within a few minutes.
const TCP_KEEPALIVE_IDLE_SECS: u32 = 60;
const TCP_KEEPALIVE_INTERVAL_SECS: u32 = 15;
const TCP_KEEPALIVE_PROBES: u32 = 4;
/// After our FIN, how long the client gets to read what is still on its
/// way and close its side: a round trip on loopback, so a second is ample
/// even for a client busy drawing a megabyte of output.
const GRACEFUL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Ends a client connection with a FIN rather than a reset. Closing a socket
/// with unread input (ssh sends its banner at once; a user types while the
/// output scrolls) makes Linux send a reset, which throws away whatever the
/// client had not read yet: the target's last bytes. So: shut down our side
/// (the FIN goes after the data), read and discard until the client closes
/// too, at most [`GRACEFUL_CLOSE_TIMEOUT`].
pub async fn close_gracefully(socket: &mut TcpStream) {
    // Already shut down by the pump (the target's EOF), or the client is
    // gone: either way the drain below ends as it should.
    let _ = socket.shutdown().await;
    let drain = async {
        let mut discard = [0u8; 1024];
        while matches!(socket.read(&mut discard).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(GRACEFUL_CLOSE_TIMEOUT, drain).await;
}

pub fn tune_socket(socket: &TcpStream) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    socket.set_nodelay(true).map_err(|_| nix::Error::EINVAL)?;
    let fd = socket.as_fd();
    setsockopt(&fd, sockopt::KeepAlive, &true)?;
    setsockopt(&fd, sockopt::TcpKeepIdle, &TCP_KEEPALIVE_IDLE_SECS)?;
    setsockopt(&fd, sockopt::TcpKeepInterval, &TCP_KEEPALIVE_INTERVAL_SECS)?;
    setsockopt(&fd, sockopt::TcpKeepCount, &TCP_KEEPALIVE_PROBES)
}

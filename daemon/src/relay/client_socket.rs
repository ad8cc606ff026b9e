//! The local side of a forward's connection: socket options for a client
//! that may vanish (a suspended laptop), and a polite close when no tunnel
//! could be had.

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Kernel keepalive on accepted sockets: notice vanished local clients
/// (suspended laptops, killed containers) within a few minutes.
const TCP_KEEPALIVE_IDLE_SECS: u32 = 60;
const TCP_KEEPALIVE_INTERVAL_SECS: u32 = 15;
const TCP_KEEPALIVE_PROBES: u32 = 4;
/// After refusing a connection, how long its client gets to close its side.
const GRACEFUL_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Ends a client connection with a FIN rather than a reset: closing a socket
/// with unread data (ssh sends its banner at once) resets it, and clients
/// report "closed by remote host" more helpfully than "reset by peer".
pub async fn close_gracefully(socket: &mut TcpStream) {
    if socket.shutdown().await.is_err() {
        return;
    }
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

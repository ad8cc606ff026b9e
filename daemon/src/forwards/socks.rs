//! SOCKS5 listeners (RFC 1928: no authentication, CONNECT only): a forward
//! whose target each client names. This is their per-connection step before
//! the tunnel: the greeting and the request, read within
//! [`HANDSHAKE_TIMEOUT`] and never more than the protocol's own bounds
//! (257 + 262 bytes, read exactly, so nothing of the client's stream is
//! taken), the destination made a [`Target`] (an IP uses IP-based
//! connection; a domain name is a VM name, which the forward looks up as it
//! does a declared one: socks5h), and the replies: refusals with the code a
//! client can act on, and success only once the tunnel is open.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bastion_proto::target::{Target, TargetError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::azure::vm_lookup::VmLookupError;
use crate::error::AzureError;
use crate::relay::client_socket::close_gracefully;
use crate::relay::connection::ConnectionError;
use crate::relay::pump::PumpError;

/// Longest the greeting and request may take: a local client writes both at
/// once (two loopback round trips), so 10 s only matters on a machine so
/// loaded it barely runs; a slow or silent client holds a task no longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const VERSION: u8 = 5;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const COMMAND_CONNECT: u8 = 1;
const ADDRESS_IPV4: u8 = 1;
const ADDRESS_DOMAIN: u8 = 3;
const ADDRESS_IPV6: u8 = 4;

/// The reply codes of RFC 1928 §6 that this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    /// The owner-only rule refused the client.
    NotAllowed = 0x02,
    /// The Bastion (or ARM) could not be reached.
    NetworkUnreachable = 0x03,
    /// No VM of that name (or several).
    HostUnreachable = 0x04,
    /// The Bastion refused the target.
    ConnectionRefused = 0x05,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

/// Why a client's handshake ended without a request to serve.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no complete SOCKS5 request within {}s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    #[error("not SOCKS5 (version byte {0:#04x})")]
    Version(u8),
    #[error("the client offers no method without authentication")]
    NoMethod,
    #[error("command {0:#04x} is not supported (only CONNECT)")]
    Command(u8),
    #[error("address type {0:#04x} is not supported")]
    AddressType(u8),
    #[error("{0}")]
    Destination(#[from] TargetError),
    #[error("client connection: {0}")]
    Io(#[from] io::Error),
}

impl HandshakeError {
    /// The reply this failure earns, when the client is still listening for one.
    fn reply(&self) -> Option<Reply> {
        match self {
            HandshakeError::Command(_) => Some(Reply::CommandNotSupported),
            HandshakeError::AddressType(_) => Some(Reply::AddressTypeNotSupported),
            HandshakeError::Destination(TargetError::BadHost(_)) => Some(Reply::HostUnreachable),
            HandshakeError::Destination(_) => Some(Reply::GeneralFailure),
            HandshakeError::Timeout
            | HandshakeError::Version(_)
            | HandshakeError::NoMethod
            | HandshakeError::Io(_) => None,
        }
    }
}

/// Reads the client's CONNECT request: its destination, or `None` once
/// the client has been refused (and its connection closed), for a broken
/// handshake or another user (`admitted` false, told so only after its
/// request, where SOCKS5 has a reply for it).
pub async fn request(socket: &mut TcpStream, admitted: bool) -> Option<Target> {
    let refusal = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(socket)).await {
        Err(_) => HandshakeError::Timeout,
        Ok(Err(e)) => e,
        Ok(Ok(_)) if !admitted => {
            refuse(socket, Reply::NotAllowed).await;
            return None;
        }
        Ok(Ok(target)) => return Some(target),
    };
    tracing::debug!(error = %refusal, "SOCKS5 handshake failed");
    match refusal.reply() {
        Some(reply) => refuse(socket, reply).await,
        None => close_gracefully(socket).await,
    }
    None
}

/// The greeting (answered with "no authentication") and the request.
async fn handshake(socket: &mut TcpStream) -> Result<Target, HandshakeError> {
    let [version, methods] = read_array(socket).await?;
    if version != VERSION {
        return Err(HandshakeError::Version(version));
    }
    let mut offered = [0u8; u8::MAX as usize];
    let offered = &mut offered[..usize::from(methods)];
    socket.read_exact(offered).await?;
    if !offered.contains(&METHOD_NO_AUTH) {
        socket.write_all(&[VERSION, METHOD_NONE_ACCEPTABLE]).await?;
        return Err(HandshakeError::NoMethod);
    }
    socket.write_all(&[VERSION, METHOD_NO_AUTH]).await?;

    let [version, command, _reserved, address_type] = read_array(socket).await?;
    if version != VERSION {
        return Err(HandshakeError::Version(version));
    }
    if command != COMMAND_CONNECT {
        return Err(HandshakeError::Command(command));
    }
    let host = match address_type {
        ADDRESS_IPV4 => Host::Ip(IpAddr::V4(Ipv4Addr::from(read_array(socket).await?))),
        ADDRESS_IPV6 => Host::Ip(IpAddr::V6(Ipv6Addr::from(read_array(socket).await?))),
        ADDRESS_DOMAIN => {
            let [len] = read_array(socket).await?;
            let mut name = vec![0u8; usize::from(len)];
            socket.read_exact(&mut name).await?;
            Host::Domain(name)
        }
        other => return Err(HandshakeError::AddressType(other)),
    };
    let port = u16::from_be_bytes(read_array(socket).await?);
    Ok(host.target(port)?)
}

/// A request's destination address as sent.
enum Host {
    Ip(IpAddr),
    Domain(Vec<u8>),
}

impl Host {
    /// A domain that spells an IP (curl's `--socks5-hostname 10.1.0.4`) is
    /// that IP; any other is a VM name or resource id, as `forward add` reads it.
    fn target(self, port: u16) -> Result<Target, TargetError> {
        let host = match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Domain(bytes) => String::from_utf8(bytes)
                .map_err(|e| TargetError::BadHost(String::from_utf8_lossy(e.as_bytes()).into()))?,
        };
        Target::from_parts(&host, u32::from(port))
    }
}

async fn read_array<const N: usize>(socket: &mut TcpStream) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    socket.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// Tells the client its tunnel is open. The bound address is left
/// unspecified: the connection leaves from the Bastion, which names none.
pub async fn grant(socket: &mut TcpStream) -> Result<(), ConnectionError> {
    socket
        .write_all(&reply_bytes(Reply::Succeeded))
        .await
        .map_err(|e| ConnectionError::Pump(PumpError::Client(e)))
}

/// Sends a failure reply and closes the connection (RFC 1928 §6).
pub async fn refuse(socket: &mut TcpStream, reply: Reply) {
    if socket.write_all(&reply_bytes(reply)).await.is_ok() {
        close_gracefully(socket).await;
    }
}

fn reply_bytes(reply: Reply) -> [u8; 10] {
    // VER REP RSV ATYP=IPv4 BND.ADDR=0.0.0.0 BND.PORT=0
    [VERSION, reply as u8, 0, ADDRESS_IPV4, 0, 0, 0, 0, 0, 0]
}

/// The reply for a tunnel that could not be opened.
pub fn open_reply(error: &ConnectionError) -> Reply {
    match error {
        ConnectionError::Open(e) | ConnectionError::Lookup(VmLookupError::Arm(e)) => azure_reply(e),
        ConnectionError::Lookup(VmLookupError::NotFound(_) | VmLookupError::Ambiguous(_)) => {
            Reply::HostUnreachable
        }
        ConnectionError::Pump(_) => Reply::GeneralFailure,
    }
}

fn azure_reply(error: &AzureError) -> Reply {
    match error {
        AzureError::Rejected { .. } | AzureError::Precondition(_) | AzureError::WebSocket(_) => {
            Reply::ConnectionRefused
        }
        AzureError::Unreachable { .. } | AzureError::TooLarge { .. } => Reply::NetworkUnreachable,
        AzureError::Auth(_)
        | AzureError::NotConfigured(_)
        | AzureError::Busy(_)
        | AzureError::Crowded(_) => Reply::GeneralFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_proto::target::TargetHost;

    #[test]
    fn domains_that_spell_an_ip_are_that_ip() {
        let target = Host::Domain(b"10.1.0.4".to_vec()).target(22).unwrap();
        assert_eq!(target.to_string(), "10.1.0.4:22");
        let target = Host::Domain(b"Web01".to_vec()).target(22).unwrap();
        assert_eq!(target.host, TargetHost::Name("Web01".into()));
        let bad = Host::Domain(b"a b".to_vec()).target(22).unwrap_err();
        assert!(matches!(bad, TargetError::BadHost(_)), "{bad}");
        let zero = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)).target(0);
        assert!(matches!(zero, Err(TargetError::BadPort(_))));
    }

    #[test]
    fn refusals_a_client_can_act_on() {
        let rejected = AzureError::Rejected {
            what: "x",
            status: 404,
            message: String::new(),
        };
        assert_eq!(open_reply(&rejected.into()), Reply::ConnectionRefused);
        let unknown = VmLookupError::NotFound(String::new());
        assert_eq!(open_reply(&unknown.into()), Reply::HostUnreachable);
        assert_eq!(reply_bytes(Reply::NotAllowed)[1], 0x02);
    }
}

//! A minimal SOCKS5 client (RFC 1928: no authentication, CONNECT), for the
//! tests that check a SOCKS5 listener's every reply code and for the bench.
//! Real clients (`nc -X 5`, `curl --socks5-hostname`, ssh) are used where
//! the test is about them; this one can also send what they never would.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub const CONNECT: u8 = 1;
pub const BIND: u8 = 2;
pub const UDP_ASSOCIATE: u8 = 3;

/// Where a request goes.
pub enum Dest<'a> {
    Ip(IpAddr),
    /// Sent as a domain name (socks5h): the proxy resolves it.
    Name(&'a str),
}

/// The request bytes for `command` to `dest:port`.
pub fn request(command: u8, dest: &Dest<'_>, port: u16) -> Vec<u8> {
    let mut bytes = vec![5, command, 0];
    match dest {
        Dest::Ip(IpAddr::V4(ip)) => {
            bytes.push(1);
            bytes.extend_from_slice(&ip.octets());
        }
        Dest::Ip(IpAddr::V6(ip)) => {
            bytes.push(4);
            bytes.extend_from_slice(&ip.octets());
        }
        Dest::Name(name) => {
            bytes.push(3);
            bytes.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            bytes.extend_from_slice(name.as_bytes());
        }
    }
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes
}

/// Greets the proxy (no authentication), sends `request` and returns the
/// reply code, with the stream positioned after the reply.
pub async fn handshake(stream: &mut TcpStream, request: &[u8]) -> anyhow::Result<u8> {
    stream.write_all(&[5, 1, 0]).await?;
    let mut method = [0u8; 2];
    stream
        .read_exact(&mut method)
        .await
        .context("no answer to the greeting")?;
    ensure!(method == [5, 0], "the proxy chose method {method:?}");
    stream.write_all(request).await?;
    let mut head = [0u8; 4];
    stream
        .read_exact(&mut head)
        .await
        .context("no reply to the request")?;
    ensure!(head[0] == 5, "reply version {}", head[0]);
    let address = match head[3] {
        1 => 4,
        4 => 16,
        3 => usize::from(stream.read_u8().await?),
        other => bail!("reply address type {other}"),
    };
    let mut rest = vec![0u8; address + 2];
    stream.read_exact(&mut rest).await?;
    Ok(head[1])
}

/// A connection through the proxy at `proxy` to `dest:port`, once granted.
pub async fn connect(proxy: SocketAddr, dest: &Dest<'_>, port: u16) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy)
        .await
        .with_context(|| format!("cannot connect to {proxy}"))?;
    stream.set_nodelay(true)?;
    let code = handshake(&mut stream, &request(CONNECT, dest, port)).await?;
    ensure!(code == 0, "the proxy refused with reply code {code:#04x}");
    Ok(stream)
}

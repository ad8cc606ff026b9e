//! Outbound proxy for connections to a Bastion host (token POSTs and
//! tunnels). reqwest applies `HTTPS_PROXY` / `NO_PROXY` to ARM and Entra;
//! Bastion connections use our own TCP connect, so they apply the same rules
//! (hyper-util's matcher, as reqwest does) and go through an HTTP `CONNECT`
//! when a proxy is configured.

use std::time::Duration;

use bytes::BytesMut;
use hyper_util::client::proxy::matcher::Matcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::error::AzureError;
use crate::error_body::error_message;

/// TCP connect to the Bastion or the proxy.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The proxy's answer to CONNECT (it connects onwards first).
const PROXY_REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// A CONNECT reply head is a few hundred bytes.
const MAX_REPLY_HEAD: usize = 8 * 1024;

/// The proxy rules from the environment, read once per settings version.
pub struct Proxies(Matcher);

impl Proxies {
    pub fn from_env() -> Proxies {
        Proxies(Matcher::from_env())
    }

    /// A TCP connection to `host:port`, through the proxy if one applies.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, AzureError> {
        let fail = |message: String| AzureError::Unreachable {
            what: "cannot reach the Bastion",
            message,
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let intercept = format!("https://{authority}/")
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| self.0.intercept(&uri));
        let Some(proxy) = intercept else {
            return tcp_connect(host, port).await;
        };
        let uri = proxy.uri();
        if uri.scheme_str() != Some("http") {
            return Err(fail(format!(
                "proxy {} is not supported for tunnels (only http:// proxies are)",
                uri.host().unwrap_or("?")
            )));
        }
        let proxy_host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let proxy_port = uri.port_u16().unwrap_or(80);
        let mut stream = tcp_connect(proxy_host, proxy_port).await?;
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = proxy.basic_auth().and_then(|v| v.to_str().ok()) {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        let handshake = async {
            stream.write_all(request.as_bytes()).await?;
            let mut buf = BytesMut::with_capacity(1024);
            loop {
                if stream.read_buf(&mut buf).await? == 0 || buf.len() > MAX_REPLY_HEAD {
                    return Ok::<_, std::io::Error>(buf);
                }
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Ok(buf);
                }
            }
        };
        let reply = timeout(PROXY_REPLY_TIMEOUT, handshake)
            .await
            .map_err(|_| fail(format!("proxy {proxy_host} did not answer CONNECT in time")))?
            .map_err(|e| fail(format!("proxy {proxy_host}: {e}")))?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&reply) {
            Ok(httparse::Status::Complete(len))
                if response.code.is_some_and(|c| (200..300).contains(&c)) =>
            {
                // Nothing may follow a CONNECT reply before we speak TLS.
                if len != reply.len() {
                    return Err(fail(format!(
                        "proxy {proxy_host} sent data after its CONNECT reply"
                    )));
                }
                Ok(stream)
            }
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or(0);
                Err(AzureError::Rejected {
                    what: "proxy refused the tunnel",
                    status,
                    message: error_message(status, &reply[len..]),
                })
            }
            _ => Err(fail(format!(
                "proxy {proxy_host} answered CONNECT with a malformed reply"
            ))),
        }
    }
}

async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, AzureError> {
    let fail = |message: String| AzureError::Unreachable {
        what: "cannot reach the Bastion",
        message,
    };
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            fail(format!(
                "connecting to {host}:{port} timed out after {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| fail(format!("cannot connect to {host}:{port}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| fail(format!("cannot set TCP_NODELAY: {e}")))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn tunnels_through_an_http_connect_proxy() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_port = proxy.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let n = client.read(&mut head).await.unwrap();
            let head = String::from_utf8_lossy(&head[..n]).to_string();
            assert!(
                head.starts_with(&format!("CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n")),
                "{head}"
            );
            assert!(head.contains("Proxy-Authorization: Basic "), "{head}");
            let mut upstream = TcpStream::connect(("127.0.0.1", target_port))
                .await
                .unwrap();
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .unwrap();
            tokio::io::copy_bidirectional(&mut client, &mut upstream)
                .await
                .ok();
        });
        tokio::spawn(async move {
            let (mut s, _) = target.accept().await.unwrap();
            s.write_all(b"hello via proxy").await.unwrap();
        });
        let proxies = Proxies(
            Matcher::builder()
                .all(format!("http://user:pass@127.0.0.1:{proxy_port}"))
                .build(),
        );
        let mut stream = proxies.connect("127.0.0.1", target_port).await.unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello via proxy");
    }

    #[tokio::test]
    async fn no_proxy_connects_directly_and_refusals_are_reported() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        let direct = Proxies(
            Matcher::builder()
                .all("http://192.0.2.1:3128")
                .no("127.0.0.1")
                .build(),
        );
        direct.connect("127.0.0.1", port).await.unwrap();

        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_port = proxy.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let _ = client.read(&mut head).await.unwrap();
            client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                )
                .await
                .unwrap();
        });
        let proxied = Proxies(
            Matcher::builder()
                .all(format!("http://127.0.0.1:{proxy_port}"))
                .build(),
        );
        let error = proxied.connect("127.0.0.1", port).await.unwrap_err();
        assert!(error.to_string().contains("407"), "{error}");
    }
}

//! TCP (through the proxy when one applies) and TLS to a Bastion host: the
//! one way the daemon opens a connection for a token POST or a WebSocket.
//! Also the leaf type that says whether a request on a connection that sat
//! idle was answered at all ([`Failure`]).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::bastion::proxy::Proxies;
use crate::bastion::tcp::{OverTcp, Receipt, TcpLiveness};
use crate::error::AzureError;

/// TLS handshake (usually a resumption, one round trip).
const TLS_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection to a Bastion host.
pub type TlsConn = TlsStream<TcpStream>;

impl OverTcp for TlsConn {
    fn tcp(&self) -> Option<BorrowedFd<'_>> {
        Some(self.get_ref().0.as_fd())
    }
}

/// How a request on a connection failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection ended before any byte of an answer: a server that closed
    /// the connection while it sat idle. The request may go again on a new one.
    Unanswered(AzureError),
    /// No byte of an answer within the bound for a warm connection, and
    /// none of the request acknowledged by the peer's TCP: its path went
    /// silent (and so, likely, did that of every connection opened before
    /// it), and the Bastion never saw the request. It may go again on a new one.
    Silent(AzureError),
    /// Anything else: the answer (or its absence after a partial one) stands.
    Answered(AzureError),
}

/// A request on a warm connection, whose path may have gone silent while
/// it sat idle (see [`await_answer`]).
pub struct Warm {
    /// How long an answer may take to begin before the request's receipt is asked.
    pub bound: Duration,
    pub receipt: Receipt,
}

/// Awaits `answer`, the start of the answer to a request. On a `warm`
/// connection, when none has come within its bound and the peer's TCP has
/// acknowledged none of the request, the path is silent and the Bastion
/// never saw it: [`Failure::Silent`] (with `silent`'s error), so the request
/// goes on a fresh dial. When the request was acknowledged, the Bastion has
/// it and is only slow (a token POST may already have made a session that
/// only its answer names): the answer is awaited, bounded by the caller.
pub async fn await_answer<F: Future>(
    warm: Option<Warm>,
    answer: F,
    silent: impl FnOnce(Duration) -> AzureError,
) -> Result<F::Output, Failure> {
    let Some(warm) = warm else {
        return Ok(answer.await);
    };
    let mut answer = std::pin::pin!(answer);
    match timeout(warm.bound, &mut answer).await {
        Ok(answered) => Ok(answered),
        Err(_) if warm.receipt.taken() => {
            tracing::debug!(
                "a slow answer on a warm connection (the request was acknowledged): waiting for it"
            );
            Ok(answer.await)
        }
        Err(_) => Err(Failure::Silent(silent(warm.bound))),
    }
}

impl Failure {
    pub fn into_error(self) -> AzureError {
        match self {
            Failure::Unanswered(e) | Failure::Silent(e) | Failure::Answered(e) => e,
        }
    }
}

/// A new TCP + TLS connection to `host` ("name" or "name:port"), whose
/// kernel gives up on a silent path after `liveness` (direct or through the
/// proxy alike: the proxy is the peer our TCP hears from).
pub async fn connect(
    proxies: &Proxies,
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    liveness: Option<TcpLiveness>,
) -> Result<TlsConn, AzureError> {
    let fail = |message: String| AzureError::Unreachable {
        what: "cannot reach the Bastion",
        message,
    };
    let (name, port) = split_host_port(host);
    let tcp = proxies.connect(name, port).await?;
    if let Some(liveness) = liveness {
        liveness
            .apply(&tcp)
            .map_err(|e| fail(format!("cannot set TCP keepalive options: {e}")))?;
    }
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| fail(format!("{name:?} is not a valid TLS server name")))?;
    timeout(
        TLS_TIMEOUT,
        TlsConnector::from(tls).connect(server_name, tcp),
    )
    .await
    .map_err(|_| {
        fail(format!(
            "TLS handshake with {host} timed out after {}s",
            TLS_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| fail(format!("TLS handshake with {host} failed: {e}")))
}

/// "host:port" → (host, port); a bare host means 443.
fn split_host_port(host: &str) -> (&str, u16) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((ip, port)) = rest.split_once("]:")
            && let Ok(port) = port.parse()
        {
            return (ip, port);
        }
        return (rest.trim_end_matches(']'), 443);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name, port),
            Err(_) => (host, 443),
        },
        _ => (host, 443),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(split_host_port("bst.example"), ("bst.example", 443));
        assert_eq!(split_host_port("127.0.0.1:8443"), ("127.0.0.1", 8443));
        assert_eq!(split_host_port("[::1]:8443"), ("::1", 8443));
    }
}

//! One HTTP/1.1 form POST on a TLS connection to a Bastion host (the token
//! request), with hyper's client connection driven in place rather than on a
//! task of its own, and the connection handed back when the server keeps it
//! alive, for the warm connections to reuse.

use std::pin::pin;

use bytes::{Bytes, BytesMut};
use http::{Version, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::azure::http::BodyError;
use crate::bastion::dial::{self, Failure, TlsConn, Warm};
use crate::error::AzureError;

/// The server's answer.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// The connection, when the server keeps it open for another request.
    pub conn: Option<TlsConn>,
}

fn unreachable(error: &hyper::Error) -> AzureError {
    AzureError::Unreachable {
        what: "cannot reach the Bastion",
        message: error.to_string(),
    }
}

/// POSTs `form` (already URL-encoded; it carries a token, so it is never
/// logged) to `path` on `host` over `conn`, reading at most `limit` bytes of
/// answer. An error before any answer is [`Failure::Unanswered`]; on a
/// `warm` connection, a request never acknowledged is [`Failure::Silent`]
/// ([`dial::await_answer`]).
pub async fn post_form(
    conn: TlsConn,
    host: &str,
    path: &str,
    form: String,
    limit: usize,
    warm: Option<Warm>,
) -> Result<Answer, Failure> {
    let request = http::Request::post(path)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(
            header::USER_AGENT,
            concat!("bastiond/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| {
            Failure::Answered(AzureError::Precondition(format!(
                "cannot build the token request for {host:?}: {e}"
            )))
        })?;
    // No I/O yet: the handshake only sets up hyper's state.
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
        .await
        .map_err(|e| Failure::Answered(unreachable(&e)))?;
    let exchange = async move {
        let sent = sender.send_request(request);
        let response = dial::await_answer(warm, sent, |bound| AzureError::Unreachable {
            what: "cannot reach the Bastion",
            message: format!(
                "no answer to the token request within {}s on a warm connection, \
                 and none of it acknowledged",
                bound.as_secs_f32()
            ),
        })
        .await?
        .map_err(|e| Failure::Unanswered(unreachable(&e)))?;
        // Dropping the sender lets the connection future end once the
        // answer is read, giving the connection back.
        drop(sender);
        let status = response.status().as_u16();
        let reusable = response.version() == Version::HTTP_11
            && !response
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let too_large = || {
            Failure::Answered(AzureError::TooLarge {
                what: "reading the Bastion's answer",
                message: BodyError::TooLarge { limit }.to_string(),
            })
        };
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit)) {
            return Err(too_large());
        }
        let mut body = response.into_body();
        let mut read = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::Answered(unreachable(&e)))?;
            if let Ok(data) = frame.into_data() {
                if read.len() + data.len() > limit {
                    return Err(too_large());
                }
                read.extend_from_slice(&data);
            }
        }
        Ok((status, read.freeze(), reusable))
    };
    // The connection is driven alongside the exchange; a failed exchange
    // drops it at once rather than waiting on a silent peer.
    let mut exchange = pin!(exchange);
    let mut connection = pin!(connection.without_shutdown());
    let (answer, parts) = tokio::select! {
        answer = &mut exchange => (answer, None),
        parts = &mut connection => (exchange.await, Some(parts)),
    };
    let (status, body, reusable) = answer?;
    let parts = match parts {
        Some(parts) => parts,
        None => connection.await,
    };
    let conn = parts
        .ok()
        .filter(|parts| reusable && parts.read_buf.is_empty())
        .map(|parts| parts.io.into_inner());
    Ok(Answer { status, body, conn })
}

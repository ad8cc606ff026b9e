//! The one TLS listener: accepts, handshakes, serves HTTP/1.1 with upgrades and
//! routes each request to Entra, ARM, the data plane or the emulator's own endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::http::{Resp, html_page, json};
use super::{Shared, arm, dataplane, entra, fake_az, tunnel};

/// A client that cannot finish a TLS handshake in this long is not coming.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The emulator's private read-only view of its counters.
const LEDGER_PATH: &str = "/_emulator/ledger";

pub(crate) fn spawn_accept_loop(shared: Arc<Shared>, listener: TcpListener, acceptor: TlsAcceptor) {
    let tracker = shared.tracker.clone();
    tracker.spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shared.cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                },
            };
            let (shared, acceptor) = (shared.clone(), acceptor.clone());
            shared.tracker.clone().spawn(async move {
                if let Err(e) = serve_conn(shared, acceptor, tcp).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
}

async fn serve_conn(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
    let svc_shared = shared.clone();
    let service = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(route(&shared, req).await) }
    });
    let mut builder = http1::Builder::new();
    if let Some(after) = shared.faults.idle_close() {
        // hyper's header timer runs while a request head is awaited: on a
        // new connection and between kept-alive requests, as a server's idle
        // timeout does.
        builder.timer(TokioTimer::new()).header_read_timeout(after);
    }
    let conn = builder
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r?,
        _ = shared.cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
    }
    Ok(())
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => {
            entra::token(shared, tenant, req).await
        }
        (&Method::GET, [first, ..]) if first.eq_ignore_ascii_case("subscriptions") => {
            arm::get(shared, req.uri(), req.headers())
        }
        (&Method::POST, [first, ..]) if first.eq_ignore_ascii_case("subscriptions") => {
            arm::post(shared, req.uri(), req.headers())
        }
        (&Method::POST, ["api", "tokens"]) => dataplane::create_token(shared, req).await,
        (&Method::DELETE, ["api", "tokens", auth_token]) => {
            dataplane::delete_token(shared, auth_token, req.headers())
        }
        (&Method::GET, ["webtunnelv2", ws_token]) => tunnel::upgrade(shared, ws_token, req),
        (&Method::POST, _) if path == fake_az::AZ_TOKEN_PATH => {
            fake_az::serve(shared, req.into_body()).await
        }
        (&Method::GET, _) if path == LEDGER_PATH => json(StatusCode::OK, &shared.ledger.snapshot()),
        _ => {
            // Only the first segment: deeper ones may carry tokens.
            let first = segs.first().copied().unwrap_or_default();
            tracing::info!(%method, first, "no such endpoint");
            html_page(StatusCode::NOT_FOUND)
        }
    }
}

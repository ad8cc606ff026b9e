//! The TLS listeners: each accepts, handshakes, serves HTTP/1.1 with upgrades
//! and routes each request by the host it came in on: Entra, ARM, the Standard
//! data plane and the emulator's own endpoints on the main one; a Developer
//! bastion's `/api/connection` on its front; the Developer tunnel on the data pod.

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
use super::{Host, Shared, arm, dataplane, developer, entra, fake_az, tunnel};

/// A client that cannot finish a TLS handshake in this long is not coming.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The emulator's private read-only view of its counters.
const LEDGER_PATH: &str = "/_emulator/ledger";

pub(crate) fn spawn_accept_loop(
    shared: Arc<Shared>,
    host: Host,
    listener: TcpListener,
    acceptor: TlsAcceptor,
) {
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
                if let Err(e) = serve_conn(shared, host, acceptor, tcp).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
}

async fn serve_conn(
    shared: Arc<Shared>,
    host: Host,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
    let svc_shared = shared.clone();
    let service = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(route(&shared, host, req).await) }
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

async fn route(shared: &Arc<Shared>, host: Host, req: Request<Incoming>) -> Resp {
    use Host::{DataPod, DeveloperFront, Main};
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match (host, &method, segs.as_slice()) {
        (Main, &Method::POST, [tenant, "oauth2", "v2.0", "token"]) => {
            entra::token(shared, tenant, req).await
        }
        (Main, &Method::GET, [first, ..]) if first.eq_ignore_ascii_case("subscriptions") => {
            arm::get(shared, req.uri(), req.headers())
        }
        (Main, &Method::POST, [first, ..]) if first.eq_ignore_ascii_case("subscriptions") => {
            arm::post(shared, req.uri(), req.headers())
        }
        (Main | DataPod, &Method::POST, ["api", "tokens"]) => {
            dataplane::create_token(shared, host, req).await
        }
        (Main | DataPod, &Method::DELETE, ["api", "tokens", auth_token]) => {
            dataplane::delete_token(shared, host, auth_token, req.headers())
        }
        (Main, &Method::GET, ["webtunnelv2", ws_token])
        | (DataPod, &Method::GET, ["omni", "webtunnel", ws_token]) => {
            tunnel::upgrade(shared, host, ws_token, req)
        }
        (DeveloperFront, &Method::POST, ["api", "connection"]) => {
            developer::connection(shared, req).await
        }
        // The wrong tunnel for the host: counted, so a test can tell it from a typo.
        (Main, &Method::GET, ["omni", "webtunnel", _]) => refused(shared, "omni_on_standard"),
        (DataPod, &Method::GET, ["webtunnelv2", _]) => refused(shared, "webtunnelv2_on_pod"),
        (DeveloperFront, &Method::POST, ["api", "tokens"]) => {
            refused(shared, "tokens_on_developer_front")
        }
        (Main, &Method::POST, _) if path == fake_az::AZ_TOKEN_PATH => {
            fake_az::serve(shared, req.into_body()).await
        }
        (Main, &Method::GET, _) if path == LEDGER_PATH => {
            json(StatusCode::OK, &shared.ledger.snapshot())
        }
        _ => {
            // Only the first segment: deeper ones may carry tokens.
            let first = segs.first().copied().unwrap_or_default();
            tracing::info!(%method, first, ?host, "no such endpoint");
            html_page(StatusCode::NOT_FOUND)
        }
    }
}

/// The Tomcat 404 page, with `reason` in the ledger.
fn refused(shared: &Shared, reason: &str) -> Resp {
    shared.ledger.reject(reason);
    html_page(StatusCode::NOT_FOUND)
}

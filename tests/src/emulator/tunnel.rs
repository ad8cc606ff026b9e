//! `GET /webtunnelv2/{websocketToken}?X-Node-Id=…` (or, on a data pod,
//! `GET /omni/webtunnel/{websocketToken}`, no node id): the RFC 6455 upgrade,
//! then raw bytes relayed between binary frames and a TCP connection into the VNet.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument;

use super::faults::HandshakeQuirk;
use super::http::{Resp, empty, html_page, query_param, tomcat_page};
use super::relay::{Relay, close_frame};
use super::sessions::Claimed;
use super::vnet::Route;
use super::{Host, Shared};

/// Bounded per-tunnel buffers: tungstenite's 128 KiB read default dominates memory at scale.
const WS_READ_BUFFER: usize = 64 * 1024;
/// Frames are written straight through; a send flushes anyway.
const WS_WRITE_BUFFER: usize = 0;
/// Back-pressure: a slow client cannot make us queue more than this.
const WS_MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// Clients send at most tens of KiB per frame; anything far bigger is abuse.
const WS_MAX_FRAME: usize = 4 * 1024 * 1024;
/// A target that never answers the SYN fails its tunnel after this long instead of hanging it.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stalled-after-upgrade quirk connection is held before it is let go.
const STALL_HOLD: Duration = Duration::from_secs(600);

pub(crate) fn upgrade(
    shared: &Arc<Shared>,
    host: Host,
    ws_token: &str,
    req: Request<Incoming>,
) -> Resp {
    let ledger = &shared.ledger;
    let Some(key) = websocket_key(req.headers()) else {
        ledger.reject("not_websocket");
        return html_page(StatusCode::BAD_REQUEST);
    };
    // A pod's tunnel URL has no node id (the pod is the node).
    let node_id = match host {
        Host::DataPod => None,
        _ => Some(query_param(req.uri(), "X-Node-Id").unwrap_or_default()),
    };
    let claimed = match shared.sessions.claim(host, ws_token, node_id.as_deref()) {
        Ok(c) => c,
        Err(reason) => {
            ledger.reject(reason);
            return html_page(StatusCode::NOT_FOUND);
        }
    };
    let quirk = shared.faults.take_quirk();
    let mut resp = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = resp.headers_mut();
    if quirk != Some(HandshakeQuirk::NoUpgradeHeaders) {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    let on_upgrade = hyper::upgrade::on(req);
    let shared2 = shared.clone();
    let span = tracing::info_span!("tunnel", target = %claimed.target);
    shared.tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => run(shared2, upgraded, claimed, quirk).await,
                Err(e) => tracing::warn!(error = %e, "upgrade failed"),
            }
        }
        .instrument(span),
    );
    resp
}

/// The Sec-WebSocket-Key of a well-formed RFC 6455 upgrade request.
fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let has = |name, want: &str| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
    };
    if !(has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
        && has(header::SEC_WEBSOCKET_VERSION, "13"))
    {
        return None;
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

async fn run(
    shared: Arc<Shared>,
    upgraded: Upgraded,
    claimed: Claimed,
    quirk: Option<HandshakeQuirk>,
) {
    let mut io = TokioIo::new(upgraded);
    match quirk {
        Some(HandshakeQuirk::HttpTextAfter101) => {
            tracing::info!("quirk: HTTP text after 101");
            let page = tomcat_page(StatusCode::BAD_REQUEST);
            let raw = format!(
                "HTTP/1.1 400 \r\nContent-Type: text/html;charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            // The client may already be gone; nothing to do about it.
            let _ = io.write_all(raw.as_bytes()).await;
            let _ = io.shutdown().await;
            return;
        }
        Some(HandshakeQuirk::StallAfterUpgrade) => {
            tracing::info!("quirk: stalled after upgrade");
            tokio::select! {
                _ = shared.cancel.cancelled() => {}
                _ = tokio::time::sleep(STALL_HOLD) => {}
            }
            return;
        }
        _ => {}
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .max_frame_size(Some(WS_MAX_FRAME))
        .max_message_size(Some(WS_MAX_FRAME));
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let target = match connect(claimed.route).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(error = %e, "target unreachable, closing tunnel");
            let _ = ws
                .close(Some(close_frame(
                    CloseCode::Error,
                    "Connection to target failed",
                )))
                .await;
            return;
        }
    };
    let relay = Relay::new(&shared);
    shared.ledger.update(|l| l.open_websockets += 1);
    tracing::info!("tunnel open");
    let end = relay.run(ws, target).await;
    tracing::info!(?end, "tunnel closed");
    shared
        .ledger
        .update(|l| l.open_websockets = l.open_websockets.saturating_sub(1));
}

async fn connect(route: Route) -> std::io::Result<TcpStream> {
    let Route::Connect(addr) = route else {
        return Err(std::io::ErrorKind::ConnectionRefused.into());
    };
    let stream = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

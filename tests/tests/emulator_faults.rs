//! Fault switches: each fires as configured and the emulator recovers when it is off.

mod common;

use std::time::{Duration, Instant};

use bastion_tests::emulator::{DropMode, FaultBody, HandshakeQuirk};
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long a negative check ("nothing arrives") watches; a live relay answers in
/// well under a millisecond on loopback.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_post_failures_then_recovery() {
    let env = Env::start().await;
    let token = env.token().await;
    let faults = env.emu.faults();
    let cases = [
        (
            FaultBody::Json("Service busy".into()),
            503,
            "application/json",
        ),
        (
            FaultBody::Html("<html>Bad gateway</html>".into()),
            502,
            "text/html",
        ),
        (FaultBody::Empty, 500, ""),
    ];
    for (body, status, content_type) in cases {
        faults.fail_token_posts(1, status, body);
        let err = env
            .client
            .session(&token, "10.1.0.4", 22)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&status.to_string()), "{err}");
        let _ = content_type;
    }
    faults.fail_token_posts(2, 429, FaultBody::Json("Too many".into()));
    let resp = env.client.post_form(&[("aztoken", &token)]).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["message"],
        "Too many"
    );
    assert!(env.client.session(&token, "10.1.0.4", 22).await.is_err());
    env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    assert_eq!(env.emu.ledger().rejected("injected_token_post_failure"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_before_token_answer() {
    let env = Env::start().await;
    let token = env.token().await;
    env.emu.faults().set_delay(Duration::from_millis(400));
    let started = Instant::now();
    env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// Sends `data` and collects what comes back until the stream ends; returns the
/// echoed bytes and the Close frame, if one came.
async fn echo_until_end(env: &Env, data: &[u8]) -> (usize, Option<CloseCode>) {
    let token = env.token().await;
    let (_, ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    let send = async {
        for chunk in data.chunks(CLI_FRAME) {
            if sink
                .send(Message::Binary(Bytes::copy_from_slice(chunk)))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let recv = async {
        let mut got = 0;
        loop {
            match tokio::time::timeout(T, stream.next())
                .await
                .expect("tunnel never ended")
            {
                Some(Ok(Message::Binary(b))) => got += b.len(),
                Some(Ok(Message::Close(frame))) => return (got, frame.map(|f| f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (got, None),
            }
        }
    };
    tokio::join!(send, recv).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_after_bytes_abrupt_and_close() {
    let env = Env::start().await;
    let data = payload(400_000, 9);
    env.emu
        .faults()
        .drop_websockets_after(Some(20_000), DropMode::Abrupt);
    let (got, close) = echo_until_end(&env, &data).await;
    assert!(close.is_none(), "abrupt means no Close frame");
    assert!(got < data.len(), "dropped early, got {got}");
    env.emu
        .faults()
        .drop_websockets_after(Some(20_000), DropMode::CloseFrame);
    let (got, close) = echo_until_end(&env, &data).await;
    assert_eq!(close, Some(CloseCode::Error));
    assert!(got < data.len());
    env.wait("tunnels gone", |l| l.open_websockets == 0).await;
    env.emu
        .faults()
        .drop_websockets_after(None, DropMode::Abrupt);
    let token = env.token().await;
    let (_, ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    echo_through(ws, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_all_live_websockets() {
    let env = Env::start().await;
    let token = env.token().await;
    let (_, mut a) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    let (_, mut b) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    env.wait("two tunnels", |l| l.open_websockets == 2).await;
    env.emu.faults().drop_all_websockets(DropMode::CloseFrame);
    assert_eq!(
        next_close(&mut a).await.map(|f| f.code),
        Some(CloseCode::Error)
    );
    assert_eq!(
        next_close(&mut b).await.map(|f| f.code),
        Some(CloseCode::Error)
    );
    env.wait("no tunnels", |l| l.open_websockets == 0).await;
    let (_, mut c) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    env.wait("one tunnel", |l| l.open_websockets == 1).await;
    env.emu.faults().drop_all_websockets(DropMode::Abrupt);
    assert!(next_close(&mut c).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_and_resume() {
    let env = Env::start().await;
    let token = env.token().await;
    let (_, ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    let mut ws = echo_through(ws, b"before").await;
    env.emu.faults().stall_websockets(true);
    ws.send(Message::Binary(Bytes::from_static(b"during")))
        .await
        .unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(QUIET, ws.next()).await.is_err(),
        "a stalled tunnel stays silent"
    );
    env.emu.faults().stall_websockets(false);
    assert_eq!(recv_bytes(&mut ws, 6).await, b"during");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_no_upgrade_headers_still_tunnels() {
    let env = Env::start_with(
        |_| {},
        |f| f.set_handshake_quirk(Some(HandshakeQuirk::NoUpgradeHeaders)),
    )
    .await;
    let token = env.token().await;
    let session = env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    // tungstenite's client refuses such a 101, as a strict client would: go raw.
    let mut tls = env.client.tls_connect().await.unwrap();
    let req = raw_upgrade_request(&env, &session);
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        !head.contains("upgrade:") && !head.contains("connection:"),
        "{head}"
    );
    let ws = WebSocketStream::from_raw_socket(tls, Role::Client, None).await;
    let (mut sink, mut stream) = ws.split();
    send_frames(&mut sink, b"after the quirk", CLI_FRAME).await;
    assert_eq!(recv_bytes(&mut stream, 15).await, b"after the quirk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_http_text_after_101() {
    let env = Env::start_with(
        |_| {},
        |f| f.set_handshake_quirk(Some(HandshakeQuirk::HttpTextAfter101)),
    )
    .await;
    let token = env.token().await;
    let (_, mut ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    let _ = ws.send(Message::Binary(Bytes::from_static(b"x"))).await;
    match tokio::time::timeout(T, ws.next()).await.unwrap() {
        Some(Err(_)) | None => {}
        Some(Ok(m)) => panic!("HTML is no WebSocket frame, got {m:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quirk_stall_after_upgrade() {
    let env = Env::start_with(
        |_| {},
        |f| f.set_handshake_quirk(Some(HandshakeQuirk::StallAfterUpgrade)),
    )
    .await;
    let token = env.token().await;
    let (_, mut ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"x")))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(QUIET, ws.next()).await.is_err(),
        "no pong, no echo"
    );
    // Shutdown lets go of the held connection.
    tokio::time::timeout(T, env.emu.shutdown()).await.unwrap();
}

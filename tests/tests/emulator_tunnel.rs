//! The tunnel: upgrade checks, byte relay to the VNet services, close handling,
//! single-use tokens, and the acceptance test (8 Azure-CLI-like clients at once).

mod common;

use std::net::{IpAddr, SocketAddr};

use bastion_tests::emulator::{WS_TOKEN_TTL, source_byte};
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_happy_path_and_ledger() {
    let env = Env::start().await;
    let token = env.token().await;
    let (session, ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    env.wait("tunnel open", |l| l.open_websockets == 1).await;
    let data = payload(300_000, 1);
    let mut ws = echo_through(ws, &data).await;
    ws.close(None).await.unwrap();
    next_close(&mut ws).await;
    env.wait("tunnel closed", |l| l.open_websockets == 0).await;
    assert_eq!(env.client.delete(&session).await.unwrap(), 204);
    let l = env.wait("session deleted", |l| l.live_sessions == 0).await;
    assert_eq!((l.sessions_created, l.deletes), (1, 1));
    assert_eq!((l.bytes_up, l.bytes_down), (300_000, 300_000));
    assert!(l.rejects.is_empty(), "{l:?}");
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_sends_pattern_then_closes_normally() {
    let env = Env::start().await;
    let token = env.token().await;
    let (_, mut ws) = env.client.tunnel(&token, "10.1.0.6", 80).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"200000\n")))
        .await
        .unwrap();
    let got = recv_bytes(&mut ws, 200_000).await;
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, b)| *b == source_byte(i as u64))
    );
    let close = next_close(&mut ws)
        .await
        .expect("a Close frame after target EOF");
    assert_eq!(close.code, CloseCode::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_answer_directly() {
    let env = Env::start().await;
    let services = env.emu.info().services;
    let mut sink = tokio::net::TcpStream::connect(services.sink).await.unwrap();
    let data = payload(100_000, 3);
    sink.write_all(b"100000\n").await.unwrap();
    sink.write_all(&data).await.unwrap();
    let mut line = String::new();
    sink.read_to_string(&mut line).await.unwrap();
    assert_eq!(line, format!("100000 {}\n", sha(&data)));

    let mut source = tokio::net::TcpStream::connect(services.source)
        .await
        .unwrap();
    source.write_all(b"1000\n").await.unwrap();
    let mut got = Vec::new();
    source.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 1000);
    assert_eq!(got[252], source_byte(252));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_token_is_single_use() {
    let env = Env::start().await;
    let token = env.token().await;
    let session = env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    let ws = env
        .client
        .open_ws(&session.websocket_token, &session.node_id)
        .await
        .unwrap();
    let again = env
        .client
        .open_ws(&session.websocket_token, &session.node_id)
        .await;
    assert!(again.unwrap_err().to_string().contains("404"));
    assert_eq!(env.emu.ledger().rejected("ws_token_reused"), 1);
    echo_through(ws, b"still works").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_node_id_and_unknown_token_are_404() {
    let env = Env::start().await;
    let token = env.token().await;
    let session = env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    let err = env
        .client
        .open_ws(&session.websocket_token, "10.0.0.1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let err = env
        .client
        .open_ws("nonsense", &session.node_id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let l = env.emu.ledger();
    assert_eq!(
        (l.rejected("ws_wrong_node"), l.rejected("ws_token_unknown")),
        (1, 1)
    );
    // A wrong node id does not burn the token.
    let ws = env
        .client
        .open_ws(&session.websocket_token, &session.node_id)
        .await
        .unwrap();
    echo_through(ws, b"ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_websocket_token_expires() {
    let env = Env::start().await;
    let token = env.token().await;
    let session = env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    // The expiry is wall-clock based; there is no event to wait for.
    tokio::time::sleep(WS_TOKEN_TTL + std::time::Duration::from_millis(300)).await;
    let err = env
        .client
        .open_ws(&session.websocket_token, &session.node_id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(env.emu.ledger().rejected("ws_token_expired"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frame_is_refused_with_1003() {
    let env = Env::start().await;
    let token = env.token().await;
    let (_, mut ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let close = next_close(&mut ws).await.expect("Close frame");
    assert_eq!(close.code, CloseCode::Unsupported);
    env.wait("text frame rejected", |l| {
        l.rejected("text_frame") == 1 && l.open_websockets == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_frame_ends_the_stream() {
    let env = Env::start().await;
    let token = env.token().await;
    let (_, mut ws) = env.client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    ws.send(Message::Binary(Bytes::new())).await.unwrap();
    let close = next_close(&mut ws).await.expect("Close frame");
    assert_eq!(close.code, CloseCode::Normal);
    env.wait("empty frame counted", |l| {
        l.rejected("empty_frame") == 1 && l.open_websockets == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_frame_is_refused_with_1002() {
    let env = Env::start().await;
    let token = env.token().await;
    let session = env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    let mut tls = env.client.tls_connect().await.unwrap();
    let req = raw_upgrade_request(&env, &session);
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tls.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    // FIN + binary, no mask bit, 3 bytes.
    tls.write_all(&[0x82, 0x03, b'a', b'b', b'c'])
        .await
        .unwrap();
    let mut frame = [0u8; 4];
    tls.read_exact(&mut frame).await.unwrap();
    assert_eq!(frame[0], 0x88, "a Close frame");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1002);
    env.wait("unmasked frame rejected", |l| {
        l.rejected("unmasked_frame") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_target_closes_right_after_upgrade() {
    let env = Env::start().await;
    let token = env.token().await;
    let (_, mut ws) = env.client.tunnel(&token, "10.1.0.9", 22).await.unwrap();
    let close = next_close(&mut ws).await.expect("Close frame");
    assert_eq!(close.code, CloseCode::Error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_target_and_ping() {
    let env = Env::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to: SocketAddr = listener.local_addr().unwrap();
    env.emu
        .map_target("10.1.0.8".parse::<IpAddr>().unwrap(), 2222, to);
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"SSH-2.0-test\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let token = env.token().await;
    let (_, mut ws) = env.client.tunnel(&token, "10.1.0.8", 2222).await.unwrap();
    assert_eq!(recv_bytes(&mut ws, 14).await, b"SSH-2.0-test\r\n");
    ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"p")));
}

/// Acceptance: an independent client following the Azure CLI (form POST with
/// resourceId/hostname, a token per connection, masked frames of ≤ 4 KiB, DELETE at
/// the end) moves verified bytes over 8 connections at once, and nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_eight_cli_like_connections() {
    const CONNECTIONS: u8 = 8;
    const BYTES: usize = 1 << 20;
    let env = Env::start().await;
    let aztoken = env.token().await;
    let runs = (0..CONNECTIONS).map(|i| {
        let (client, aztoken) = (env.client.clone(), aztoken.clone());
        tokio::spawn(async move {
            let (session, ws) = client.tunnel(&aztoken, "10.1.0.4", 22).await.unwrap();
            let mut ws = echo_through(ws, &payload(BYTES, i)).await;
            ws.close(None).await.unwrap();
            next_close(&mut ws).await;
            assert_eq!(client.delete(&session).await.unwrap(), 204);
        })
    });
    for run in futures_util::future::join_all(runs).await {
        run.unwrap();
    }
    let l = env
        .wait("all sessions deleted and closed", |l| {
            l.live_sessions == 0 && l.open_websockets == 0
        })
        .await;
    assert_eq!(l.sessions_created, u64::from(CONNECTIONS));
    assert_eq!(l.deletes, u64::from(CONNECTIONS));
    assert_eq!(l.bytes_up, u64::from(CONNECTIONS) * BYTES as u64);
    assert_eq!(l.bytes_down, l.bytes_up);
    assert!(l.rejects.is_empty(), "{l:?}");
    env.emu.shutdown().await;
}

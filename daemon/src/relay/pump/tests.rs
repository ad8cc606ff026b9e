//! The pump against an in-memory client and WebSocket peer.
use std::sync::atomic::Ordering;

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

/// An in-memory tunnel has no TCP to ask: the keepalive judges by frames and back-pressure.
impl OverTcp for DuplexStream {
    fn tcp(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

const FAST: PumpOptions = PumpOptions {
    checks: None,
    keepalive: Keepalive {
        interval: Some(Duration::from_millis(100)),
        timeout: Duration::from_millis(200),
    },
    max_frame: 64 * 1024,
    eof_linger: Duration::from_secs(2),
    probe: None,
};

/// A client pipe and a WebSocket peer ("the Bastion") around a pump task.
async fn setup(
    options: PumpOptions,
) -> (
    DuplexStream,
    WebSocketStream<DuplexStream>,
    tokio::task::JoinHandle<(Result<(), PumpError>, Traffic)>,
) {
    let (client, pump_side) = tokio::io::duplex(1 << 20);
    let (ws_client, ws_server) = tokio::io::duplex(1 << 20);
    let ws = WebSocketStream::from_raw_socket(
        ws_client,
        Role::Client,
        Some(crate::bastion::websocket::config()),
    )
    .await;
    let peer = WebSocketStream::from_raw_socket(ws_server, Role::Server, None).await;
    let task = tokio::spawn(async move {
        let traffic = Traffic::default();
        let (r, w) = tokio::io::split(pump_side);
        let result = pump(
            r,
            w,
            ws,
            Bytes::new(),
            &options,
            &[&traffic],
            &CancellationToken::new(),
        )
        .await;
        (result, traffic)
    });
    (client, peer, task)
}

#[tokio::test]
async fn echoes_and_delivers_the_reply_after_client_eof() {
    let (mut client, mut peer, task) = setup(FAST).await;
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    let Some(Ok(Message::Binary(data))) = peer.next().await else {
        panic!("no data")
    };
    assert_eq!(&data[..], b"ping");
    // The reply still arrives: no Close was sent on the client's EOF yet.
    peer.send(Message::Binary("pong".into())).await.unwrap();
    let mut reply = [0u8; 4];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"pong");
    // Then, once quiet, the pump closes, answering pings meanwhile.
    loop {
        match peer.next().await {
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Ping(_))) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Reading on sends tungstenite's reply to the Close.
    assert!(peer.next().await.is_none());
    let (result, traffic) = task.await.unwrap();
    result.unwrap();
    assert_eq!(traffic.up.load(Ordering::Relaxed), 4);
    assert_eq!(traffic.down.load(Ordering::Relaxed), 4);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn upstream_close_ends_the_client_and_error_codes_are_reported() {
    let (mut client, mut peer, task) = setup(FAST).await;
    peer.send(Message::Binary("bye".into())).await.unwrap();
    peer.close(None).await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
    task.await.unwrap().0.unwrap();

    let (_client, mut peer, task) = setup(FAST).await;
    peer.close(Some(CloseFrame {
        code: CloseCode::Error,
        reason: "Connection to target failed".into(),
    }))
    .await
    .unwrap();
    let error = task.await.unwrap().0.unwrap_err().to_string();
    assert!(error.contains("Connection to target failed"), "{error}");
}

#[tokio::test]
async fn a_slow_client_is_not_a_stalled_tunnel() {
    let (mut client, mut peer, task) = setup(FAST).await;
    const TOTAL: usize = 4 << 20;
    let sender = tokio::spawn(async move {
        for _ in 0..TOTAL / READ_CHUNK {
            peer.send(Message::Binary(vec![7u8; READ_CHUNK].into()))
                .await
                .unwrap();
        }
        peer
    });
    // Read nothing for several keepalive periods while the pipe is full.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !task.is_finished(),
        "the tunnel was closed while the client was slow"
    );
    let mut got = vec![0u8; TOTAL];
    client.read_exact(&mut got).await.unwrap();
    let _peer = sender.await.unwrap();
    assert!(!task.is_finished());
}

#[tokio::test]
async fn a_long_upload_to_a_quiet_target_keeps_answering_pings() {
    let (mut client, mut peer, task) = setup(FAST).await;
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while let Some(Ok(message)) = peer.next().await {
            if let Message::Binary(data) = message {
                received += data.len();
            }
        }
        received
    });
    let chunk = vec![1u8; 16 * 1024];
    let until = Instant::now() + Duration::from_millis(1000);
    let mut sent = 0;
    while Instant::now() < until {
        client.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    assert!(
        !task.is_finished(),
        "the tunnel was closed during the upload"
    );
    drop(client);
    let (result, traffic) = task.await.unwrap();
    result.unwrap();
    assert_eq!(traffic.up.load(Ordering::Relaxed), sent as u64);
    assert_eq!(reader.await.unwrap(), sent);
}

/// The pump task's error, which must come within a few seconds.
async fn failure(task: tokio::task::JoinHandle<(Result<(), PumpError>, Traffic)>) -> PumpError {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the pump did not end")
        .expect("the pump panicked")
        .0
        .expect_err("the pump ended without an error")
}

#[tokio::test]
async fn a_stalled_tunnel_fails_the_keepalive() {
    let (mut client, mut peer, task) = setup(FAST).await;
    peer.send(Message::Binary("hello".into())).await.unwrap();
    let mut got = [0u8; 5];
    client.read_exact(&mut got).await.unwrap();
    // The peer reads no more, so it never answers the ping.
    let error = failure(task).await;
    assert!(matches!(error, PumpError::Keepalive(_)), "{error}");
}

#[tokio::test]
async fn a_tunnel_that_never_answers_is_given_up_as_unconfirmed() {
    let options = PumpOptions {
        keepalive: Keepalive {
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(10),
        },
        probe: Some(Duration::from_millis(300)),
        ..FAST
    };
    let (_client, peer, task) = setup(options).await;
    let started = Instant::now();
    let error = failure(task).await;
    assert!(
        matches!(&error, PumpError::Unconfirmed { error, .. } if matches!(**error, PumpError::Silent(_))),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "{error}");
    drop(peer);
}

#[tokio::test]
async fn a_vanished_tunnel_is_replaceable_only_before_client_bytes_went_up() {
    let (_client, peer, task) = setup(FAST).await;
    drop(peer);
    let error = failure(task).await;
    assert!(matches!(error, PumpError::Unconfirmed { .. }), "{error}");

    let (mut client, mut peer, task) = setup(FAST).await;
    client.write_all(b"GET / HTTP/1.1").await.unwrap();
    let Some(Ok(Message::Binary(_))) = peer.next().await else {
        panic!("no data")
    };
    drop(peer);
    let error = failure(task).await;
    assert!(!matches!(error, PumpError::Unconfirmed { .. }), "{error}");
}

#[tokio::test]
async fn an_upload_to_a_target_that_pauses_survives_the_keepalive() {
    let (mut client, mut peer, task) = setup(FAST).await;
    const TOTAL: usize = 8 << 20;
    // The tunnel proves itself first (a banner), so the upload is not held
    // for confirmation: what follows is back-pressure alone.
    peer.send(Message::Binary("banner".into())).await.unwrap();
    let mut banner = [0u8; 6];
    client.read_exact(&mut banner).await.unwrap();
    let writer = tokio::spawn(async move {
        client.write_all(&vec![3u8; TOTAL]).await.unwrap();
        client
    });
    // The target reads nothing for many keepalive periods (100 + 200 ms).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !task.is_finished(),
        "the keepalive cut a tunnel that was only waiting for its target"
    );
    let mut received = 0;
    while received < TOTAL {
        match peer.next().await {
            Some(Ok(Message::Binary(data))) => received += data.len(),
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let _client = writer.await.unwrap();
    assert!(!task.is_finished());
}

#[tokio::test]
async fn frames_never_exceed_max_frame() {
    let options = PumpOptions {
        max_frame: 4096,
        ..FAST
    };
    let (mut client, mut peer, _task) = setup(options).await;
    const TOTAL: usize = 100_000;
    client.write_all(&vec![1u8; TOTAL]).await.unwrap();
    let mut received = 0;
    while received < TOTAL {
        if let Some(Ok(Message::Binary(data))) = peer.next().await {
            assert!(data.len() <= 4096, "a {}-byte frame", data.len());
            received += data.len();
        }
    }
}

#[tokio::test]
async fn a_close_1009_names_max_frame_bytes() {
    let (_client, mut peer, task) = setup(FAST).await;
    peer.close(Some(CloseFrame {
        code: CloseCode::Size,
        reason: "Message too big".into(),
    }))
    .await
    .unwrap();
    let error = failure(task).await.to_string();
    assert!(error.contains("max_frame_bytes"), "{error}");
}

#[tokio::test]
async fn pings_off_means_no_ping_and_no_verdict() {
    let options = PumpOptions {
        keepalive: Keepalive {
            interval: None,
            timeout: Duration::from_millis(200),
        },
        ..FAST
    };
    let (_client, mut peer, task) = setup(options).await;
    let idle = tokio::time::timeout(Duration::from_millis(800), peer.next()).await;
    assert!(idle.is_err(), "something was sent: {idle:?}");
    assert!(!task.is_finished());
}

#[tokio::test]
async fn an_answering_peer_keeps_an_idle_tunnel_open() {
    let (mut client, mut peer, task) = setup(FAST).await;
    // tungstenite answers pings while we read; stay idle for several intervals.
    let idle_until = Instant::now() + Duration::from_millis(800);
    let mut pings = 0;
    while let Ok(message) = tokio::time::timeout_at(idle_until, peer.next()).await {
        assert!(matches!(message, Some(Ok(Message::Ping(_)))), "{message:?}");
        pings += 1;
    }
    assert!(pings >= 2, "an idle tunnel is pinged");
    assert!(!task.is_finished());
    client.write_all(b"still here").await.unwrap();
    let Some(Ok(Message::Binary(data))) = peer.next().await else {
        panic!("no data")
    };
    assert_eq!(&data[..], b"still here");
}

#[tokio::test]
async fn an_unconfirmed_tunnel_gets_the_replay_budget_then_a_ping() {
    const TOTAL: usize = 4 * REPLAY_LIMIT;
    let (mut client, mut peer, task) = setup(FAST).await;
    let writer = tokio::spawn(async move {
        client.write_all(&vec![5u8; TOTAL]).await.unwrap();
        client
    });
    let mut before_ping = 0;
    loop {
        match peer.next().await {
            Some(Ok(Message::Binary(data))) => before_ping += data.len(),
            Some(Ok(Message::Ping(_))) => break,
            other => panic!("unexpected {other:?} after {before_ping} bytes"),
        }
    }
    // All of it replayable, were the tunnel to fail now.
    assert_eq!(before_ping, REPLAY_LIMIT);
    // The peer's pong (sent as it reads on) confirms the tunnel: the rest follows.
    let mut received = before_ping;
    while received < TOTAL {
        match peer.next().await {
            Some(Ok(Message::Binary(data))) => received += data.len(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?} after {received} bytes"),
        }
    }
    let _client = writer.await.unwrap();
    assert!(!task.is_finished());
}

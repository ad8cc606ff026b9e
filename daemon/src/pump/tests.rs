//! The pump against an in-memory client and WebSocket peer.
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

const FAST: Keepalive = Keepalive {
    interval: Duration::from_millis(100),
    timeout: Duration::from_millis(200),
};

/// A client pipe and a WebSocket peer ("the Bastion") around a pump task.
async fn setup(
    keepalive: Keepalive,
) -> (
    DuplexStream,
    WebSocketStream<DuplexStream>,
    tokio::task::JoinHandle<(Result<(), PumpError>, Traffic)>,
) {
    let (client, pump_side) = tokio::io::duplex(1 << 20);
    let (ws_client, ws_server) = tokio::io::duplex(1 << 20);
    let ws =
        WebSocketStream::from_raw_socket(ws_client, Role::Client, Some(crate::websocket::config()))
            .await;
    let peer = WebSocketStream::from_raw_socket(ws_server, Role::Server, None).await;
    let task = tokio::spawn(async move {
        let traffic = Traffic::default();
        let (r, w) = tokio::io::split(pump_side);
        let result = pump(r, w, ws, keepalive, &[&traffic], &CancellationToken::new()).await;
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

#[tokio::test]
async fn a_stalled_tunnel_fails_the_keepalive() {
    let (_client, peer, task) = setup(FAST).await;
    // The peer never reads, so it never answers the ping.
    let error = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .0
        .unwrap_err();
    assert!(matches!(error, PumpError::Keepalive(_)), "{error}");
    drop(peer);
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

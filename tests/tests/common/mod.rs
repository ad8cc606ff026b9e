//! Shared setup for the emulator tests: a started emulator in a temp dir, the
//! independent client, and WebSocket helpers with bounded waits.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use bastion_tests::emulator::client::{BastionClient, ClientWs, SessionTokens};
use bastion_tests::emulator::{Emulator, EmulatorConfig, Faults, Ledger};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Upper bound on any single wait in these tests; nothing legitimate takes this long.
pub const T: Duration = Duration::from_secs(20);
/// The official client reads (and so frames) 4 KiB at a time.
pub const CLI_FRAME: usize = 4096;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub emu: Emulator,
    pub client: BastionClient,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(|_| {}, |_| {}).await
    }

    pub async fn start_with(
        cfg: impl FnOnce(&mut EmulatorConfig),
        faults: impl FnOnce(&Faults),
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmulatorConfig::new(dir.path());
        cfg(&mut config);
        let emu = Emulator::start_with_faults(config, faults).await.unwrap();
        let client = BastionClient::new(emu.info()).unwrap();
        Env { dir, emu, client }
    }

    pub async fn token(&self) -> String {
        self.client.entra_token().await.unwrap()
    }

    pub async fn wait(&self, what: &str, pred: impl Fn(&Ledger) -> bool) -> Ledger {
        self.emu.wait_for(what, pred, T).await.unwrap()
    }
}

/// Deterministic, connection-specific test data.
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Sends `data` as masked binary frames of at most `frame` bytes.
pub async fn send_frames(
    ws: &mut (impl SinkExt<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin),
    data: &[u8],
    frame: usize,
) {
    for chunk in data.chunks(frame) {
        ws.send(Message::Binary(Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
}

/// Collects binary payload until `n` bytes arrived; fails on empty frames or early end.
pub async fn recv_bytes(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    n: usize,
) -> Vec<u8> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let msg = tokio::time::timeout(T, ws.next())
            .await
            .expect("timed out reading")
            .expect("stream ended")
            .unwrap();
        match msg {
            Message::Binary(b) => {
                assert!(!b.is_empty(), "the emulator sent an empty frame");
                got.extend_from_slice(&b);
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message after {} bytes: {other:?}", got.len()),
        }
    }
    got
}

/// Echo round trip through a tunnel, sending and reading concurrently.
pub async fn echo_through(ws: ClientWs, data: &[u8]) -> ClientWs {
    let (mut sink, mut stream) = ws.split();
    let (_, echoed) = tokio::join!(
        send_frames(&mut sink, data, CLI_FRAME),
        recv_bytes(&mut stream, data.len())
    );
    assert_eq!(sha(&echoed), sha(data), "echoed bytes differ");
    sink.reunite(stream).unwrap()
}

/// What ends the stream: the Close frame if any (None: ended without one).
pub async fn next_close(ws: &mut ClientWs) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// A hand-written RFC 6455 upgrade request for `session`, for tests that must see
/// (or send) what tungstenite would refuse to.
pub fn raw_upgrade_request(env: &Env, session: &SessionTokens) -> String {
    format!(
        "GET /webtunnelv2/{}?X-Node-Id={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        session.websocket_token,
        session.node_id,
        env.emu.info().endpoint
    )
}

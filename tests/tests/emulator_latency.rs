//! WAN mode: with `EmulatorConfig::latency` every byte to and from the
//! emulator is half a round trip late each way and a new connection first
//! pays its TCP handshake, so round trips can be counted on 127.0.0.1. The
//! same delay line stands in front of any listener (the bench's direct path).

mod common;

use std::time::{Duration, Instant};

use bastion_tests::emulator::client::BastionClient;
use bastion_tests::emulator::latency_proxy;
use bytes::Bytes;
use common::*;
use futures_util::SinkExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Long enough that the CPU work of a debug build on two busy cores (TLS
/// handshakes, token signing) stays well inside the half round trip of slack
/// the upper bounds allow; lower bounds hold however slow the machine is.
const RTT: Duration = Duration::from_millis(200);
/// Bytes pushed through a delay line to check order and back-pressure: more
/// than one line's worth of chunks in flight.
const BULK: usize = 8 * 1024 * 1024;

/// `took` in round trips, for the messages.
fn rtts(took: Duration) -> f64 {
    took.as_secs_f64() / RTT.as_secs_f64()
}

/// `took` is at least `n` round trips and less than `n + 0.5`.
fn assert_round_trips(what: &str, took: Duration, n: u32) {
    let (low, high) = (RTT * n, RTT * n + RTT / 2);
    eprintln!("{what}: {took:?} = {:.3} RTT", rtts(took));
    assert!(
        took >= low && took < high,
        "{what}: {took:?} = {:.2} RTT, expected {n} (≥ {low:?}, < {high:?})",
        rtts(took)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_https_request_takes_three_round_trips() {
    let env = Env::start_with(|c| c.latency = RTT, |_| {}).await;
    // A client of its own: no pooled connection, no TLS session to resume.
    let client = BastionClient::new(env.emu.info()).unwrap();
    let url = client.url("/_emulator/ledger");
    let get = || async {
        let start = Instant::now();
        let resp = client.http().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        start.elapsed()
    };
    // TCP handshake, TLS 1.3 handshake, then the request and its answer.
    assert_round_trips("new connection, TLS and a GET", get().await, 3);
    // The kept-alive connection: the request's own round trip only.
    assert_round_trips("a GET on the kept-alive connection", get().await, 1);
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_through_a_tunnel_takes_one_round_trip() {
    let env = Env::start_with(|c| c.latency = RTT, |_| {}).await;
    let token = env.token().await;
    let (session, ws) = env.client.tunnel(&token, "10.1.0.4", 7).await.unwrap();
    let (mut sink, mut stream) = futures_util::StreamExt::split(ws);
    for round in 0..2 {
        let start = Instant::now();
        sink.send(Message::Binary(Bytes::from_static(b"x")))
            .await
            .unwrap();
        assert_eq!(recv_bytes(&mut stream, 1).await, b"x");
        assert_round_trips(
            &format!("echo {round} through the tunnel"),
            start.elapsed(),
            1,
        );
    }
    let mut ws = sink.reunite(stream).unwrap();
    ws.close(None).await.unwrap();
    next_close(&mut ws).await;
    assert_eq!(env.client.delete(&session).await.unwrap(), 204);
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_line_in_front_of_the_echo_keeps_order_and_half_close() {
    let env = Env::start().await;
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let echo = env.emu.info().services.echo;
    let proxy = latency_proxy(echo, RTT, &tracker, &cancel).await.unwrap();
    assert_ne!(
        proxy, echo,
        "the delay line listens on an address of its own"
    );

    // Direct TCP across a WAN: the handshake, then the byte there and back.
    let start = Instant::now();
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    tokio::time::timeout(T, stream.read_exact(&mut byte))
        .await
        .unwrap()
        .unwrap();
    assert_round_trips("connect and a first echoed byte", start.elapsed(), 2);

    // Many chunks in order, then our EOF: the echo sees it after the data,
    // answers with its own, and everything arrives before that.
    let data = payload(BULK, 7);
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        writer.write_all(&data).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let read = async {
        let mut echoed = Vec::with_capacity(BULK);
        tokio::time::timeout(T, reader.read_to_end(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        echoed
    };
    let ((), echoed) = tokio::join!(write, read);
    assert_eq!(echoed.len(), BULK);
    assert_eq!(sha(&echoed), sha(&data), "bytes reordered or changed");

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(T, tracker.wait()).await.unwrap();
    env.emu.shutdown().await;
}

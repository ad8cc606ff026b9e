//! The control socket under garbage: random bytes, HTTP/2 cut anywhere, and
//! gRPC calls whose messages are random, truncated or lie about their
//! length. The daemon must answer or hang up, and keep serving everyone.

use std::time::Duration;

use bastion_tests::harness::{Daemon, TestEnv};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

type Result = anyhow::Result<()>;

/// Connections of garbage sent; each shape gets a quarter of them.
const ATTEMPTS: u64 = 400;
/// How long each connection waits for whatever the daemon answers.
const ANSWER_WAIT: Duration = Duration::from_millis(50);
/// Largest random blob sent.
const MAX_GARBAGE: usize = 8192;
/// Read-only calls: random messages must not change anything.
const METHODS: [&str; 2] = [
    "/bastion.v1.Control/Status",
    "/bastion.v1.Control/ListForwards",
];
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK "literal header field without indexing, new name" (short strings).
fn header(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    for text in [name, value] {
        block.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
        block.extend_from_slice(text.as_bytes());
    }
}

/// The start of a gRPC call to `path` on stream 1: preface, SETTINGS, HEADERS.
fn call_head(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        header(&mut block, name, value);
    }
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    out
}

/// One connection's worth of garbage, of the shape `attempt` picks.
fn garbage(rng: &mut StdRng, attempt: u64) -> Vec<u8> {
    const DATA: u8 = 0x0;
    const END_STREAM: u8 = 0x1;
    let mut random = vec![0u8; rng.random_range(0..MAX_GARBAGE)];
    rng.fill_bytes(&mut random);
    let method = METHODS[rng.random_range(0..METHODS.len())];
    match attempt % 4 {
        // Not HTTP/2 at all.
        0 => random,
        // A valid call cut at a random byte.
        1 => {
            let empty_message = [0u8; 5];
            let mut call = call_head(method);
            call.extend(frame(DATA, END_STREAM, 1, &empty_message));
            call.truncate(rng.random_range(0..call.len()));
            call
        }
        // A call whose message is random protobuf, honestly framed.
        2 => {
            let mut message = vec![0u8];
            let len = u32::try_from(random.len()).unwrap_or(u32::MAX);
            message.extend_from_slice(&len.to_be_bytes());
            message.extend_from_slice(&random);
            let mut call = call_head(method);
            call.extend(frame(DATA, END_STREAM, 1, &message));
            call
        }
        // A call whose gRPC frame lies about its length (up to 4 GiB) or
        // its compression flag, then ends.
        _ => {
            let mut message = vec![rng.random_range(0..3u8)];
            message.extend_from_slice(&rng.random::<u32>().to_be_bytes());
            message.extend_from_slice(&random[..random.len().min(64)]);
            let mut call = call_head(method);
            call.extend(frame(DATA, END_STREAM, 1, &message));
            call
        }
    }
}

#[tokio::test]
async fn garbage_on_the_control_socket_leaves_the_daemon_serving() -> Result {
    let env = TestEnv::start().await?;
    let daemon = Daemon::start(&env).await?;
    let seed = rand::random::<u64>();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    for attempt in 0..ATTEMPTS {
        let bytes = garbage(&mut rng, attempt);
        let mut socket = UnixStream::connect(env.socket()).await?;
        // The daemon may hang up part way: that is a fine answer.
        let _ = socket.write_all(&bytes).await;
        let mut answer = vec![0u8; 4096];
        let _ = tokio::time::timeout(ANSWER_WAIT, socket.read(&mut answer)).await;
    }
    // The same daemon answers, to a well-formed call after all that.
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(
        status["pid"].as_u64(),
        Some(u64::from(daemon.pid())),
        "seed {seed}: {status}"
    );
    env.ctl_ok(&["forward", "list"]).await?;
    Ok(())
}

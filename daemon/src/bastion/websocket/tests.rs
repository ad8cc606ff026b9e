//! The upgrade's answer parsing and the check for HTTP after the 101.

use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

#[test]
fn accepts_a_101_without_upgrade_headers_and_keeps_trailing_bytes() {
    let mut head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
    let len = head.len();
    head.extend_from_slice(&[0x82, 0x01, b'x']);
    assert_eq!(parse_response(&head, KEY).unwrap(), Some(len));
}

#[test]
fn checks_the_accept_key_when_present() {
    let good = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
    );
    assert!(parse_response(good.as_bytes(), KEY).unwrap().is_some());
    let bad = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
    assert!(parse_response(bad.as_bytes(), KEY).is_err());
}

#[test]
fn partial_head_needs_more_and_errors_carry_the_message() {
    assert_eq!(parse_response(b"HTTP/1.1 101 Switch", KEY).unwrap(), None);
    let err = parse_response(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\r\n{\"message\":\"Token expired\"}",
        KEY,
    )
    .unwrap_err();
    assert!(err.to_string().contains("Token expired"), "{err}");
    assert!(
        matches!(err, AzureError::Rejected { status: 403, .. }),
        "{err:?}"
    );
    let err = parse_response(b"\x16\x03\x01garbage\r\n\r\n", KEY).unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
}

#[tokio::test]
async fn http_text_after_the_upgrade_is_an_error() {
    let (mut a, b) = tokio::io::duplex(256);
    a.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>")
        .await
        .unwrap();
    let mut s = Prefixed::new(Bytes::new(), b);
    let mut buf = [0u8; 64];
    let err = s.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .ends_with("WebSocket: HTTP/1.1 400 Bad Request"),
        "{err}"
    );
}

#[tokio::test]
async fn http_text_after_the_upgrade_is_found_in_reads_of_one_byte() {
    let page = b"HTTP/1.1 400 Bad Request\r\n\r\n<html>";
    let mut s = Prefixed::new(Bytes::new(), &page[..]);
    let mut byte = [0u8; 1];
    let mut error = None;
    for _ in 0..page.len() {
        if let Err(e) = s.read(&mut byte).await {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the HTTP page went through as WebSocket bytes");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(error.to_string().ends_with("HTTP/"), "{error}");
}

#[tokio::test]
async fn prefixed_replays_leftover_first() {
    let (mut a, b) = tokio::io::duplex(64);
    a.write_all(b"world").await.unwrap();
    drop(a);
    let mut s = Prefixed::new(Bytes::from_static(b"hello "), b);
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello world");
}

mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a server answers, the parser decides without panicking,
        /// never claims more head than it was given, and says only printable things.
        #[test]
        fn any_answer_is_parsed_or_refused(answer in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            match parse_response(&answer, KEY) {
                Ok(Some(len)) => proptest::prop_assert!(len <= answer.len()),
                Ok(None) => {}
                Err(e) => proptest::prop_assert!(!e.to_string().chars().any(char::is_control)),
            }
        }

        /// A 101 head is found whatever follows it.
        #[test]
        fn a_101_is_found_before_any_trailing_bytes(trailing in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
            let mut answer = head.to_vec();
            answer.extend_from_slice(&trailing);
            proptest::prop_assert_eq!(parse_response(&answer, KEY).unwrap(), Some(head.len()));
        }

        /// HTTP after the 101 is found however the reads cut it, and
        /// WebSocket bytes (which never start with "HTTP/") pass untouched.
        #[test]
        fn http_after_the_upgrade_is_found_in_reads_of_any_size(
            cuts in proptest::collection::vec(1usize..16, 1..64),
            frames in proptest::collection::vec(proptest::num::u8::ANY, 1..256),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let page = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>".to_vec();
            let read_all = |bytes: Vec<u8>| {
                let cuts = cuts.clone();
                runtime.block_on(async move {
                    let mut s = Prefixed::new(Bytes::new(), &bytes[..]);
                    let mut got = Vec::new();
                    for size in cuts.iter().cycle() {
                        let mut buf = vec![0u8; *size];
                        match s.read(&mut buf).await {
                            Ok(0) => return Ok(got),
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(got)
                })
            };
            let refused = read_all(page);
            proptest::prop_assert!(refused.is_err());
            proptest::prop_assert!(HttpAfterUpgrade::is_cause_of(
                &tokio_tungstenite::tungstenite::Error::Io(refused.unwrap_err())
            ));
            let mut frames = frames;
            if frames.starts_with(b"H") {
                frames[0] = 0x82;
            }
            proptest::prop_assert_eq!(read_all(frames.clone()).unwrap(), frames);
        }
    }
}

//! Bounds on what the network may make the daemon hold.

use bastiond::azure::http::MAX_RESPONSE_BODY;
use bastiond::bastion::websocket::{WS_MAX_MESSAGE, config};

/// The Bastion (and the emulator) send frames of 4–64 KiB.
const LARGEST_BASTION_FRAME: usize = 64 * 1024;
/// What one tunnel may make the daemon buffer from a single message.
const TUNNEL_MESSAGE_BUDGET: usize = 256 * 1024;

#[test]
fn websocket_messages_are_bounded_to_what_a_tunnel_needs() {
    let config = config();
    assert_eq!(config.max_message_size, Some(WS_MAX_MESSAGE));
    assert!(config.max_frame_size.is_some_and(|n| n <= WS_MAX_MESSAGE));
    assert!(
        (LARGEST_BASTION_FRAME..=TUNNEL_MESSAGE_BUDGET).contains(&WS_MAX_MESSAGE),
        "{WS_MAX_MESSAGE}"
    );
}

#[test]
fn answers_are_read_up_to_64_kib() {
    assert_eq!(MAX_RESPONSE_BODY, 64 * 1024);
}

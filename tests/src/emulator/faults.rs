//! Fault switches a test (or the binary's flags) flips to make the emulator misbehave
//! the way the real service does. All take `&self` and apply to the next request.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::BastionSpec;

/// Live tunnels listening for `drop_all_websockets`; a burst larger than this is
/// pointless since every tunnel acts on the first one it sees.
const DROP_CHANNEL_CAPACITY: usize = 16;

/// Body of an injected `POST /api/tokens` failure.
#[derive(Clone, Debug)]
pub enum FaultBody {
    /// Sent as `{"message": ...}` with `Content-Type: application/json`.
    Json(String),
    /// Sent as-is with `Content-Type: text/html`.
    Html(String),
    Empty,
}

/// How a tunnel is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// The connection just goes away: no Close frame.
    Abrupt,
    /// A Close frame (1011) first, then the connection ends.
    CloseFrame,
}

/// Reported Bastion handshake oddities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeQuirk {
    /// A 101 without `Upgrade`/`Connection` headers; the tunnel still works.
    NoUpgradeHeaders,
    /// A Tomcat-style "HTTP Status 400" page written raw after the 101.
    HttpTextAfter101,
    /// Nothing read or written after the 101, pings unanswered.
    StallAfterUpgrade,
}

#[derive(Clone, Debug)]
pub(crate) struct TokenPostFailure {
    pub(crate) status: u16,
    pub(crate) body: FaultBody,
}

#[derive(Default)]
struct Switches {
    token_lifetime: Duration,
    fail_token_posts: u32,
    token_post_failure: Option<TokenPostFailure>,
    fail_az: u32,
    huge_token_replies: u32,
    huge_reply_bytes: usize,
    delay: Duration,
    reply_delay: Duration,
    drop_after: Option<(u64, DropMode)>,
    quirk: Option<HandshakeQuirk>,
    fail_arm_auth: u32,
    /// The quirk hits one upgrade in this many (0 and 1: every one).
    quirk_every: u64,
    upgrades: u64,
    max_frame: Option<usize>,
    close_idle_after: Option<Duration>,
}

/// The emulator's mutable world: fault switches and the bastions' live settings.
pub struct Faults {
    switches: Mutex<Switches>,
    bastions: Mutex<Vec<BastionSpec>>,
    drop_now: broadcast::Sender<DropMode>,
    stall: watch::Sender<bool>,
}

impl Faults {
    pub(crate) fn new(token_lifetime: Duration, bastions: Vec<BastionSpec>) -> Self {
        Self {
            switches: Mutex::new(Switches {
                token_lifetime,
                ..Switches::default()
            }),
            bastions: Mutex::new(bastions),
            drop_now: broadcast::Sender::new(DROP_CHANNEL_CAPACITY),
            stall: watch::Sender::new(false),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Switches) -> T) -> T {
        f(&mut self.switches.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Lifetime of tokens minted from now on (Entra and fake az).
    pub fn set_token_lifetime(&self, d: Duration) {
        self.with(|s| s.token_lifetime = d);
    }

    /// The next `n` `POST /api/tokens` answer `status` with `body`.
    pub fn fail_token_posts(&self, n: u32, status: u16, body: FaultBody) {
        self.with(|s| {
            s.fail_token_posts = n;
            s.token_post_failure = Some(TokenPostFailure { status, body });
        });
    }

    /// The next `n` ARM requests answer 401 InvalidAuthenticationToken, as
    /// for a token revoked or minted by a clock that jumped.
    pub fn fail_arm_auth(&self, n: u32) {
        self.with(|s| s.fail_arm_auth = n);
    }

    /// The next `n` `POST /api/tokens` answer 200 with a body of `bytes`
    /// (chunked, so the client cannot know its size up front), as a broken
    /// proxy or a hostile endpoint might.
    pub fn huge_token_replies(&self, n: u32, bytes: usize) {
        self.with(|s| {
            s.huge_token_replies = n;
            s.huge_reply_bytes = bytes;
        });
    }

    /// The next `n` fake-az calls exit 1 with an az-style error.
    pub fn fail_az(&self, n: u32) {
        self.with(|s| s.fail_az = n);
    }

    /// Wait this long before answering each `POST /api/tokens`.
    pub fn set_delay(&self, d: Duration) {
        self.with(|s| s.delay = d);
    }

    /// Create each session at once but hold the answer this long, as a slow
    /// Bastion does: a client that gives up meanwhile leaves a live session
    /// behind unless it still reads the answer and deletes it.
    pub fn set_reply_delay(&self, d: Duration) {
        self.with(|s| s.reply_delay = d);
    }

    /// Each new tunnel is dropped once it has relayed `bytes` (both directions summed).
    pub fn drop_websockets_after(&self, bytes: Option<u64>, mode: DropMode) {
        self.with(|s| s.drop_after = bytes.map(|b| (b, mode)));
    }

    /// Drop every live tunnel now.
    pub fn drop_all_websockets(&self, mode: DropMode) {
        // No receivers just means no live tunnel: nothing to drop.
        let _ = self.drop_now.send(mode);
    }

    pub fn set_handshake_quirk(&self, q: Option<HandshakeQuirk>) {
        self.set_handshake_quirk_every(q, 1);
    }

    /// The quirk hits every `n`th upgrade only, as the real service's
    /// intermittent faults do (they depend on which backend node answers).
    pub fn set_handshake_quirk_every(&self, q: Option<HandshakeQuirk>, n: u64) {
        self.with(|s| {
            s.quirk = q;
            s.quirk_every = n;
            s.upgrades = 0;
        });
    }

    /// Binary frames larger than this end the tunnel with Close 1009, as a
    /// Tomcat backend with a small message buffer does.
    pub fn set_max_frame(&self, max: Option<usize>) {
        self.with(|s| s.max_frame = max);
    }

    /// New connections that wait this long for a request (the first, or
    /// the next on a kept-alive one) are closed, as a server's idle timeout
    /// does (Tomcat's `connectionTimeout`); `None` keeps them open.
    pub fn close_idle_after(&self, after: Option<Duration>) {
        self.with(|s| s.close_idle_after = after);
    }

    /// Live and new tunnels stop relaying and stop answering pings (until turned off).
    pub fn stall_websockets(&self, on: bool) {
        self.stall.send_replace(on);
    }

    /// Change a bastion's SKU or flags live. Unknown keys are ignored.
    pub fn set_bastion(&self, key: &str, f: impl FnOnce(&mut BastionSpec)) {
        let mut bastions = self.bastions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = bastions.iter_mut().find(|b| b.key == key) {
            f(b);
        }
    }

    pub(crate) fn bastions(&self) -> Vec<BastionSpec> {
        self.bastions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn token_lifetime(&self) -> Duration {
        self.with(|s| s.token_lifetime)
    }

    /// Consumes one armed token-POST failure, if any.
    pub(crate) fn take_token_post_failure(&self) -> Option<TokenPostFailure> {
        self.with(|s| take_one(&mut s.fail_token_posts).then(|| s.token_post_failure.clone())?)
    }

    /// Consumes one armed ARM 401; true if this request must fail.
    pub(crate) fn take_arm_auth_failure(&self) -> bool {
        self.with(|s| take_one(&mut s.fail_arm_auth))
    }

    /// Consumes one armed huge reply: its size in bytes.
    pub(crate) fn take_huge_token_reply(&self) -> Option<usize> {
        self.with(|s| take_one(&mut s.huge_token_replies).then_some(s.huge_reply_bytes))
    }

    /// Consumes one armed fake-az failure; true if this call must fail.
    pub(crate) fn take_az_failure(&self) -> bool {
        self.with(|s| take_one(&mut s.fail_az))
    }

    pub(crate) fn delay(&self) -> Duration {
        self.with(|s| s.delay)
    }

    pub(crate) fn reply_delay(&self) -> Duration {
        self.with(|s| s.reply_delay)
    }

    pub(crate) fn drop_after(&self) -> Option<(u64, DropMode)> {
        self.with(|s| s.drop_after)
    }

    /// The quirk this upgrade gets, counting it towards `quirk_every`.
    pub(crate) fn take_quirk(&self) -> Option<HandshakeQuirk> {
        self.with(|s| {
            s.upgrades += 1;
            (s.quirk_every <= 1 || s.upgrades % s.quirk_every == 0).then_some(s.quirk)?
        })
    }

    pub(crate) fn max_frame(&self) -> Option<usize> {
        self.with(|s| s.max_frame)
    }

    pub(crate) fn idle_close(&self) -> Option<Duration> {
        self.with(|s| s.close_idle_after)
    }

    pub(crate) fn subscribe_drops(&self) -> broadcast::Receiver<DropMode> {
        self.drop_now.subscribe()
    }

    pub(crate) fn subscribe_stall(&self) -> watch::Receiver<bool> {
        self.stall.subscribe()
    }
}

fn take_one(counter: &mut u32) -> bool {
    let armed = *counter > 0;
    *counter = counter.saturating_sub(1);
    armed
}

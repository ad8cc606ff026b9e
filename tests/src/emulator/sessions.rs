//! Bastion sessions: what `POST /api/tokens` creates, `GET /webtunnelv2` (or a
//! data pod's `/omni/webtunnel/`) claims (websocket tokens are single use and
//! short-lived) and `DELETE` removes, each on the host that created it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Host;
use super::vnet::Route;

/// An unused websocket token expires this long after it was issued: the real
/// service wants the tunnel opened right after the token exchange.
pub const WS_TOKEN_TTL: Duration = Duration::from_secs(10);
/// Spent tickets are kept this long past expiry so a reuse is reported as such;
/// after that they are forgotten, keeping memory flat over millions of connections.
const TICKET_RETENTION: Duration = Duration::from_secs(300);
/// Pruning walks every ticket, so it runs only when the map has doubled since the last
/// time (amortised O(1) per session) and never below this size.
const PRUNE_MIN: usize = 4096;

/// What a claimed websocket token leads to.
pub(crate) struct Claimed {
    pub(crate) route: Route,
    pub(crate) target: String,
}

struct Ticket {
    auth_token: String,
    node_id: String,
    host: Host,
    route: Route,
    target: String,
    expires: Instant,
    used: bool,
}

#[derive(Default)]
struct Inner {
    /// authToken -> nodeId and the host that made it.
    sessions: HashMap<String, (String, Host)>,
    /// websocketToken -> ticket; used ones stay so a reuse is told apart from garbage.
    tickets: HashMap<String, Ticket>,
    /// Ticket count at which the next prune runs.
    next_prune: usize,
}

impl Inner {
    fn prune(&mut self) {
        if self.tickets.len() < self.next_prune.max(PRUNE_MIN) {
            return;
        }
        let now = Instant::now();
        self.tickets
            .retain(|_, t| t.expires + TICKET_RETENTION > now);
        self.next_prune = self.tickets.len() * 2;
    }
}

#[derive(Default)]
pub(crate) struct Sessions(Mutex<Inner>);

/// A new session's public identifiers.
pub(crate) struct NewSession {
    pub(crate) auth_token: String,
    pub(crate) node_id: String,
    pub(crate) websocket_token: String,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn create(&self, host: Host, route: Route, target: String) -> NewSession {
        let [a, b, c]: [u8; 3] = rand::random();
        let new = NewSession {
            auth_token: hex::encode(rand::random::<[u8; 32]>()),
            node_id: format!("10.{a}.{b}.{}", c.max(1)),
            websocket_token: hex::encode(rand::random::<[u8; 24]>()),
        };
        let mut inner = self.lock();
        inner.prune();
        inner
            .sessions
            .insert(new.auth_token.clone(), (new.node_id.clone(), host));
        inner.tickets.insert(
            new.websocket_token.clone(),
            Ticket {
                auth_token: new.auth_token.clone(),
                node_id: new.node_id.clone(),
                host,
                route,
                target,
                expires: Instant::now() + WS_TOKEN_TTL,
                used: false,
            },
        );
        new
    }

    /// Uses up a websocket token on `host`; `node_id` is what the URL says
    /// (None: a data pod's tunnel URL carries none). Err is the reject reason.
    pub(crate) fn claim(
        &self,
        host: Host,
        ws_token: &str,
        node_id: Option<&str>,
    ) -> Result<Claimed, &'static str> {
        let mut inner = self.lock();
        let Inner {
            sessions, tickets, ..
        } = &mut *inner;
        let ticket = tickets.get_mut(ws_token).ok_or("ws_token_unknown")?;
        if ticket.used {
            return Err("ws_token_reused");
        }
        if ticket.expires <= Instant::now() {
            return Err("ws_token_expired");
        }
        if ticket.host != host {
            return Err("ws_wrong_host");
        }
        if node_id.is_some_and(|n| n != ticket.node_id) {
            return Err("ws_wrong_node");
        }
        if !sessions.contains_key(&ticket.auth_token) {
            return Err("ws_session_deleted");
        }
        ticket.used = true;
        Ok(Claimed {
            route: ticket.route,
            target: ticket.target.clone(),
        })
    }

    /// Err is the reject reason.
    pub(crate) fn delete(
        &self,
        host: Host,
        auth_token: &str,
        node_id: &str,
    ) -> Result<(), &'static str> {
        let mut inner = self.lock();
        match inner.sessions.get(auth_token) {
            None => Err("delete_unknown"),
            Some((_, h)) if *h != host => Err("delete_wrong_host"),
            Some((n, _)) if n != node_id => Err("delete_wrong_node"),
            Some(_) => {
                inner.sessions.remove(auth_token);
                Ok(())
            }
        }
    }
}

//! Warm connections to recently used Bastion hosts, so that a new tunnel does
//! not pay TCP and TLS handshakes (two round trips across a WAN) on its way:
//! spare TLS connections that have carried nothing, for the WebSocket upgrade
//! (and for the token POST when no kept-alive connection is there), and the
//! token POST's kept-alive connections. Neither is a Bastion session: a
//! session exists only once a token POST has created it.
//!
//! One keeper task per host keeps `spare_connections` spares, replaces each
//! before it has been idle `spare_max_idle_secs` (servers close connections
//! that sit idle: Tomcat's default is 20 s), and forgets the host once no
//! tunnel has used it for `spare_warm_secs`. A warm connection that turns out
//! closed anyway (a laptop that slept, a server with a shorter timeout) costs
//! one new dial, not a failed tunnel: a request that got no answer at all on
//! a warm connection goes again on a new one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use std::task::{Context, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bastion::dial::{self, Failure, TlsConn, Warm};
use crate::bastion::post;
use crate::bastion::proxy::Proxies;
use crate::bastion::tcp::{self, OverTcp, Receipt, TcpLiveness};
use crate::bastion::websocket::{self, TunnelSocket};
use crate::config::TunnelSettings;
use crate::error::AzureError;
use crate::secret::Secret;

/// Kept-alive POST connections per host: one is enough for sequential
/// connections; a burst (an IDE opening its connections together) finds up to
/// this many ready the next time instead of paying handshakes, as a pooled
/// HTTPS client's idle limit would give it (`http::POOL_MAX_IDLE_PER_HOST`).
const MAX_KEPT: usize = 32;
/// A spare is replaced once it has been idle this share of
/// `spare_max_idle_secs`, so its successor is ready before it expires.
const REFRESH_AT: f64 = 0.75;
/// First pause after a spare could not be opened (the Bastion unreachable);
/// doubled per failure up to [`DIAL_RETRY_MAX`]: tunnels dial for themselves
/// meanwhile, and a broken Bastion is not hammered.
const DIAL_RETRY_FIRST: Duration = Duration::from_secs(1);
const DIAL_RETRY_MAX: Duration = Duration::from_secs(60);
/// A warm connection that has not begun to answer a request within this
/// long, and whose peer's TCP has acknowledged none of it, is given up for
/// a fresh dial: a live path acknowledges within a round trip (the kernel
/// does, whatever the Bastion's own work takes), while one that went silent
/// (a laptop that slept, a network that changed) would otherwise hold the
/// request until its whole timeout. Well inside the setup budget, so the
/// fresh dial still fits. A request that was acknowledged is never given
/// up here: the Bastion may have made its session already.
const WARM_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// How many spares, for how long, and how long their sockets wait for the
/// peer's TCP (from `[tunnel]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpareSettings {
    pub count: usize,
    pub max_idle: Duration,
    pub warm_for: Duration,
    pub tcp: Option<TcpLiveness>,
}

impl From<&TunnelSettings> for SpareSettings {
    fn from(tunnel: &TunnelSettings) -> Self {
        SpareSettings {
            count: tunnel.spare_connections,
            max_idle: Duration::from_secs(tunnel.spare_max_idle_secs),
            warm_for: Duration::from_secs(tunnel.spare_warm_secs),
            tcp: TcpLiveness::from_settings(tunnel),
        }
    }
}

/// The warm connections of one daemon configuration; dropping it ends the
/// keepers and closes every spare.
pub struct Spares {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

struct Shared {
    tls: Arc<rustls::ClientConfig>,
    proxies: Arc<Proxies>,
    settings: SpareSettings,
    hosts: Mutex<HashMap<String, Host>>,
}

struct Host {
    /// Never carried a request; oldest first.
    fresh: Vec<Idle>,
    /// Carried a token POST and kept alive; oldest first.
    kept: Vec<Idle>,
    last_used: Instant,
    wake: Arc<Notify>,
}

struct Idle {
    conn: TlsConn,
    /// Wall-clock, unlike `Instant`, goes on while a laptop sleeps, and the
    /// server's idle timer did too.
    since: SystemTime,
}

impl Idle {
    fn new(conn: TlsConn) -> Idle {
        Idle {
            conn,
            since: SystemTime::now(),
        }
    }

    fn age(&self) -> Duration {
        // A clock set back makes it look new; `still_open` has the last word.
        self.since.elapsed().unwrap_or_default()
    }
}

/// Whether `conn` shows no sign of having been closed: a read would block.
/// The read also lets rustls take in the session tickets that arrive after
/// the handshake; anything else readable on an idle connection (EOF, a
/// close_notify, stray bytes) makes it unusable.
fn still_open(conn: &mut TlsConn) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(conn).poll_read(&mut cx, &mut buf).is_pending()
}

/// The newest usable connection of `pool`; unusable ones met on the way are closed.
fn pop_usable(pool: &mut Vec<Idle>, max_idle: Duration) -> Option<TlsConn> {
    while let Some(mut idle) = pool.pop() {
        if idle.age() < max_idle && still_open(&mut idle.conn) {
            return Some(idle.conn);
        }
    }
    None
}

#[derive(Clone, Copy)]
enum Purpose {
    Post,
    Upgrade,
}

impl Spares {
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        proxies: Arc<Proxies>,
        settings: SpareSettings,
    ) -> Spares {
        Spares {
            shared: Arc::new(Shared {
                tls,
                proxies,
                settings,
                hosts: Mutex::default(),
            }),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    pub fn settings(&self) -> SpareSettings {
        self.shared.settings
    }

    /// POSTs `form` to `path` on `host`; returns the status and the body (at
    /// most `limit` bytes).
    pub async fn post(
        &self,
        host: &str,
        path: &str,
        form: &str,
        limit: usize,
    ) -> Result<(u16, Bytes), AzureError> {
        let answer = self
            .on_conn(host, Purpose::Post, |conn, warm| {
                post::post_form(conn, host, path, form.to_string(), limit, warm)
            })
            .await?;
        if let Some(conn) = answer.conn
            && let Some(state) = self.shared.hosts.lock().get_mut(host)
            && state.kept.len() < MAX_KEPT
        {
            state.kept.push(Idle::new(conn));
        }
        Ok((answer.status, answer.body))
    }

    /// Opens the WebSocket at `path` on `host`.
    pub async fn upgrade(&self, host: &str, path: &Secret) -> Result<TunnelSocket, AzureError> {
        let socket = self
            .on_conn(host, Purpose::Upgrade, |conn, warm| {
                websocket::open(conn, host, path, websocket::config(), warm)
            })
            .await?;
        if let Some(tcp) = socket.get_ref().tcp()
            && let Err(error) = tcp::leave_to_keepalive(&tcp)
        {
            tracing::debug!(%error, "cannot clear TCP_USER_TIMEOUT on a tunnel");
        }
        Ok(socket)
    }

    /// Runs `request` on a warm connection to `host` if there is one, and on
    /// a new one if there is none, or the warm one had been closed or went
    /// silent ([`dial::await_answer`] within [`WARM_ANSWER_TIMEOUT`]).
    async fn on_conn<T, F, Fut>(
        &self,
        host: &str,
        purpose: Purpose,
        mut request: F,
    ) -> Result<T, AzureError>
    where
        F: FnMut(TlsConn, Option<Warm>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        if let Some(conn) = self.take(host, purpose) {
            let warm = conn
                .tcp()
                .and_then(Receipt::before_sending)
                .map(|receipt| Warm {
                    bound: WARM_ANSWER_TIMEOUT,
                    receipt,
                });
            match request(conn, warm).await {
                Err(Failure::Unanswered(error)) => {
                    tracing::debug!(%error, "a warm connection had been closed by the Bastion; using a new one");
                }
                Err(Failure::Silent(error)) => {
                    let dropped = self.drop_warm(Some(host));
                    tracing::info!(%error, dropped, "a warm connection went silent; its host's others dropped, using a new one");
                }
                other => return other.map_err(Failure::into_error),
            }
        }
        let conn = dial::connect(
            &self.shared.proxies,
            self.shared.tls.clone(),
            host,
            self.shared.settings.tcp,
        )
        .await?;
        request(conn, None).await.map_err(Failure::into_error)
    }

    /// A warm connection for `purpose`, if one is ready; marks `host` used
    /// (starting its keeper the first time) and lets the keeper replace it.
    fn take(&self, host: &str, purpose: Purpose) -> Option<TlsConn> {
        let max_idle = self.shared.settings.max_idle;
        let mut hosts = self.shared.hosts.lock();
        let state = hosts.entry(host.to_string()).or_insert_with(|| {
            let wake = Arc::new(Notify::new());
            let keeper = keep(
                self.shared.clone(),
                host.to_string(),
                wake.clone(),
                self.cancel.clone(),
            );
            self.tracker.spawn(keeper);
            Host {
                fresh: Vec::new(),
                kept: Vec::new(),
                last_used: Instant::now(),
                wake,
            }
        });
        state.last_used = Instant::now();
        let conn = match purpose {
            Purpose::Post => pop_usable(&mut state.kept, max_idle)
                .or_else(|| pop_usable(&mut state.fresh, max_idle)),
            Purpose::Upgrade => pop_usable(&mut state.fresh, max_idle),
        };
        state.wake.notify_one();
        conn
    }

    /// Closes the warm connections of `host` (all hosts' with `None`), which
    /// their keepers replace with fresh dials; returns how many were closed.
    pub fn drop_warm(&self, host: Option<&str>) -> usize {
        let mut hosts = self.shared.hosts.lock();
        let mut dropped = 0;
        for (name, state) in hosts.iter_mut() {
            if host.is_none_or(|h| h == name) {
                dropped += state.fresh.len() + state.kept.len();
                state.fresh.clear();
                state.kept.clear();
                state.wake.notify_one();
            }
        }
        dropped
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.tracker.close();
        self.cancel.cancel();
    }
}

/// What the keeper of a host does next.
enum Plan {
    Dial,
    WaitUntil(Instant),
    Forget,
}

impl Host {
    /// Closes what has aged out and says what is due next.
    fn plan(&mut self, settings: SpareSettings) -> Plan {
        if self.last_used.elapsed() >= settings.warm_for {
            return Plan::Forget;
        }
        self.fresh.retain(|i| i.age() < settings.max_idle);
        self.kept.retain(|i| i.age() < settings.max_idle);
        let refresh_at = settings.max_idle.mul_f64(REFRESH_AT);
        let ready = self.fresh.iter().filter(|i| i.age() < refresh_at).count();
        if ready < settings.count {
            return Plan::Dial;
        }
        let now = Instant::now();
        let refreshes = self
            .fresh
            .iter()
            .map(|i| refresh_at.saturating_sub(i.age()));
        let expiries = self
            .kept
            .iter()
            .map(|i| settings.max_idle.saturating_sub(i.age()));
        let next = refreshes
            .chain(expiries)
            .map(|left| now + left)
            .fold(self.last_used + settings.warm_for, Instant::min);
        Plan::WaitUntil(next)
    }
}

/// Keeps `name`'s spares until the host is forgotten or the spares dropped.
async fn keep(shared: Arc<Shared>, name: String, wake: Arc<Notify>, cancel: CancellationToken) {
    let settings = shared.settings;
    let mut retry = DIAL_RETRY_FIRST;
    loop {
        let plan = {
            let mut hosts = shared.hosts.lock();
            let Some(host) = hosts.get_mut(&name) else {
                return;
            };
            let plan = host.plan(settings);
            // Under the same lock as the verdict: a tunnel that just used
            // the host would otherwise lose its spares.
            if matches!(plan, Plan::Forget) {
                hosts.remove(&name);
            }
            plan
        };
        match plan {
            Plan::Forget => {
                tracing::debug!(host = %name, "no tunnel for a while: spare connections closed");
                return;
            }
            Plan::WaitUntil(when) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(when) => {}
                }
            }
            Plan::Dial => {
                let dialed = tokio::select! {
                    _ = cancel.cancelled() => return,
                    dialed = dial::connect(&shared.proxies, shared.tls.clone(), &name, settings.tcp) => dialed,
                };
                match dialed {
                    Ok(conn) => {
                        retry = DIAL_RETRY_FIRST;
                        let mut hosts = shared.hosts.lock();
                        let Some(host) = hosts.get_mut(&name) else {
                            return;
                        };
                        host.fresh.push(Idle::new(conn));
                        // The replaced spare (the oldest) goes once its successor is here.
                        let surplus = host.fresh.len().saturating_sub(settings.count);
                        host.fresh.drain(..surplus);
                    }
                    Err(error) => {
                        tracing::debug!(host = %name, %error, "could not open a spare connection");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(retry) => {}
                        }
                        retry = (retry * 2).min(DIAL_RETRY_MAX);
                    }
                }
            }
        }
    }
}

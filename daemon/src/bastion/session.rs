//! Bastion sessions: the token exchange that opens one (`POST /api/tokens`,
//! on a warm connection from [`Spares`]) and the `DELETE` that ends it (on
//! the pooled HTTPS client: it is off every connection's path). Every created session is owned by a
//! [`LiveSession`]; dropping it deletes the session in the background, with
//! retries, tracked so shutdown can wait for the deletes (sessions left behind
//! count against the Bastion's limits).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bastion_proto::target::{Target, TargetHost};
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::azure::bastion_host::BastionHost;
use crate::azure::http::MAX_RESPONSE_BODY;
use crate::bastion::finish::{FinishOnDrop, finish_detached};
use crate::bastion::spares::Spares;
use crate::error::AzureError;
use crate::secret::Secret;

/// Where sessions are created and deleted.
const TOKENS_PATH: &str = "/api/tokens";
/// A token POST answers in well under a second; past this the Bastion is in
/// trouble and the waiting client is better served by a prompt error.
const TOKEN_POST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for one DELETE attempt; shutdown waits longer than this
/// (`daemon::SHUTDOWN_DELETES_GRACE`) so an attempt under way can finish.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(5);
/// DELETEs in flight at once: after a burst (a forward removed, an IDE
/// closing 50 connections) the Bastion gets a steady trickle rather than a
/// stampede, and the pooled HTTPS connections are reused instead of
/// multiplied. Eight at ~1 RTT each clears 100 sessions in a few seconds.
const DELETE_CONCURRENCY: usize = 8;
/// Deletes are retried a few times (transient 5xx, network blips) and then
/// given up with a warning: the Bastion expires abandoned sessions itself.
const DELETE_ATTEMPTS: u32 = 4;
/// First pause between DELETE attempts; doubled after each failure.
const DELETE_BACKOFF: Duration = Duration::from_millis(500);

/// What `POST /api/tokens` returns (extra fields are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionTokens {
    pub auth_token: Secret,
    pub node_id: String,
    pub websocket_token: Secret,
}

/// Asks the Bastion for a session to `target` (see [`Sessions::create`]).
async fn create(
    spares: &Spares,
    host: &BastionHost,
    target: &Target,
    aztoken: &Secret,
) -> Result<SessionTokens, AzureError> {
    let what = "Bastion refused the session";
    let port = target.port.to_string();
    let resource_id = match &target.host {
        TargetHost::Ip(ip) => format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/bh-hostConnect/{ip}",
            host.subscription, host.resource_group
        ),
        TargetHost::Vm(id) | TargetHost::Cluster(id) => id.clone(),
        // `names::resolve` turns names into ids before any tunnel is opened.
        TargetHost::Name(name) => {
            return Err(AzureError::Precondition(format!(
                "VM name {name:?} was not resolved to a resource id"
            )));
        }
    };
    let hostname = match &target.host {
        TargetHost::Ip(ip) => Some(ip.to_string()),
        TargetHost::Vm(_) | TargetHost::Name(_) | TargetHost::Cluster(_) => None,
    };
    let mut form: Vec<(&str, &str)> = vec![
        ("resourceId", &resource_id),
        ("protocol", "tcptunnel"),
        ("workloadHostPort", &port),
        ("aztoken", aztoken.expose()),
    ];
    if let Some(hostname) = &hostname {
        form.push(("hostname", hostname));
    }
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    let post = spares.post(&host.dns_name, TOKENS_PATH, &form, MAX_RESPONSE_BODY);
    let (status, body) = tokio::time::timeout(TOKEN_POST_TIMEOUT, post)
        .await
        .map_err(|_| AzureError::Unreachable {
            what: "cannot reach the Bastion",
            message: format!(
                "no answer to the token request within {}s",
                TOKEN_POST_TIMEOUT.as_secs()
            ),
        })??;
    AzureError::parse_answer(what, status, &body, "unexpected answer")
}

/// Where a session's requests go: the token POST on a warm connection, the
/// DELETE on the pooled client (it is off every connection's path).
#[derive(Clone)]
pub struct Channels {
    pub http: reqwest::Client,
    pub spares: Arc<Spares>,
}

/// Every live session of the daemon, and the creations and deletes in flight.
pub struct Sessions {
    live: AtomicU64,
    /// Requests that must finish even when their caller is gone, so that no
    /// session is left on the Bastion; shutdown waits for them (bounded).
    in_flight: TaskTracker,
    deletes: Semaphore,
    /// Bumped to have every live tunnel pinged at once (see [`Sessions::check_tunnels`]).
    checks: watch::Sender<u64>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            live: AtomicU64::new(0),
            in_flight: TaskTracker::new(),
            deletes: Semaphore::new(DELETE_CONCURRENCY),
            checks: watch::Sender::new(0),
        }
    }
}

impl Sessions {
    /// Sessions created and not yet deleted (including deletes being retried).
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Has every live tunnel pinged now and judged within its keepalive
    /// timeout (after a resume or a network change, when any may be dead).
    pub fn check_tunnels(&self) {
        self.checks.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// What a tunnel watches for [`Sessions::check_tunnels`].
    pub fn tunnel_checks(&self) -> watch::Receiver<u64> {
        self.checks.subscribe()
    }

    /// Asks the Bastion for a session to `target` and takes ownership of it.
    ///
    /// Were the caller cancelled while the POST is in flight (a forward
    /// removed, a `connect` client gone, shutdown), the Bastion would keep a
    /// session whose token nobody has. So the request always runs to the end:
    /// in place while its caller waits (no task hand-off on the hot path), on
    /// `in_flight` once the caller is gone, where the unclaimed `LiveSession`
    /// deletes itself.
    pub async fn create(
        self: &Arc<Self>,
        channels: &Channels,
        host: &BastionHost,
        target: &Target,
        aztoken: &Secret,
        slot: OwnedSemaphorePermit,
    ) -> Result<(LiveSession, SessionTokens), AzureError> {
        let (sessions, channels, host, target, aztoken) = (
            self.clone(),
            channels.clone(),
            host.clone(),
            target.clone(),
            aztoken.clone(),
        );
        let request = async move {
            let tokens = create(&channels.spares, &host, &target, &aztoken).await?;
            let session = sessions.adopt(&channels.http, &host.dns_name, &tokens, slot);
            Ok((session, tokens))
        };
        FinishOnDrop::new(request, &self.in_flight).await
    }

    fn adopt(
        self: &Arc<Self>,
        http: &reqwest::Client,
        dns_name: &str,
        tokens: &SessionTokens,
        slot: OwnedSemaphorePermit,
    ) -> LiveSession {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveSession {
            sessions: self.clone(),
            session: Some(SessionRef {
                http: http.clone(),
                dns_name: dns_name.to_string(),
                auth_token: tokens.auth_token.clone(),
                node_id: tokens.node_id.clone(),
            }),
            slot: Some(slot),
        }
    }

    /// Waits for in-flight creations and deletes, at most `bound`. Returns how
    /// many sessions remain.
    pub async fn drain(&self, bound: Duration) -> u64 {
        self.in_flight.close();
        if tokio::time::timeout(bound, self.in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.live(),
                "gave up waiting for session deletes"
            );
        }
        self.live()
    }
}

/// A session on the Bastion; deleted when dropped.
pub struct LiveSession {
    sessions: Arc<Sessions>,
    session: Option<SessionRef>,
    /// Its place in the bastion's `max_sessions`, given back once deleted.
    slot: Option<OwnedSemaphorePermit>,
}

struct SessionRef {
    http: reqwest::Client,
    dns_name: String,
    auth_token: Secret,
    node_id: String,
}

impl SessionRef {
    /// Deletes the session, retrying failures; says how it went.
    async fn delete(&self, concurrency: &Semaphore) -> Result<&'static str, String> {
        let url = format!(
            "https://{}{TOKENS_PATH}/{}",
            self.dns_name,
            self.auth_token.expose()
        );
        let mut backoff = DELETE_BACKOFF;
        let mut attempt = 1;
        loop {
            // Never closed; were it, the DELETE would just go out unthrottled.
            let turn = concurrency.acquire().await.ok();
            let result = self
                .http
                .delete(&url)
                .header("X-Node-Id", &self.node_id)
                .timeout(DELETE_TIMEOUT)
                .send()
                .await;
            let failure = match result {
                Ok(r) if r.status().is_success() => {
                    tracing::debug!(node_id = %self.node_id, "session deleted");
                    return Ok("session deleted");
                }
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                    return Ok("session already gone");
                }
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => AzureError::unreachable("delete", &e).to_string(),
            };
            if attempt == DELETE_ATTEMPTS {
                tracing::warn!(node_id = %self.node_id, %failure, "could not delete a Bastion session; it will expire on its own");
                return Err(format!(
                    "{failure} after {DELETE_ATTEMPTS} tries; the session expires on its own"
                ));
            }
            tracing::debug!(node_id = %self.node_id, %failure, attempt, "session delete failed, retrying");
            drop(turn);
            // Jitter: the deletes of a burst failed together; spread their retries.
            let pause = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
            tokio::time::sleep(pause).await;
            backoff *= 2;
            attempt += 1;
        }
    }
}

impl LiveSession {
    /// Deletes the session now and says how it went (`doctor` shows it).
    /// Runs to the end even if the caller goes away, like every delete.
    pub async fn end(mut self) -> Result<&'static str, String> {
        match self.take_delete() {
            Some(delete) => FinishOnDrop::new(delete, &self.sessions.in_flight).await,
            None => Ok("session already ended"),
        }
    }

    /// The DELETE of this session, with its bookkeeping; `None` once taken.
    fn take_delete(
        &mut self,
    ) -> Option<impl Future<Output = Result<&'static str, String>> + Send + 'static> {
        let session = self.session.take()?;
        let sessions = self.sessions.clone();
        let slot = self.slot.take();
        Some(async move {
            let outcome = session.delete(&sessions.deletes).await;
            sessions.live.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
            outcome
        })
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        if let Some(delete) = self.take_delete() {
            finish_detached(
                &self.sessions.in_flight,
                "delete a Bastion session",
                async move {
                    // A failure was logged by the delete itself.
                    let _ = delete.await;
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_redacted_in_debug() {
        let tokens: SessionTokens = serde_json::from_str(
            r#"{"authToken":"a-secret","nodeId":"n1","websocketToken":"w-secret","extra":1}"#,
        )
        .unwrap();
        assert_eq!(tokens.node_id, "n1");
        assert_eq!(format!("{:?}", tokens.auth_token), "[redacted]");
    }
}

//! Bastion sessions: the token exchange that opens one (`POST /api/tokens`)
//! and the `DELETE` that ends it. Every created session is owned by a
//! [`LiveSession`]; dropping it deletes the session in the background, with
//! retries, tracked so shutdown can wait for the deletes (sessions left behind
//! count against the Bastion's limits).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::task::TaskTracker;

use crate::arm::BastionHost;
use crate::auth::AuthError;
use crate::secret::Secret;
use crate::target::{Target, TargetHost};

/// A token POST answers in well under a second; past this the Bastion is in
/// trouble and the waiting client is better served by a prompt error.
const TOKEN_POST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for one DELETE attempt.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deletes are retried a few times (transient 5xx, network blips) and then
/// given up with a warning: the Bastion expires abandoned sessions itself.
const DELETE_ATTEMPTS: u32 = 4;
/// First pause between DELETE attempts; doubled after each failure.
const DELETE_BACKOFF: Duration = Duration::from_millis(500);
/// Error bodies are shown to users; an HTML error page is cut to this.
const SNIPPET_CHARS: usize = 160;

/// Why a tunnel could not be opened or ended early. The text is what the
/// user sees as a forward's `last_error` and in gRPC statuses.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The bastion or the request cannot work as configured.
    #[error("{0}")]
    Precondition(String),
    /// The Bastion or ARM answered with an error status.
    #[error("{what}: HTTP {status}: {message}")]
    Rejected {
        what: &'static str,
        status: u16,
        message: String,
    },
    /// The Bastion or ARM could not be reached, or did not answer in time.
    #[error("{what}: {message}")]
    Unreachable { what: &'static str, message: String },
    /// The WebSocket tunnel failed.
    #[error("tunnel: {0}")]
    Tunnel(String),
}

impl SessionError {
    pub fn unreachable(what: &'static str, error: &reqwest::Error) -> SessionError {
        // reqwest errors name the URL; ours carry no secret in the URL, but
        // strip it anyway and keep the cause chain, which is what helps.
        let mut message = if error.is_timeout() {
            "no answer in time".to_string()
        } else if error.is_connect() {
            "cannot connect".to_string()
        } else {
            "request failed".to_string()
        };
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        SessionError::Unreachable { what, message }
    }

    /// The gRPC code a control client sees for this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            SessionError::Auth(_) => tonic::Code::Unauthenticated,
            SessionError::Precondition(_) => tonic::Code::FailedPrecondition,
            SessionError::Rejected { status, .. } => match status {
                401 => tonic::Code::Unauthenticated,
                403 => tonic::Code::PermissionDenied,
                404 => tonic::Code::NotFound,
                408 | 429 | 500.. => tonic::Code::Unavailable,
                _ => tonic::Code::FailedPrecondition,
            },
            SessionError::Unreachable { .. } | SessionError::Tunnel(_) => tonic::Code::Unavailable,
        }
    }
}

/// The message of an Azure error body (`{"message": …}` or
/// `{"error": {"message": …}}`), or a short snippet of whatever came instead.
pub fn error_message(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(body) = serde_json::from_slice::<Body>(body) {
        if let Some(message) = body.message.filter(|m| !m.is_empty()) {
            return message;
        }
        if let Some(Inner {
            code,
            message: Some(message),
        }) = body.error
        {
            return match code {
                Some(code) => format!("{code}: {message}"),
                None => message,
            };
        }
    }
    let text = html_text(&String::from_utf8_lossy(body));
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        format!(
            "{} (empty body)",
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
        )
    } else {
        truncate(&text, SNIPPET_CHARS)
    }
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

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
    http: &reqwest::Client,
    host: &BastionHost,
    target: &Target,
    aztoken: &Secret,
) -> Result<SessionTokens, SessionError> {
    let what = "Bastion refused the session";
    let port = target.port.to_string();
    let resource_id = match &target.host {
        TargetHost::Ip(ip) => format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/bh-hostConnect/{ip}",
            host.subscription, host.resource_group
        ),
        TargetHost::Vm(id) => id.clone(),
    };
    let hostname = match &target.host {
        TargetHost::Ip(ip) => Some(ip.to_string()),
        TargetHost::Vm(_) => None,
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
    let response = http
        .post(format!("https://{}/api/tokens", host.dns_name))
        .form(&form)
        .timeout(TOKEN_POST_TIMEOUT)
        .send()
        .await
        .map_err(|e| SessionError::unreachable("cannot reach the Bastion", &e))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| SessionError::unreachable("cannot reach the Bastion", &e))?;
    if !status.is_success() {
        return Err(SessionError::Rejected {
            what,
            status: status.as_u16(),
            message: error_message(status.as_u16(), &body),
        });
    }
    serde_json::from_slice(&body).map_err(|e| SessionError::Rejected {
        what,
        status: status.as_u16(),
        message: format!("unexpected answer: {e}"),
    })
}

/// Every live session of the daemon, and the creations and deletes in flight.
#[derive(Default)]
pub struct Sessions {
    live: AtomicU64,
    /// Requests that must finish even when their caller is gone, so that no
    /// session is left on the Bastion; shutdown waits for them (bounded).
    in_flight: TaskTracker,
}

impl Sessions {
    /// Sessions created and not yet deleted (including deletes being retried).
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
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
        http: &reqwest::Client,
        host: &BastionHost,
        target: &Target,
        aztoken: &Secret,
    ) -> Result<(LiveSession, SessionTokens), SessionError> {
        let (sessions, http, host, target, aztoken) = (
            self.clone(),
            http.clone(),
            host.clone(),
            target.clone(),
            aztoken.clone(),
        );
        let request = async move {
            let tokens = create(&http, &host, &target, &aztoken).await?;
            Ok((sessions.adopt(&http, &host.dns_name, &tokens), tokens))
        };
        FinishOnDrop {
            request: Some(Box::pin(request)),
            tracker: self.in_flight.clone(),
        }
        .await
    }

    fn adopt(
        self: &Arc<Self>,
        http: &reqwest::Client,
        dns_name: &str,
        tokens: &SessionTokens,
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

/// A request that must run to completion: polled in place by its caller, and
/// handed to `tracker` if the caller drops it before it is done.
struct FinishOnDrop<T: Send + 'static> {
    request: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    tracker: TaskTracker,
}

impl<T: Send + 'static> Future for FinishOnDrop<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let request = self
            .request
            .as_mut()
            .expect("FinishOnDrop polled after completion");
        let output = ready!(request.as_mut().poll(cx));
        self.request = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for FinishOnDrop<T> {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            finish_detached(&self.tracker, "finish a session request", async move {
                drop(request.await);
            });
        }
    }
}

/// Runs `work` to its end on `tracker` from a `Drop`, where nothing can be
/// awaited; `what` names it in the warning when the runtime is already gone.
fn finish_detached(
    tracker: &TaskTracker,
    what: &str,
    work: impl Future<Output = ()> + Send + 'static,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            tracker.spawn_on(work, &runtime);
        }
        Err(_) => tracing::warn!("no runtime left to {what}"),
    }
}

/// A session on the Bastion; deleted when dropped.
pub struct LiveSession {
    sessions: Arc<Sessions>,
    session: Option<SessionRef>,
}

struct SessionRef {
    http: reqwest::Client,
    dns_name: String,
    auth_token: Secret,
    node_id: String,
}

impl SessionRef {
    async fn delete(&self) {
        let url = format!(
            "https://{}/api/tokens/{}",
            self.dns_name,
            self.auth_token.expose()
        );
        let mut backoff = DELETE_BACKOFF;
        for attempt in 1..=DELETE_ATTEMPTS {
            let result = self
                .http
                .delete(&url)
                .header("X-Node-Id", &self.node_id)
                .timeout(DELETE_TIMEOUT)
                .send()
                .await;
            let failure = match result {
                Ok(r)
                    if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND =>
                {
                    tracing::debug!(node_id = %self.node_id, "session deleted");
                    return;
                }
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => SessionError::unreachable("delete", &e).to_string(),
            };
            if attempt == DELETE_ATTEMPTS {
                tracing::warn!(node_id = %self.node_id, %failure, "could not delete a Bastion session; it will expire on its own");
                return;
            }
            tracing::debug!(node_id = %self.node_id, %failure, attempt, "session delete failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let sessions = self.sessions.clone();
        finish_detached(
            &self.sessions.in_flight,
            "delete a Bastion session",
            async move {
                session.delete().await;
                sessions.live.fetch_sub(1, Ordering::Relaxed);
            },
        );
    }
}

/// What a person should read of an error page: its `<title>` (a Tomcat page
/// opens with a `<style>` block), else the text between the tags. Non-HTML
/// passes through unchanged.
fn html_text(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>")) {
        let start = start + "<title>".len();
        if start < end {
            return body[start..end].to_owned();
        }
    }
    if !lower.trim_start().starts_with('<') {
        return body.to_owned();
    }
    let mut text = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_messages() {
        assert_eq!(
            error_message(
                404,
                br#"{"message":"Target 10.1.0.7 is not reachable from this Bastion."}"#
            ),
            "Target 10.1.0.7 is not reachable from this Bastion."
        );
        assert_eq!(
            error_message(
                404,
                br#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#
            ),
            "ResourceNotFound: gone"
        );
        let html = format!(
            "<html><body><h1>HTTP Status 400 – Bad Request</h1>{}</body></html>",
            "x".repeat(500)
        );
        let m = error_message(400, html.as_bytes());
        assert!(m.starts_with("HTTP Status 400 – Bad Request x"), "{m}");
        assert!(m.chars().count() <= SNIPPET_CHARS + 1);
        let tomcat = "<!doctype html><html lang=\"en\"><head><title>HTTP Status 400 – Bad Request</title>\
            <style type=\"text/css\">body {font-family:Tahoma;}</style></head><body><h1>HTTP Status 400</h1></body></html>";
        assert_eq!(
            error_message(400, tomcat.as_bytes()),
            "HTTP Status 400 – Bad Request"
        );
        assert_eq!(error_message(502, b""), "Bad Gateway (empty body)");
        assert_eq!(error_message(500, &[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn codes_follow_the_contract() {
        let rejected = |status| SessionError::Rejected {
            what: "x",
            status,
            message: String::new(),
        };
        assert_eq!(rejected(401).code(), tonic::Code::Unauthenticated);
        assert_eq!(rejected(404).code(), tonic::Code::NotFound);
        assert_eq!(rejected(503).code(), tonic::Code::Unavailable);
        assert_eq!(
            SessionError::Precondition(String::new()).code(),
            tonic::Code::FailedPrecondition
        );
    }

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

//! Entra tokens: the credential chosen in the settings, behind one cache.
//!
//! azure_identity's CLI credential spawns `az` on every call (~0.5 s), so the
//! cache is what makes a new connection cheap. Freshness is judged by wall
//! clock (`SystemTime`): a laptop that slept must not send an expired token.
//! Refreshes are single-flight: concurrent connections wait for one request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};

use azure_core::credentials::TokenCredential;

use tokio_util::task::TaskTracker;

use crate::config::CredentialKind;
use crate::error::{AuthError, AzureError, RefusedToken};
use crate::error_body::truncate;
use crate::secret::Secret;

/// Refresh at most this long before expiry (tokens live 60–90 minutes)...
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// ...or a quarter of the lifetime, so short-lived test tokens still cache.
const REFRESH_MARGIN_DIVISOR: u32 = 4;
/// Within its refresh margin, a token with at least this long left is still
/// handed out while a new one is fetched behind the caller, so the refresh
/// (one to three round trips to Entra, or an `az` run) stays off the
/// connection's path; with less left the caller waits for the new one, as a
/// token expiring mid-setup could be refused.
const MIN_LEFT_TO_SERVE: Duration = Duration::from_secs(60);
/// `az` or Entra taking longer than this is stuck; fail the connection
/// rather than leave the user's ssh hanging.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed token request, callers share its error for this long
/// before the credential is asked again (no `az` per incoming connection
/// while the login is broken)...
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// ...doubling per further failure, up to this: someone who just ran
/// `az login` waits at most this long (or runs `bastionctl reload`).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Cached {
    token: Secret,
    obtained_at: SystemTime,
    expires_at: SystemTime,
}

impl Cached {
    fn can_serve(&self, now: SystemTime) -> bool {
        now + MIN_LEFT_TO_SERVE < self.expires_at
    }

    fn is_fresh(&self, now: SystemTime) -> bool {
        let lifetime = self
            .expires_at
            .duration_since(self.obtained_at)
            .unwrap_or_default();
        let margin = MAX_REFRESH_MARGIN.min(lifetime / REFRESH_MARGIN_DIVISOR);
        now + margin < self.expires_at
    }
}

#[derive(Default)]
struct CacheState {
    token: Option<Cached>,
    /// The last failure and when it finished, so callers queued behind a
    /// failing refresh share its error instead of retrying one by one.
    last_error: Option<(Instant, AuthError)>,
    /// Failed requests in a row, which set the retry delay.
    failures: u32,
}

/// The token cache of one credential and scope.
pub struct TokenCache {
    credential: Arc<dyn TokenCredential>,
    kind: CredentialKind,
    scope: String,
    state: Mutex<CacheState>,
    refresh: tokio::sync::Mutex<()>,
    /// Refreshes behind a caller's back; each ends with its token request
    /// (bounded by `TOKEN_REQUEST_TIMEOUT`).
    refreshes: TaskTracker,
    refreshing: AtomicBool,
    first_retry_delay: Duration,
}

/// What `Status` shows about authentication.
pub struct AuthStatus {
    pub expires_at: Option<SystemTime>,
    pub error: Option<String>,
}

impl TokenCache {
    pub fn new(
        credential: Arc<dyn TokenCredential>,
        kind: CredentialKind,
        scope: String,
    ) -> TokenCache {
        TokenCache {
            credential,
            kind,
            scope,
            state: Mutex::default(),
            refresh: tokio::sync::Mutex::new(()),
            refreshes: TaskTracker::new(),
            refreshing: AtomicBool::new(false),
            first_retry_delay: FIRST_RETRY_DELAY,
        }
    }

    /// A cache for the same credential kind and scope, asking `credential`
    /// (built on a new HTTPS client after a network change), holding this
    /// one's token so nobody waits for a new one that is not due.
    pub fn on_credential(&self, credential: Arc<dyn TokenCredential>) -> TokenCache {
        let cache = TokenCache::new(credential, self.kind, self.scope.clone());
        cache.lock().token = self.lock().token.clone();
        cache
    }

    /// Asks the credential again at the next call (after `reload`: the
    /// user may just have fixed the login).
    pub fn retry_now(&self) {
        let mut state = self.lock();
        state.failures = 0;
        state.last_error = None;
    }

    /// The error of a recent failure, while its retry delay runs.
    fn backing_off(&self, asked_at: Instant) -> Option<AuthError> {
        let state = self.lock();
        let (at, error) = state.last_error.as_ref()?;
        let doublings = state.failures.saturating_sub(1).min(16);
        let delay = self
            .first_retry_delay
            .saturating_mul(1 << doublings)
            .min(MAX_RETRY_DELAY);
        (*at >= asked_at || at.elapsed() < delay).then(|| error.clone())
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// A token valid for a while yet, from the cache or freshly requested.
    /// One due for refresh is still handed out while it has
    /// [`MIN_LEFT_TO_SERVE`] left, and refreshed behind the caller.
    pub async fn token(self: &Arc<Self>) -> Result<Secret, AuthError> {
        let asked_at = Instant::now();
        match self.cached() {
            Some((token, true)) => return Ok(token),
            Some((token, false)) => {
                self.refresh_behind(asked_at);
                return Ok(token);
            }
            None => {}
        }
        if let Some(error) = self.backing_off(asked_at) {
            return Err(error);
        }
        self.refresh_now(asked_at).await
    }

    /// Asks the credential, unless a caller queued before us already did.
    async fn refresh_now(&self, asked_at: Instant) -> Result<Secret, AuthError> {
        let _refreshing = self.refresh.lock().await;
        if let Some((token, true)) = self.cached() {
            return Ok(token);
        }
        if let Some(error) = self.backing_off(asked_at) {
            return Err(error);
        }
        let result = self.request().await;
        let mut state = self.lock();
        match result {
            Ok(cached) => {
                let token = cached.token.clone();
                state.token = Some(cached);
                state.last_error = None;
                state.failures = 0;
                Ok(token)
            }
            Err(error) => {
                tracing::warn!(%error, "token request failed");
                state.last_error = Some((Instant::now(), error.clone()));
                state.failures = state.failures.saturating_add(1);
                Err(error)
            }
        }
    }

    /// [`Self::refresh_now`] on a task of its own, unless one is under way or
    /// a recent failure is being backed off from.
    fn refresh_behind(self: &Arc<Self>, asked_at: Instant) {
        if self.backing_off(asked_at).is_some() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = self.clone();
        self.refreshes.spawn(async move {
            // A failure is recorded (and logged) like any other.
            let _ = cache.refresh_now(asked_at).await;
            cache.refreshing.store(false, Ordering::Release);
        });
    }

    /// Drops `refused` from the cache after a service refused it, so the
    /// next caller asks the credential again. A token already replaced is
    /// left alone: of many connections refused together, the first gets a
    /// new token and the others use it instead of each fetching their own.
    pub fn invalidate(&self, refused: &Secret) {
        let mut state = self.lock();
        if state.token.as_ref().is_some_and(|t| t.token == *refused) {
            state.token = None;
        }
    }

    /// Runs `request` with a token; when the service refuses that token
    /// (HTTP 401: revoked, or from a clock that jumped), once more with a
    /// fresh one.
    pub async fn with_fresh_token<T, E, F, Fut>(self: &Arc<Self>, mut request: F) -> Result<T, E>
    where
        F: FnMut(Secret) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<AzureError> + RefusedToken,
    {
        let token = self.token().await.map_err(AzureError::from)?;
        match request(token.clone()).await {
            Err(error) if error.refused_token() => {
                tracing::info!("the service refused the token; retrying once with a fresh one");
                self.invalidate(&token);
                let token = self.token().await.map_err(AzureError::from)?;
                request(token).await
            }
            other => other,
        }
    }

    /// Who the cached token names (its claims, when it is a JWT); `None`
    /// before the first token or for an opaque one.
    pub fn identity(&self) -> Option<crate::azure::claims::Identity> {
        let state = self.lock();
        crate::azure::claims::identity(&state.token.as_ref()?.token)
    }

    pub fn status(&self) -> AuthStatus {
        let state = self.lock();
        AuthStatus {
            expires_at: state.token.as_ref().map(|t| t.expires_at),
            error: state.last_error.as_ref().map(|(_, e)| e.to_string()),
        }
    }

    /// The cached token while it can be served, and whether it is fresh
    /// (not yet due for refresh).
    fn cached(&self) -> Option<(Secret, bool)> {
        let state = self.lock();
        let cached = state.token.as_ref()?;
        let now = SystemTime::now();
        let fresh = cached.is_fresh(now);
        (fresh || cached.can_serve(now)).then(|| (cached.token.clone(), fresh))
    }

    async fn request(&self) -> Result<Cached, AuthError> {
        let fail = |message: String| AuthError {
            credential: self.kind.as_str(),
            message,
        };
        let obtained_at = SystemTime::now();
        let scopes = [self.scope.as_str()];
        let response = tokio::time::timeout(
            TOKEN_REQUEST_TIMEOUT,
            self.credential.get_token(&scopes, None),
        )
        .await
        .map_err(|_| {
            fail(format!(
                "no answer within {}s",
                TOKEN_REQUEST_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| fail(self.explain(&e)))?;
        let expires_at = SystemTime::from(response.expires_on);
        tracing::info!(
            credential = self.kind.as_str(),
            valid_for_secs = expires_at
                .duration_since(obtained_at)
                .unwrap_or_default()
                .as_secs(),
            "obtained an Azure access token"
        );
        Ok(Cached {
            token: Secret::new(response.token.secret()),
            obtained_at,
            expires_at,
        })
    }

    /// One line from azure_core's error, with a hint for the usual fix.
    fn explain(&self, error: &azure_core::Error) -> String {
        // Entra's answers come from the network: printable text only.
        let text = crate::error_body::printable(&error.to_string());
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let line = truncate(&line, 400);
        match self.kind {
            CredentialKind::AzureCli | CredentialKind::DeveloperTools => {
                format!(
                    "{line} (is `az` installed and on the daemon's PATH, and have you run `az login`?)"
                )
            }
            _ => line,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, CacheState> {
        self.state.lock()
    }
}

#[cfg(test)]
mod tests;

//! The [`Connector`]: what one version of the settings implies (HTTPS client,
//! credential and token cache, bastion table, warm connections), and the one
//! path every tunnel takes through it: Entra token → bastion lookup → session
//! slot → session → WebSocket, tried again on a fresh session when a try fails
//! in a way that a retry can fix ([`AzureError::is_transient`]). `Reload`
//! builds a new connector, reusing the parts whose settings did not change.

use std::future::Future;
use std::sync::Arc;

use anyhow::Result;
use bastion_proto::target::Target;
use tokio::time::Instant;

use crate::azure::arm::{self, BastionEntry, Bastions};
use crate::azure::auth::{self, AuthStatus, TokenCache};
use crate::azure::bastion_host::BastionHost;
use crate::azure::claims::Identity;
use crate::azure::http;
use crate::azure::vm_lookup::{VmLookupError, VmNames};
use crate::bastion::proxy::Proxies;
use crate::bastion::session::{Channels, LiveSession, SessionTokens, Sessions};
use crate::bastion::setup::{Counter, Setup};
use crate::bastion::spares::{SpareSettings, Spares};
use crate::bastion::websocket::TunnelSocket;
use crate::config::{Settings, parse_bastion_resource_id};
use crate::error::{AzureError, RefusedToken};
use crate::secret::Secret;

/// An open tunnel; dropping it deletes the Bastion session.
pub struct Tunnel {
    pub socket: TunnelSocket,
    /// Declared after `socket` so the WebSocket closes before the DELETE is sent.
    pub session: LiveSession,
}

pub struct Connector {
    settings: Arc<Settings>,
    tls: Arc<rustls::ClientConfig>,
    auth: Arc<TokenCache>,
    bastions: Bastions,
    sessions: Arc<Sessions>,
    /// The pooled client (ARM, Entra, DELETEs) and the warm connections
    /// (token POSTs, upgrades), which dial through HTTPS_PROXY / NO_PROXY.
    channels: Channels,
}

impl Connector {
    /// Builds the connector for `settings`, keeping what `previous` already
    /// has when the relevant settings are unchanged (warm token, lookups, pool).
    pub fn new(
        settings: Settings,
        sessions: Arc<Sessions>,
        previous: Option<&Connector>,
    ) -> Result<Connector> {
        let same_tls = previous.filter(|p| p.settings.tls == settings.tls);
        let (tls, http) = match same_tls {
            Some(p) => (p.tls.clone(), p.channels.http.clone()),
            None => {
                let tls = http::tls_config(settings.tls.ca_file.as_deref())?;
                let client = http::client(&tls)?;
                (tls, client)
            }
        };
        let same_auth = same_tls
            .filter(|p| p.settings.auth == settings.auth && p.settings.cloud == settings.cloud);
        let auth = match same_auth {
            Some(p) => p.auth.clone(),
            None => Arc::new(TokenCache::new(
                auth::credential(&settings, &http)?,
                settings.auth.credential,
                settings.cloud.token_scope.clone(),
            )),
        };
        let bastions = arm::bastions(&settings, same_auth.map(|p| &p.bastions));
        let spare_settings = SpareSettings::from(&settings.tunnel);
        let spares = match same_tls.filter(|p| p.channels.spares.settings() == spare_settings) {
            Some(p) => p.channels.spares.clone(),
            None => Arc::new(Spares::new(
                tls.clone(),
                Arc::new(Proxies::from_env()),
                spare_settings,
            )),
        };
        Ok(Connector {
            settings: Arc::new(settings),
            tls,
            auth,
            bastions,
            sessions,
            channels: Channels { http, spares },
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What a tunnel's keepalive watches to be checked at once.
    pub fn tunnel_checks(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sessions.tunnel_checks()
    }

    /// After a resume or a network change, when every connection opened
    /// before may lead nowhere: closes the warm connections to Bastions
    /// (their keepers dial new ones), has every live tunnel pinged, and
    /// returns a connector like this one on a new pooled HTTPS client (ARM,
    /// DELETEs), with how many warm connections were closed.
    pub fn after_network_change(&self) -> Result<(Connector, usize)> {
        let dropped = self.channels.spares.drop_warm(None);
        self.sessions.check_tunnels();
        let connector = Connector {
            settings: self.settings.clone(),
            tls: self.tls.clone(),
            auth: self.auth.clone(),
            bastions: self.bastions.clone(),
            sessions: self.sessions.clone(),
            channels: Channels {
                http: http::client(&self.tls)?,
                spares: self.channels.spares.clone(),
            },
        };
        Ok((connector, dropped))
    }

    /// The pooled HTTPS client, for ARM reads of callers above (discover).
    pub fn http(&self) -> &reqwest::Client {
        &self.channels.http
    }

    /// The configured bastion `name`, or an error saying how to add it.
    pub fn bastion(&self, name: &str) -> Result<&Arc<BastionEntry>, AzureError> {
        self.bastions.get(name).ok_or_else(|| {
            AzureError::NotConfigured(format!(
                "bastion {name:?} is not configured (known: {}); add it with \
                 `bastionctl bastion add` or under [bastions] in config.toml",
                self.settings.bastion_names()
            ))
        })
    }

    pub fn bastions(&self) -> impl Iterator<Item = &Arc<BastionEntry>> {
        self.bastions.values()
    }

    /// A token for the configured credential (cached, refreshed before expiry).
    pub async fn token(&self) -> Result<Secret, AzureError> {
        Ok(self.auth.token().await?)
    }

    /// Runs `request` with a token; when the service refuses that token (a
    /// revoked one, or from a clock that jumped), once more with a fresh one.
    pub async fn with_fresh_token<T, E, F, Fut>(&self, request: F) -> Result<T, E>
    where
        F: FnMut(Secret) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<AzureError> + RefusedToken,
    {
        self.auth.with_fresh_token(request).await
    }

    pub fn auth_status(&self) -> AuthStatus {
        self.auth.status()
    }

    pub fn identity(&self) -> Option<Identity> {
        self.auth.identity()
    }

    pub fn credential_name(&self) -> &'static str {
        self.auth.kind().as_str()
    }

    /// After `reload`: the user may have fixed the login or the portal, so
    /// ask the credential at once and look every bastion up afresh.
    pub fn forget_failures(&self) {
        self.auth.retry_now();
        for entry in self.bastions.values() {
            entry.forget();
        }
    }

    /// A fresh setup budget from `[tunnel]`, counting retries into `retries`.
    pub fn setup(&self, retries: Vec<Counter>) -> Setup {
        let tunnel = &self.settings.tunnel;
        Setup::new(tunnel.setup_attempts, tunnel.setup_timeout(), retries)
    }

    /// Opens a tunnel to `target` through the bastion named `bastion`,
    /// retrying transient failures within `setup`.
    pub async fn open(
        &self,
        bastion: &str,
        target: &Target,
        setup: &mut Setup,
    ) -> Result<Tunnel, AzureError> {
        let entry = self.bastion(bastion)?;
        loop {
            setup.start_attempt();
            let attempt = tokio::time::timeout_at(
                setup.deadline(),
                self.try_open(entry, target, setup.deadline()),
            );
            let error = match attempt.await {
                Ok(Ok(tunnel)) => return Ok(tunnel),
                Ok(Err(error)) => error,
                Err(_) => AzureError::Unreachable {
                    what: "setting up the tunnel",
                    message: format!(
                        "gave up after {}s ({} tries); the Bastion is slow or unreachable \
                         (the limit is `setup_timeout_secs` under [tunnel])",
                        self.settings.tunnel.setup_timeout_secs,
                        setup.attempts()
                    ),
                },
            };
            if !error.is_transient() {
                return Err(error);
            }
            tracing::info!(%error, attempt = setup.attempts(), "tunnel setup failed");
            if !setup.retry().await {
                return Err(error);
            }
        }
    }

    /// One try: token, bastion, session slot, session, WebSocket.
    async fn try_open(
        &self,
        entry: &BastionEntry,
        target: &Target,
        deadline: Instant,
    ) -> Result<Tunnel, AzureError> {
        let mut token = self.token().await?;
        let mut host = self.resolve(entry, target, &mut token).await?;
        let mut retried = false;
        let (session, tokens) = loop {
            let error = match self
                .create_session(entry, &host, target, &token, deadline)
                .await
            {
                Ok(created) => break created,
                Err(error) => error,
            };
            let AzureError::Rejected { status, .. } = error else {
                return Err(error);
            };
            if retried || !matches!(status, 401 | 403) {
                return Err(error);
            }
            // A refused token (a clock that jumped, a revoked session) gets one
            // fresh token; a refused bastion may have been reconfigured since
            // it was looked up, and its precise reason beats a bare 403.
            retried = true;
            tracing::info!(%error, "session refused; retrying once with a fresh token and bastion lookup");
            entry.invalidate(&error);
            if status == 401 {
                self.auth.invalidate(&token);
                token = self.token().await?;
            }
            host = self.resolve(entry, target, &mut token).await?;
        };
        let socket = self
            .upgrade(&host, &tokens)
            .await
            .inspect_err(|e| entry.invalidate(e))?;
        Ok(Tunnel { socket, session })
    }

    /// A session to `target` on `host`, counted against the bastion's
    /// `max_sessions` (waiting for a slot until `deadline`) and owned by the
    /// returned [`LiveSession`], which deletes it.
    pub async fn create_session(
        &self,
        entry: &BastionEntry,
        host: &BastionHost,
        target: &Target,
        token: &Secret,
        deadline: Instant,
    ) -> Result<(LiveSession, SessionTokens), AzureError> {
        let slot = entry.session_slot(deadline).await?;
        self.sessions
            .create(&self.channels, host, target, token, slot)
            .await
    }

    /// The WebSocket of a session, on a warm connection to its Bastion host.
    pub async fn upgrade(
        &self,
        host: &BastionHost,
        tokens: &SessionTokens,
    ) -> Result<TunnelSocket, AzureError> {
        let path = Secret::new(format!(
            "/webtunnelv2/{}?X-Node-Id={}",
            tokens.websocket_token.expose(),
            tokens.node_id
        ));
        self.channels.spares.upgrade(&host.dns_name, &path).await
    }

    /// The bastion as ARM describes it (cached while fresh), with a fresh
    /// token if ARM refuses the one given (then kept in `token`).
    pub async fn lookup(
        &self,
        entry: &BastionEntry,
        token: &mut Secret,
    ) -> Result<Arc<BastionHost>, AzureError> {
        let resource_manager = &self.settings.cloud.resource_manager;
        let http = &self.channels.http;
        let first = token.clone();
        let (host, used) = self
            .with_fresh_token(|token| async move {
                let host = entry.resolve(http, resource_manager, &token).await?;
                Ok::<_, AzureError>((host, token))
            })
            .await?;
        if used != first {
            *token = used;
        }
        Ok(host)
    }

    /// [`Self::lookup`], checked against `target`. A failed check is not
    /// cached, so a fix in the portal is seen by the next connection.
    async fn resolve(
        &self,
        entry: &BastionEntry,
        target: &Target,
        token: &mut Secret,
    ) -> Result<Arc<BastionHost>, AzureError> {
        let host = self.lookup(entry, token).await?;
        if let Err(error) = host.check(&entry.name, target) {
            entry.invalidate(&error);
            return Err(error);
        }
        Ok(host)
    }

    /// The resource id of the VM called `name`, in the bastion's subscription
    /// (or in `resource_group` of it), through the listings cached in `names`.
    pub async fn vm_id(
        &self,
        names: &VmNames,
        bastion: &str,
        name: &str,
        resource_group: Option<&str>,
    ) -> Result<String, VmLookupError> {
        let entry = self.bastion(bastion)?;
        let (subscription, _, _) =
            parse_bastion_resource_id(entry.resource_id()).ok_or_else(|| {
                AzureError::Precondition(format!(
                    "bastion {bastion}'s resource id {:?} names no subscription",
                    entry.resource_id()
                ))
            })?;
        let resource_manager = &self.settings.cloud.resource_manager;
        let http = &self.channels.http;
        self.with_fresh_token(|token| async move {
            names
                .resolve(
                    http,
                    resource_manager,
                    &token,
                    subscription,
                    resource_group,
                    name,
                )
                .await
        })
        .await
    }

    /// Gets a token and looks every bastion up, so the first connection does
    /// not wait for `az` and ARM and problems show in `status` at once.
    pub async fn warm_up(&self) {
        if self.bastions.is_empty() {
            return;
        }
        // A failure is logged and shown in `status` by the token cache.
        let Ok(mut token) = self.token().await else {
            return;
        };
        for entry in self.bastions.values() {
            if let Err(error) = self.lookup(entry, &mut token).await {
                tracing::warn!(bastion = %entry.name, %error, "cannot look up bastion");
            }
        }
    }
}

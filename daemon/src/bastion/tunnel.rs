//! One concept: the [`Connector`], the one way to Azure for everything above.
//! What one version of the settings implies (HTTPS client, credential and
//! token cache, bastion table, warm connections), and the one path every
//! tunnel takes through it: Entra token → bastion lookup → session slot →
//! session → WebSocket, tried again on a fresh session when a try fails in a
//! way that a retry can fix ([`AzureError::is_transient`]). `Reload` builds a
//! new connector, reusing the parts whose settings did not change; a network
//! change one on a new HTTPS client ([`Connector::after_network_change`]).

use std::borrow::Cow;
use std::sync::Arc;

use anyhow::Result;
use bastion_proto::target::Target;
use tokio::time::Instant;

use crate::azure::arm::{self, BastionEntry, Bastions};
use crate::azure::auth::{AuthStatus, TokenCache};
use crate::azure::bastion_host::BastionHost;
use crate::azure::claims::Identity;
use crate::azure::http;
use crate::azure::tenants::TokenCaches;
use crate::azure::vm_lookup::{VmLookupError, VmNames};
use crate::bastion::data_pod::{self, DataPods, PodKey};
use crate::bastion::proxy::Proxies;
use crate::bastion::session::{Channels, LiveSession, SessionTokens, Sessions};
use crate::bastion::setup::{Counter, Setup};
use crate::bastion::spares::{SpareSettings, Spares};
use crate::bastion::websocket::TunnelSocket;
use crate::config::{Settings, parse_bastion_resource_id};
use crate::error::AzureError;
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
    /// The credential's token cache, and one per tenant a bastion needs.
    tokens: TokenCaches,
    bastions: Bastions,
    sessions: Arc<Sessions>,
    /// The pooled client (ARM, Entra, DELETEs) and the warm connections
    /// (token POSTs, upgrades), which dial through HTTPS_PROXY / NO_PROXY.
    channels: Channels,
    /// Developer bastions' data pods by target (a reload asks again; a
    /// network change keeps them).
    pods: Arc<DataPods>,
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
        let tokens = TokenCaches::new(&settings, &http, same_auth.map(|p| &p.tokens))?;
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
            tokens,
            bastions,
            sessions,
            channels: Channels { http, spares },
            pods: Arc::default(),
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
    /// Entra, DELETEs; tokens and lookups kept), with how many warm
    /// connections were closed.
    pub fn after_network_change(&self) -> Result<(Connector, usize)> {
        let dropped = self.channels.spares.drop_warm(None);
        self.sessions.check_tunnels();
        let http = http::client(&self.tls)?;
        let connector = Connector {
            settings: self.settings.clone(),
            tls: self.tls.clone(),
            tokens: self.tokens.on_client(&self.settings, &http)?,
            bastions: self.bastions.clone(),
            sessions: self.sessions.clone(),
            channels: Channels {
                http,
                spares: self.channels.spares.clone(),
            },
            pods: self.pods.clone(),
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
        Ok(self.tokens.home().token().await?)
    }

    /// The token cache of `entry`'s tenant.
    pub fn auth_of(&self, entry: &BastionEntry) -> &Arc<TokenCache> {
        self.tokens.for_bastion(&self.settings, &entry.settings)
    }

    /// The credential's status, or, while it has not been asked (every
    /// bastion has a tenant of its own), the first bastion tenant's.
    pub fn auth_status(&self) -> AuthStatus {
        self.signed_in().status()
    }

    pub fn identity(&self) -> Option<Identity> {
        self.signed_in().identity()
    }

    fn signed_in(&self) -> &Arc<TokenCache> {
        let asked = |c: &&Arc<TokenCache>| {
            let status = c.status();
            status.expires_at.is_some() || status.error.is_some()
        };
        self.tokens.all().find(asked).unwrap_or(self.tokens.home())
    }

    /// Every token cache's status and identity, the credential's first.
    pub fn tenants(&self) -> impl Iterator<Item = (AuthStatus, Option<Identity>)> {
        self.tokens.all().map(|c| (c.status(), c.identity()))
    }

    pub fn credential_name(&self) -> &'static str {
        self.tokens.home().kind().as_str()
    }

    /// After `reload`: the user may have fixed the login or the portal, so
    /// ask the credential at once and look every bastion up afresh.
    pub fn forget_failures(&self) {
        for cache in self.tokens.all() {
            cache.retry_now();
        }
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
        let auth = self.auth_of(entry);
        let mut token = auth.token().await?;
        let mut host = self.resolve(entry, target, &mut token).await?;
        let mut retried = false;
        let (session, tokens, plane, pod) = loop {
            let (plane, pod) = self.data_plane(entry, &host, target, &token).await?;
            let error = match self
                .create_session(entry, &plane, target, &token, deadline)
                .await
            {
                Ok((session, tokens)) => break (session, tokens, plane, pod),
                Err(error) => error,
            };
            if let Some(pod) = &pod {
                self.pods.forget(pod);
            }
            let AzureError::Rejected { status, .. } = error else {
                return Err(error);
            };
            // A data pod that no longer serves the target (404) is asked for
            // again, like a refused bastion is looked up again.
            let refused = matches!(status, 401 | 403) || (pod.is_some() && status == 404);
            if retried || !refused {
                return Err(error);
            }
            // A refused token (a clock that jumped, a revoked session) gets one
            // fresh token; a refused bastion may have been reconfigured since
            // it was looked up, and its precise reason beats a bare 403.
            retried = true;
            tracing::info!(%error, "session refused; retrying once with a fresh token and bastion lookup");
            entry.invalidate(&error);
            if status == 401 {
                auth.invalidate(&token);
                token = auth.token().await?;
            }
            host = self.resolve(entry, target, &mut token).await?;
        };
        let socket = self.upgrade(&plane, &tokens).await.inspect_err(|e| {
            entry.invalidate(e);
            if let Some(pod) = &pod {
                self.pods.forget(pod);
            }
        })?;
        Ok(Tunnel { socket, session })
    }

    /// Where sessions to `target` are made: the bastion's own host, or, for
    /// a Developer bastion, the data pod serving the target (asked for unless
    /// known), with the key to forget it by. A Standard bastion's path has
    /// no request here.
    async fn data_plane<'h>(
        &self,
        entry: &BastionEntry,
        host: &'h BastionHost,
        target: &Target,
        token: &Secret,
    ) -> Result<(Cow<'h, BastionHost>, Option<PodKey>), AzureError> {
        if !host.uses_data_pod() {
            return Ok((Cow::Borrowed(host), None));
        }
        let key = PodKey::new(host, target)?;
        let pod = match self.pods.cached(&key) {
            Some(pod) => pod,
            None => {
                let pod = self.pod_lookup(entry, host, target, token).await?;
                self.pods.store(key.clone(), &pod);
                pod
            }
        };
        Ok((Cow::Owned(host.on_pod(pod)), Some(key)))
    }

    /// Asks the Developer bastion `host` which data pod serves `target`
    /// (no cache: `doctor` calls it directly).
    pub async fn pod_lookup(
        &self,
        entry: &BastionEntry,
        host: &BastionHost,
        target: &Target,
        token: &Secret,
    ) -> Result<String, AzureError> {
        data_pod::lookup(
            &self.channels.http,
            host,
            entry.resource_id(),
            target,
            token,
        )
        .await
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

    /// The WebSocket of a session, on a warm connection to its Bastion host
    /// (for a Developer bastion, the data pod, whose URL has no node id).
    pub async fn upgrade(
        &self,
        host: &BastionHost,
        tokens: &SessionTokens,
    ) -> Result<TunnelSocket, AzureError> {
        let ws_token = tokens.websocket_token.expose();
        let path = Secret::new(match host.uses_data_pod() {
            true => format!("/omni/webtunnel/{ws_token}"),
            false => format!("/webtunnelv2/{ws_token}?X-Node-Id={}", tokens.node_id),
        });
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
            .auth_of(entry)
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
        self.auth_of(entry)
            .with_fresh_token(|token| async move {
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

    /// Gets each bastion's token and looks it up, so the first connection
    /// does not wait for `az` and ARM and problems show in `status` at once.
    pub async fn warm_up(&self) {
        for entry in self.bastions.values() {
            // A failure is logged and shown in `status` by the token cache.
            let Ok(mut token) = self.auth_of(entry).token().await else {
                continue;
            };
            if let Err(error) = self.lookup(entry, &mut token).await {
                tracing::warn!(bastion = %entry.name, %error, "cannot look up bastion");
            }
        }
    }
}

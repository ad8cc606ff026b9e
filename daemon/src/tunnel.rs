//! Opening a tunnel: Entra token → bastion lookup → session slot → session →
//! WebSocket, tried again on a fresh session when a try fails in a way that
//! a retry can fix ([`TunnelError::is_transient`]). A [`Connector`] holds
//! what one version of the settings implies (HTTPS client, credential and
//! token cache, bastion table); `Reload` builds a new one, reusing the parts
//! whose settings did not change.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Result;
use bastion_proto::target::Target;
use tokio::time::Instant;

use crate::arm::{self, BastionEntry, Bastions};
use crate::auth::{self, TokenCache};
use crate::bastion_host::BastionHost;
use crate::config::Settings;
use crate::error::TunnelError;
use crate::http;
use crate::keepalive::Keepalive;
use crate::proxy::Proxies;
use crate::pump::PumpOptions;
use crate::secret::Secret;
use crate::session::{LiveSession, Sessions};
use crate::setup::Setup;
use crate::spares::{SpareSettings, Spares};
use crate::websocket::TunnelSocket;

/// A fresh tunnel that has neither sent a frame back nor been given client
/// bytes within this long is given up for another (the reported "101, then
/// nothing"): a healthy Bastion answers our first ping within a round trip,
/// and 5 s leaves room for a congested link without making ssh users wait long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// An open tunnel; dropping it deletes the Bastion session.
pub struct Tunnel {
    pub socket: TunnelSocket,
    /// Declared after `socket` so the WebSocket closes before the DELETE is sent.
    pub session: LiveSession,
}

pub struct Connector {
    pub settings: Arc<Settings>,
    pub http: reqwest::Client,
    pub tls: Arc<rustls::ClientConfig>,
    pub auth: Arc<TokenCache>,
    pub bastions: Bastions,
    pub sessions: Arc<Sessions>,
    /// Warm connections for token POSTs and upgrades; they dial through
    /// HTTPS_PROXY / NO_PROXY (`spares.proxies()`; reqwest reads them for itself).
    pub spares: Arc<Spares>,
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
            Some(p) => (p.tls.clone(), p.http.clone()),
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
        let spares = match same_tls.filter(|p| p.spares.settings() == spare_settings) {
            Some(p) => p.spares.clone(),
            None => Arc::new(Spares::new(
                tls.clone(),
                Arc::new(Proxies::from_env()),
                spare_settings,
            )),
        };
        Ok(Connector {
            settings: Arc::new(settings),
            http,
            tls,
            auth,
            bastions,
            sessions,
            spares,
        })
    }

    /// A fresh setup budget from `[tunnel]`, counting retries into `meters`.
    pub fn setup<'a>(&self, meters: &'a [&'a AtomicU64]) -> Setup<'a> {
        let tunnel = &self.settings.tunnel;
        Setup::new(tunnel.setup_attempts, tunnel.setup_timeout(), meters)
    }

    /// How tunnels behave, from `[tunnel]`; `setup` decides the probe.
    pub fn pump_options(&self, setup: &Setup<'_>) -> PumpOptions {
        let tunnel = &self.settings.tunnel;
        let keepalive = Keepalive {
            interval: tunnel.keepalive_interval(),
            timeout: tunnel.keepalive_timeout(),
        };
        PumpOptions {
            keepalive,
            max_frame: tunnel.max_frame_bytes,
            eof_linger: tunnel.eof_linger(),
            // Pings off means the user does not trust them: no probe either.
            probe: (keepalive.interval.is_some() && !setup.is_last()).then_some(PROBE_TIMEOUT),
        }
    }

    /// Opens a tunnel to `target` through the bastion named `bastion`,
    /// retrying transient failures within `setup`.
    pub async fn open(
        &self,
        bastion: &str,
        target: &Target,
        setup: &mut Setup<'_>,
    ) -> Result<Tunnel, TunnelError> {
        let entry = self.bastions.get(bastion).ok_or_else(|| {
            TunnelError::NotConfigured(format!(
                "bastion {bastion:?} is not configured (known: {}); add it with \
                 `bastionctl bastion add` or under [bastions] in config.toml",
                self.settings.bastion_names()
            ))
        })?;
        loop {
            setup.start_attempt();
            let attempt = tokio::time::timeout_at(
                setup.deadline(),
                self.try_open(entry, target, setup.deadline()),
            );
            let error = match attempt.await {
                Ok(Ok(tunnel)) => return Ok(tunnel),
                Ok(Err(error)) => error,
                Err(_) => TunnelError::Unreachable {
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
    ) -> Result<Tunnel, TunnelError> {
        let mut token = self.auth.token().await?;
        let mut host = self.resolve(entry, target, &mut token).await?;
        let mut retried = false;
        let (session, tokens) = loop {
            let slot = entry.session_slot(deadline).await?;
            let created = self
                .sessions
                .create(&self.http, &self.spares, &host, target, &token, slot)
                .await;
            let error = match created {
                Ok(created) => break created,
                Err(error) => error,
            };
            let TunnelError::Rejected { status, .. } = error else {
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
                self.auth.invalidate();
                token = self.auth.token().await?;
            }
            host = self.resolve(entry, target, &mut token).await?;
        };
        let path = Secret::new(format!(
            "/webtunnelv2/{}?X-Node-Id={}",
            tokens.websocket_token.expose(),
            tokens.node_id
        ));
        let socket = self
            .spares
            .upgrade(&host.dns_name, &path)
            .await
            .inspect_err(|e| entry.invalidate(e))?;
        Ok(Tunnel { socket, session })
    }

    /// The bastion as ARM describes it (cached while fresh). ARM's 401 (a
    /// token revoked, or from a clock that jumped) gets one fresh token.
    pub async fn lookup(
        &self,
        entry: &BastionEntry,
        token: &mut Secret,
    ) -> Result<Arc<BastionHost>, TunnelError> {
        let resource_manager = &self.settings.cloud.resource_manager;
        match entry.resolve(&self.http, resource_manager, token).await {
            Err(TunnelError::Rejected { status: 401, .. }) => {
                tracing::info!(bastion = %entry.name, "ARM refused the token; retrying once with a fresh one");
                self.auth.invalidate();
                *token = self.auth.token().await?;
                entry.resolve(&self.http, resource_manager, token).await
            }
            other => other,
        }
    }

    /// [`Self::lookup`], checked against `target`. A failed check is not
    /// cached, so a fix in the portal is seen by the next connection.
    async fn resolve(
        &self,
        entry: &BastionEntry,
        target: &Target,
        token: &mut Secret,
    ) -> Result<Arc<BastionHost>, TunnelError> {
        let host = self.lookup(entry, token).await?;
        if let Err(error) = host.check(&entry.name, target) {
            entry.invalidate(&error);
            return Err(error);
        }
        Ok(host)
    }
}

//! Opening a tunnel: Entra token → bastion lookup → session → WebSocket.
//! A [`Connector`] holds what one version of the settings implies (HTTPS
//! client, credential and token cache, bastion table); `Reload` builds a new
//! one, reusing the parts whose settings did not change.

use std::sync::Arc;

use anyhow::Result;

use crate::arm::{self, Bastions};
use crate::auth::{self, TokenCache};
use crate::config::Settings;
use crate::error::TunnelError;
use crate::proxy::Proxies;
use crate::secret::Secret;
use crate::session::{LiveSession, Sessions};
use crate::websocket::{self, TunnelSocket};
use crate::{http, keepalive};
use bastion_proto::target::Target;

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
    /// HTTPS_PROXY / NO_PROXY for tunnels (reqwest reads them for itself).
    pub proxies: Proxies,
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
        Ok(Connector {
            settings: Arc::new(settings),
            http,
            tls,
            auth,
            bastions,
            sessions,
            proxies: Proxies::from_env(),
        })
    }

    /// Keepalive timing for tunnels, from `[tunnel]`.
    pub fn keepalive(&self) -> keepalive::Keepalive {
        keepalive::Keepalive {
            interval: self.settings.tunnel.keepalive_interval(),
            timeout: self.settings.tunnel.keepalive_timeout(),
        }
    }

    /// Opens a tunnel to `target` through the bastion named `bastion`.
    pub async fn open(&self, bastion: &str, target: &Target) -> Result<Tunnel, TunnelError> {
        let entry = self.bastions.get(bastion).ok_or_else(|| {
            TunnelError::NotConfigured(format!(
                "bastion {bastion:?} is not configured (known: {})",
                self.settings.bastion_names()
            ))
        })?;
        let mut token = self.auth.token().await?;
        let mut host = entry
            .resolve(&self.http, &self.settings.cloud.resource_manager, &token)
            .await?;
        host.check(bastion, target)?;
        let mut retried = false;
        let (session, tokens) = loop {
            let created = self
                .sessions
                .create(&self.http, &host, target, &token)
                .await;
            let error = match created {
                Ok(created) => break created,
                Err(error) => error,
            };
            entry.invalidate(&error);
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
            if status == 401 {
                self.auth.invalidate();
                token = self.auth.token().await?;
            }
            host = entry
                .resolve(&self.http, &self.settings.cloud.resource_manager, &token)
                .await?;
            host.check(bastion, target)?;
        };
        let path = Secret::new(format!(
            "/webtunnelv2/{}?X-Node-Id={}",
            tokens.websocket_token.expose(),
            tokens.node_id
        ));
        let socket = websocket::dial(
            &self.proxies,
            self.tls.clone(),
            &host.dns_name,
            &path,
            websocket::config(),
        )
        .await
        .inspect_err(|e| entry.invalidate(e))?;
        Ok(Tunnel { socket, session })
    }
}

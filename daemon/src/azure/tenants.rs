//! Tokens per tenant: each bastion's ARM lookup, VM lookups and session
//! `aztoken` use a token its tenant accepts ([`TokenScope::for_bastion`]),
//! one cache per scope, shared by the bastions of that scope; the home cache
//! serves what belongs to no bastion (`bastion discover`). And ARM's refusal
//! of a token from another tenant, turned into what to do about it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::azure::auth::TokenCache;
use crate::azure::credential::{TokenScope, credential};
use crate::config::{BastionSettings, Settings};

/// Every token cache the settings call for.
pub struct TokenCaches {
    home: Arc<TokenCache>,
    scoped: BTreeMap<TokenScope, Arc<TokenCache>>,
}

impl TokenCaches {
    /// The caches for `settings`, keeping `previous`'s (and their tokens)
    /// where a scope is unchanged; `previous` must have the same `[auth]`.
    pub fn new(
        settings: &Settings,
        http: &reqwest::Client,
        previous: Option<&TokenCaches>,
    ) -> anyhow::Result<TokenCaches> {
        let cache = |scope: &TokenScope| -> anyhow::Result<Arc<TokenCache>> {
            if let Some(kept) = previous.and_then(|p| p.get(scope)) {
                return Ok(kept.clone());
            }
            Ok(Arc::new(TokenCache::new(
                credential(settings, http, scope)?,
                settings.auth.credential,
                settings.cloud.token_scope.clone(),
            )))
        };
        let home = cache(&TokenScope::Home)?;
        let mut scoped = BTreeMap::new();
        for b in settings.bastions.values() {
            let scope = TokenScope::for_bastion(settings, b);
            if scope != TokenScope::Home && !scoped.contains_key(&scope) {
                let made = cache(&scope)?;
                scoped.insert(scope, made);
            }
        }
        Ok(TokenCaches { home, scoped })
    }

    /// The same caches, their credentials on `http` (a new client after a
    /// network change: no request goes out on a connection of the old
    /// pool), each keeping its token.
    pub fn on_client(
        &self,
        settings: &Settings,
        http: &reqwest::Client,
    ) -> anyhow::Result<TokenCaches> {
        let renew = |scope: &TokenScope, cache: &TokenCache| -> anyhow::Result<Arc<TokenCache>> {
            Ok(Arc::new(
                cache.on_credential(credential(settings, http, scope)?),
            ))
        };
        let scoped = self
            .scoped
            .iter()
            .map(|(scope, cache)| Ok((scope.clone(), renew(scope, cache)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(TokenCaches {
            home: renew(&TokenScope::Home, &self.home)?,
            scoped,
        })
    }

    fn get(&self, scope: &TokenScope) -> Option<&Arc<TokenCache>> {
        match scope {
            TokenScope::Home => Some(&self.home),
            other => self.scoped.get(other),
        }
    }

    /// The credential's own cache.
    pub fn home(&self) -> &Arc<TokenCache> {
        &self.home
    }

    /// The cache bastion `b` uses.
    pub fn for_bastion(&self, settings: &Settings, b: &BastionSettings) -> &Arc<TokenCache> {
        self.get(&TokenScope::for_bastion(settings, b))
            .unwrap_or(&self.home)
    }

    /// Every cache, the home one first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<TokenCache>> {
        std::iter::once(&self.home).chain(self.scoped.values())
    }
}

/// The tenant ARM wants, when `message` is its `InvalidAuthenticationTokenTenant`
/// text ("The access token is from the wrong issuer '…'. It must match the
/// tenant 'https://sts.windows.net/<tenant>/' associated with this subscription. …").
pub fn wanted_tenant(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("wrong issuer")?;
    let (_, rest) = rest.split_once("must match the tenant '")?;
    let url = rest.split('\'').next()?;
    let tenant = url.trim_end_matches('/').rsplit('/').next()?;
    let plausible = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    plausible.then_some(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wanted_tenant_is_read_from_arms_refusal() {
        let message = "The access token is from the wrong issuer 'https://sts.windows.net/aaa/'. \
                       It must match the tenant 'https://sts.windows.net/bbb/' associated with this \
                       subscription. Please use the authority (URL) 'https://login.windows.net/bbb' \
                       to get the token.";
        assert_eq!(wanted_tenant(message), Some("bbb"));
        assert_eq!(wanted_tenant("The access token is invalid."), None);
    }
}

//! Bastion hosts, looked up once through Azure Resource Manager and cached.
//! The lookup gives the data-plane host name and the settings that decide
//! whether native-client tunnels can work at all, so a misconfigured bastion
//! gets a specific message naming the portal setting instead of a vague 403.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::arm_list;
use crate::bastion_host::{ArmBastion, BastionHost};
use crate::config::{BastionSettings, Settings};
use crate::error::TunnelError;
use crate::http::MAX_RESPONSE_BODY;
use crate::lock::lock;
use crate::secret::Secret;

/// The ARM API version whose bastionHosts shape we read.
const API_VERSION: &str = "2024-01-01";

/// Looks up a bastion host through ARM.
pub async fn lookup(
    http: &reqwest::Client,
    resource_manager: &str,
    resource_id: &str,
    token: &Secret,
) -> Result<BastionHost, TunnelError> {
    let what = "looking up the bastion in Azure Resource Manager";
    let url = format!(
        "{}{resource_id}?api-version={API_VERSION}",
        resource_manager.trim_end_matches('/')
    );
    let host: ArmBastion = arm_list::get(http, &url, token, what, MAX_RESPONSE_BODY).await?;
    let (subscription, resource_group, _) = crate::config::parse_bastion_resource_id(resource_id)
        .ok_or_else(|| {
        TunnelError::Precondition(format!("{resource_id:?} is not a bastion host resource id"))
    })?;
    let sku = host.sku_name();
    let dns_name = host
        .properties
        .dns_name
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            TunnelError::Precondition(format!(
                "bastion {resource_id} has no dnsName yet (is it still deploying?)"
            ))
        })?;
    Ok(BastionHost {
        dns_name,
        sku,
        tunneling: host.properties.enable_tunneling,
        ip_connect: host.properties.enable_ip_connect,
        subscription: subscription.to_string(),
        resource_group: resource_group.to_string(),
    })
}

/// How long what ARM said about a bastion is trusted. A failed check or a
/// refused session forgets it at once; this bounds how long any other portal
/// change (a redeploy, a feature turned off) goes unseen. ARM reads are cheap
/// and one lookup serves every connection meanwhile.
const LOOKUP_TTL: Duration = Duration::from_secs(5 * 60);

/// One configured bastion, what ARM said about it, and its session budget.
pub struct BastionEntry {
    pub name: String,
    pub settings: BastionSettings,
    state: Mutex<EntryState>,
    /// Single-flight: concurrent first connections share one ARM lookup.
    resolving: tokio::sync::Mutex<()>,
    /// One permit per live session (`max_sessions`); waiters are served in order.
    slots: Arc<Semaphore>,
}

#[derive(Default, Clone)]
pub struct EntryState {
    pub host: Option<Arc<BastionHost>>,
    pub last_error: Option<String>,
    pub resolved_at: Option<SystemTime>,
}

impl BastionEntry {
    fn new(name: &str, settings: &BastionSettings) -> BastionEntry {
        BastionEntry {
            name: name.to_string(),
            settings: settings.clone(),
            state: Mutex::default(),
            resolving: tokio::sync::Mutex::new(()),
            slots: Arc::new(Semaphore::new(settings.max_sessions as usize)),
        }
    }

    pub fn resource_id(&self) -> &str {
        &self.settings.resource_id
    }

    /// Waits (in order, until `deadline`) for room for one more live session.
    pub async fn session_slot(
        &self,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, TunnelError> {
        let max = self.settings.max_sessions;
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a timeout is the only way here.
            _ => Err(TunnelError::Busy(format!(
                "all {max} Bastion sessions allowed on bastion {} are in use and none came free in time; \
                 raise `max_sessions` under [bastions.{}] in config.toml (a Standard Bastion carries \
                 about 40 SSH sessions in all), or close idle connections",
                self.name, self.name
            ))),
        }
    }

    /// Sessions of this bastion in use (or being deleted) now.
    pub fn sessions_in_use(&self) -> u32 {
        let free = u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX);
        self.settings.max_sessions.saturating_sub(free)
    }

    pub fn snapshot(&self) -> EntryState {
        self.lock().clone()
    }

    /// The cached host while it is fresh, else a new ARM lookup.
    pub async fn resolve(
        &self,
        http: &reqwest::Client,
        resource_manager: &str,
        token: &Secret,
    ) -> Result<Arc<BastionHost>, TunnelError> {
        if let Some(host) = self.fresh() {
            return Ok(host);
        }
        let _resolving = self.resolving.lock().await;
        if let Some(host) = self.fresh() {
            return Ok(host);
        }
        let result = lookup(http, resource_manager, self.resource_id(), token).await;
        let mut state = self.lock();
        match result {
            Ok(host) => {
                tracing::info!(bastion = %self.name, dns_name = %host.dns_name, sku = %host.sku, "resolved bastion");
                let host = Arc::new(host);
                state.host = Some(host.clone());
                state.last_error = None;
                state.resolved_at = Some(SystemTime::now());
                Ok(host)
            }
            Err(error) => {
                state.last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    fn fresh(&self) -> Option<Arc<BastionHost>> {
        let state = self.lock();
        let age = state.resolved_at?.elapsed().ok()?;
        // A clock that went backwards makes `elapsed` fail: look up again.
        (age < LOOKUP_TTL).then(|| state.host.clone())?
    }

    /// Forgets the cached host after a failure, so the next connection asks
    /// ARM again (the bastion may have been reconfigured or redeployed).
    pub fn invalidate(&self, error: &TunnelError) {
        let mut state = self.lock();
        state.host = None;
        state.last_error = Some(error.to_string());
    }

    /// Forgets the cached host (on reload: look every bastion up afresh).
    pub fn forget(&self) {
        self.lock().host = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        lock(&self.state)
    }
}

/// The configured bastions by name.
pub type Bastions = BTreeMap<String, Arc<BastionEntry>>;

/// Builds the bastion table for `settings`, keeping entries (and their
/// session budgets) whose settings did not change.
pub fn bastions(settings: &Settings, previous: Option<&Bastions>) -> Bastions {
    settings
        .bastions
        .iter()
        .map(|(name, b)| {
            let kept = previous
                .and_then(|p| p.get(name))
                .filter(|e| e.settings == *b)
                .cloned();
            let entry = kept.unwrap_or_else(|| Arc::new(BastionEntry::new(name, b)));
            (name.clone(), entry)
        })
        .collect()
}

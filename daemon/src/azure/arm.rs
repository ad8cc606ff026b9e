//! Bastion hosts, looked up once through Azure Resource Manager and cached.
//! The lookup gives the data-plane host name and the settings that decide
//! whether native-client tunnels can work at all, so a misconfigured bastion
//! gets a specific message naming the portal setting instead of a vague 403.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::azure::arm_list;
use crate::azure::bastion_host::{ArmBastion, BastionHost};
use crate::azure::http::MAX_RESPONSE_BODY;
use crate::azure::session_slots::SessionSlots;
use crate::config::{BastionSettings, Settings};
use crate::error::AzureError;
use crate::secret::Secret;

/// The ARM API version whose bastionHosts shape we read.
const API_VERSION: &str = "2024-01-01";

/// Looks up a bastion host through ARM.
pub async fn lookup(
    http: &reqwest::Client,
    resource_manager: &str,
    resource_id: &str,
    token: &Secret,
) -> Result<BastionHost, AzureError> {
    let what = "looking up the bastion in Azure Resource Manager";
    let url = format!(
        "{}{resource_id}?api-version={API_VERSION}",
        resource_manager.trim_end_matches('/')
    );
    let host: ArmBastion = arm_list::get(http, &url, token, what, MAX_RESPONSE_BODY).await?;
    let (subscription, resource_group, _) = crate::config::parse_bastion_resource_id(resource_id)
        .ok_or_else(|| {
        AzureError::Precondition(format!("{resource_id:?} is not a bastion host resource id"))
    })?;
    let sku = host.sku_name();
    let dns_name = host
        .properties
        .dns_name
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            AzureError::Precondition(format!(
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
/// A lookup this old is looked up again in the background when a connection
/// uses it, and served meanwhile: a bastion in use never makes a connection
/// wait for ARM (one round trip, three on a connection that went cold). The
/// minute left of `LOOKUP_TTL` is the refresh's time to finish.
const REFRESH_AFTER: Duration = Duration::from_secs(4 * 60);

/// One configured bastion, what ARM said about it, and its session budget.
pub struct BastionEntry {
    pub name: String,
    pub settings: BastionSettings,
    state: Arc<Mutex<EntryState>>,
    /// Single-flight: concurrent first connections share one ARM lookup.
    resolving: Arc<tokio::sync::Mutex<()>>,
    /// A background refresh is under way (at most one).
    refreshing: Arc<AtomicBool>,
    /// The background refreshes; each ends with its ARM request (bounded by
    /// the HTTPS client's request timeout).
    refreshes: TaskTracker,
    /// `max_sessions` and the connections waiting for one.
    slots: SessionSlots,
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
            state: Arc::default(),
            resolving: Arc::default(),
            refreshing: Arc::default(),
            refreshes: TaskTracker::new(),
            slots: SessionSlots::new(settings),
        }
    }

    pub fn resource_id(&self) -> &str {
        &self.settings.resource_id
    }

    /// Waits (in order, until `deadline`) for room for one more live
    /// session; turned away at once when `max_waiting` connections wait already.
    pub async fn session_slot(
        &self,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, AzureError> {
        self.slots.acquire(&self.name, deadline).await
    }

    /// Sessions of this bastion in use (or being deleted) now.
    pub fn sessions_in_use(&self) -> u32 {
        self.slots.in_use()
    }

    /// Connections turned away for want of a place in the waiting line.
    pub fn turned_away(&self) -> u64 {
        self.slots.turned_away()
    }

    pub fn snapshot(&self) -> EntryState {
        self.lock().clone()
    }

    /// The cached host while it is fresh (refreshed behind the caller's
    /// back once it is [`REFRESH_AFTER`] old), else a new ARM lookup.
    pub async fn resolve(
        &self,
        http: &reqwest::Client,
        resource_manager: &str,
        token: &Secret,
    ) -> Result<Arc<BastionHost>, AzureError> {
        if let Some((host, age)) = self.cached() {
            if age >= REFRESH_AFTER {
                self.refresh_behind(http, resource_manager, token);
            }
            return Ok(host);
        }
        let _resolving = self.resolving.lock().await;
        if let Some((host, _)) = self.cached() {
            return Ok(host);
        }
        match lookup(http, resource_manager, self.resource_id(), token).await {
            Ok(host) => Ok(store(&self.state, &self.name, host)),
            Err(error) => {
                self.lock().last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// The cached host and its age, while younger than [`LOOKUP_TTL`].
    fn cached(&self) -> Option<(Arc<BastionHost>, Duration)> {
        let state = self.lock();
        // A clock that went backwards makes `elapsed` fail: look up again.
        let age = state.resolved_at?.elapsed().ok()?;
        let host = state.host.clone()?;
        (age < LOOKUP_TTL).then_some((host, age))
    }

    /// Looks the bastion up again on a task of its own, unless one already is.
    /// A failure leaves the cached host to serve until it expires.
    fn refresh_behind(&self, http: &reqwest::Client, resource_manager: &str, token: &Secret) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (state, resolving, refreshing) = (
            self.state.clone(),
            self.resolving.clone(),
            self.refreshing.clone(),
        );
        let (http, base, token) = (http.clone(), resource_manager.to_string(), token.clone());
        let (name, resource_id) = (self.name.clone(), self.resource_id().to_string());
        self.refreshes.spawn(async move {
            let _resolving = resolving.lock().await;
            match lookup(&http, &base, &resource_id, &token).await {
                Ok(host) => {
                    store(&state, &name, host);
                }
                Err(error) => {
                    tracing::info!(bastion = %name, %error, "background bastion lookup failed; the cached one serves until it expires");
                }
            }
            refreshing.store(false, Ordering::Release);
        });
    }

    /// Forgets the cached host after a failure, so the next connection asks
    /// ARM again (the bastion may have been reconfigured or redeployed).
    pub fn invalidate(&self, error: &AzureError) {
        let mut state = self.lock();
        state.host = None;
        state.last_error = Some(error.to_string());
    }

    /// Forgets the cached host (on reload: look every bastion up afresh).
    pub fn forget(&self) {
        self.lock().host = None;
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, EntryState> {
        self.state.lock()
    }
}

/// Records a successful lookup of bastion `name`.
fn store(state: &Mutex<EntryState>, name: &str, host: BastionHost) -> Arc<BastionHost> {
    tracing::info!(bastion = %name, dns_name = %host.dns_name, sku = %host.sku, "resolved bastion");
    let host = Arc::new(host);
    let mut state = state.lock();
    state.host = Some(host.clone());
    state.last_error = None;
    state.resolved_at = Some(SystemTime::now());
    host
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const ID: &str =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/bastionHosts/hub";

    /// A plain-HTTP stand-in for ARM that counts GETs and names `new.example`.
    async fn arm() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let gets = Arc::new(AtomicUsize::new(0));
        let counted = gets.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                counted.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"sku":{"name":"Standard"},"properties":{"dnsName":"new.example","enableTunneling":true,"enableIpConnect":true}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (base, gets)
    }

    /// An entry that looked `old.example` up `age` ago.
    fn entry_resolved(age: Duration) -> BastionEntry {
        let settings = BastionSettings {
            resource_id: ID.into(),
            max_sessions: 1,
            max_waiting: None,
            tenant_id: None,
        };
        let entry = BastionEntry::new("hub", &settings);
        let mut state = entry.lock();
        state.host = Some(Arc::new(BastionHost {
            dns_name: "old.example".into(),
            sku: "Standard".into(),
            tunneling: true,
            ip_connect: true,
            subscription: "s".into(),
            resource_group: "g".into(),
        }));
        state.resolved_at = Some(SystemTime::now() - age);
        drop(state);
        entry
    }

    #[tokio::test]
    async fn an_aging_lookup_is_refreshed_behind_the_connection_that_uses_it() {
        let (base, gets) = arm().await;
        let tls = crate::azure::http::tls_config(None).unwrap();
        let http = crate::azure::http::client(&tls).unwrap();
        let token = Secret::new("t");

        // Young: served, ARM left alone.
        let young = entry_resolved(Duration::from_secs(60));
        let host = young.resolve(&http, &base, &token).await.unwrap();
        assert_eq!(host.dns_name, "old.example");
        young.refreshes.close();
        young.refreshes.wait().await;
        assert_eq!(gets.load(Ordering::SeqCst), 0);

        // Past REFRESH_AFTER: still served at once, and looked up behind.
        let aging = entry_resolved(REFRESH_AFTER + Duration::from_secs(10));
        let host = aging.resolve(&http, &base, &token).await.unwrap();
        assert_eq!(host.dns_name, "old.example");
        aging.refreshes.close();
        aging.refreshes.wait().await;
        assert_eq!(gets.load(Ordering::SeqCst), 1);
        let (host, age) = aging.cached().unwrap();
        assert_eq!(host.dns_name, "new.example");
        assert!(age < REFRESH_AFTER);
    }
}

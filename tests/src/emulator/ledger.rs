//! What the emulator has seen: counters a test asserts on (tokens minted, sessions
//! created and deleted, bytes relayed, rejects by reason). Kept in a `watch` channel
//! so `Emulator::wait_for` wakes on every change instead of polling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A snapshot of the emulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub entra_tokens: u64,
    pub az_calls: u64,
    /// Fake-az token requests by what picked the tenant: "subscription",
    /// "tenant" or "default" (neither flag).
    #[serde(default)]
    pub az_asked_by: BTreeMap<String, u64>,
    /// Tokens issued (Entra and fake az) by tenant id.
    #[serde(default)]
    pub tokens_by_tenant: BTreeMap<String, u64>,
    pub arm_calls: u64,
    /// ARM VM listings answered, found or not (VM-name lookups); part of
    /// `arm_calls`, which also counts the ones refused for their token.
    #[serde(default)]
    pub arm_vm_lists: u64,
    /// Developer-SKU `POST /api/connection` answered with a data pod.
    #[serde(default)]
    pub pod_lookups: u64,
    /// ARM managed-cluster listings answered (cluster-name lookups).
    #[serde(default)]
    pub arm_cluster_lists: u64,
    /// Kubeconfigs handed out by the credential POSTs.
    #[serde(default)]
    pub arm_cluster_credentials: u64,
    /// Requests the managed clusters' API servers answered.
    #[serde(default)]
    pub kube_requests: u64,
    pub sessions_created: u64,
    pub live_sessions: u64,
    /// The most sessions ever live at once.
    pub peak_live_sessions: u64,
    pub open_websockets: u64,
    pub deletes: u64,
    /// Reason -> count, e.g. "expired_aztoken", "json_body", "bad_resource_id", "ws_token_reused".
    pub rejects: BTreeMap<String, u64>,
    /// Client -> target.
    pub bytes_up: u64,
    /// Target -> client.
    pub bytes_down: u64,
}

impl Ledger {
    /// How many times `reason` was rejected (0 if never).
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejects.get(reason).copied().unwrap_or(0)
    }
}

/// Shared, cheaply cloned writer side of the ledger.
#[derive(Clone)]
pub(crate) struct LedgerHandle(Arc<watch::Sender<Ledger>>);

impl LedgerHandle {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::Sender::new(Ledger::default())))
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Ledger)) {
        self.0.send_modify(f);
    }

    /// Counts a refusal and logs the decision (the reason never carries a secret).
    pub(crate) fn reject(&self, reason: &str) {
        tracing::info!(reason, "rejected");
        self.update(|l| *l.rejects.entry(reason.to_owned()).or_default() += 1);
    }

    pub(crate) fn snapshot(&self) -> Ledger {
        self.0.borrow().clone()
    }

    pub(crate) async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&Ledger) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Ledger> {
        let mut rx = self.0.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|l| pred(l))).await {
            Ok(Ok(ledger)) => Ok(ledger.clone()),
            Ok(Err(_)) => anyhow::bail!("emulator stopped while waiting for {what}"),
            Err(_) => anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}; ledger: {:?}",
                self.snapshot()
            ),
        }
    }
}

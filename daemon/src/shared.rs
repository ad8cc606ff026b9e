//! What the forwards, `Connect` streams and the control service share: the
//! current connector, the event feed, and the task ownership of the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::azure::vm_lookup::VmNames;
use crate::bastion::session::Sessions;
use crate::bastion::setup::Counter;
use crate::bastion::tunnel::Connector;
use crate::events::Events;

pub struct Shared {
    connector: RwLock<Arc<Connector>>,
    pub sessions: Arc<Sessions>,
    pub events: Events,
    /// Every listener, connection and stream task of the daemon.
    pub tasks: TaskTracker,
    /// Cancelled at shutdown; every forward's token is a child of it.
    pub shutdown: CancellationToken,
    /// Live `Connect` streams (forwards count their own connections).
    pub streams_active: AtomicU64,
    /// Tunnels set up again after a transient failure, daemon-wide.
    pub setup_retries: Counter,
    /// Resumes from suspend and network changes seen (`crate::wake`).
    pub resumes_seen: AtomicU64,
    pub network_changes_seen: AtomicU64,
    /// VM names → resource ids, cached across reloads (VMs do not move with settings).
    pub vm_names: VmNames,
    next_connection_id: AtomicU64,
    /// Problems found at start-up (an unreadable state file…) that stay in
    /// the status line, since no watcher was there to see their event.
    alerts: Mutex<Vec<String>>,
    pub started: Instant,
    /// One reload at a time: each reads the file when its turn comes, so
    /// the newest file is the one that stays.
    pub reloading: tokio::sync::Mutex<()>,
}

impl Shared {
    pub fn new(connector: Connector, sessions: Arc<Sessions>, events: Events) -> Shared {
        Shared {
            sessions,
            connector: RwLock::new(Arc::new(connector)),
            events,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            streams_active: AtomicU64::new(0),
            setup_retries: Counter::default(),
            resumes_seen: AtomicU64::new(0),
            network_changes_seen: AtomicU64::new(0),
            vm_names: VmNames::default(),
            next_connection_id: AtomicU64::new(1),
            alerts: Mutex::default(),
            started: Instant::now(),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The connector for the current settings; a connection keeps the one it
    /// started with even if the settings are reloaded meanwhile.
    pub fn connector(&self) -> Arc<Connector> {
        self.connector.read().clone()
    }

    pub fn set_connector(&self, connector: Connector) {
        *self.connector.write() = Arc::new(connector);
    }

    /// Logs `text`, sends it to watchers and keeps it in the status line.
    pub fn alert(&self, text: String) {
        tracing::error!("{text}");
        self.events.notice(text.clone());
        self.alerts.lock().push(text);
    }

    pub fn alerts(&self) -> Vec<String> {
        self.alerts.lock().clone()
    }

    /// A daemon-wide unique connection id, for logs and events.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

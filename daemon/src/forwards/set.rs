//! The set of forwards: add (validate, bind, persist), remove, list, and
//! restore at start-up; those declared in the settings file are reconciled
//! by [`declared`]. Changes are serialised and their saves (fsync,
//! rename) run on the blocking pool, never on a runtime worker under a lock.

mod declared;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use bastion_proto::v1::{self as proto, ForwardState};

use crate::forwards::destination::Destination;
use crate::forwards::forward::{self, Forward};
use crate::forwards::name::{default_name, default_socks_name, new_id, unique_name, validate_name};
use crate::forwards::source::Source;
use crate::forwards::spec::ForwardSpec;
use crate::forwards::store::Store;
use crate::forwards::unrestored::Unrestored;
use crate::shared::Shared;
use bastion_proto::time::now_ms;

/// Where forwards listen unless asked otherwise: never the network.
const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Why a forward request was refused; each maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

pub struct Forwards {
    shared: Arc<Shared>,
    store: Store,
    /// The settings file, named when a declared forward is to be changed there.
    config_file: PathBuf,
    /// In creation order. A std mutex: never held across an await.
    list: Mutex<Vec<Arc<Forward>>>,
    /// Saved forwards that could not be started; kept in the file.
    unrestored: Mutex<Vec<Unrestored>>,
    /// Held through each add or remove, save included, so concurrent changes
    /// reach the disk in order and none is lost.
    changes: tokio::sync::Mutex<()>,
}

impl Forwards {
    pub fn new(shared: Arc<Shared>, store: Store, config_file: PathBuf) -> Forwards {
        Forwards {
            shared,
            store,
            config_file,
            list: Mutex::default(),
            unrestored: Mutex::default(),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts the saved forwards; one whose port is taken starts in error and retries.
    pub fn restore(&self) -> anyhow::Result<()> {
        let loaded = self.store.load()?;
        if let Some(notice) = loaded.notice {
            self.shared.alert(notice);
        }
        let mut list = self.lock();
        for kept in loaded.kept {
            let unrestored = Unrestored::new(kept.entry, kept.reason);
            tracing::error!(forward = %unrestored.name(), error = %unrestored.reason, "cannot read saved forward; keeping it in the state file");
            self.unrestored.lock().push(unrestored);
        }
        for saved in &loaded.forwards {
            let spec = match ForwardSpec::from_saved(saved) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(forward = %saved.name, error = %e, "cannot start saved forward; keeping it in the state file");
                    self.unrestored
                        .lock()
                        .push(Unrestored::new(saved.to_entry(), e));
                    continue;
                }
            };
            if !spec.local.ip().is_loopback() && !spec.allow_other_users {
                tracing::warn!(forward = %spec.name, local = %spec.local, "listens beyond loopback without --allow-other-users: only your own local connections are served; re-add it with --allow-other-users to serve others");
            }
            let listener = forward::bind(spec.local);
            if let Err(e) = &listener {
                tracing::warn!(forward = %spec.name, error = %forward::bind_error(spec.local, e), "saved forward cannot listen yet");
            }
            list.push(Forward::start(spec, listener, &self.shared));
        }
        tracing::info!(count = list.len(), "restored saved forwards");
        Ok(())
    }

    /// Validates, binds (before answering: a taken port is an error and
    /// nothing is saved), starts and persists a new forward.
    pub async fn add(
        &self,
        request: proto::AddForwardRequest,
    ) -> Result<proto::Forward, ForwardError> {
        let _changing = self.changes.lock().await;
        let (listener, spec, saved) = self.prepare(request)?;
        self.persist(saved)
            .await
            .map_err(|e| ForwardError::Internal(format!("forward not added: {e:#}")))?;
        let forward = Forward::start(spec, Ok(listener), &self.shared);
        self.lock().push(forward.clone());
        let proto = forward.to_proto();
        self.shared.events.forward_changed(proto.clone());
        Ok(proto)
    }

    /// Validates and binds a new forward; returns it with the state file's
    /// new content.
    fn prepare(
        &self,
        request: proto::AddForwardRequest,
    ) -> Result<(tokio::net::TcpListener, ForwardSpec, Vec<Value>), ForwardError> {
        let target = Destination::of_request(&request).map_err(ForwardError::InvalidArgument)?;
        let may_pick = target.port_may_be_picked();
        let port = u16::try_from(request.local_port)
            .ok()
            .filter(|p| *p != 0 || may_pick)
            .ok_or_else(|| {
                ForwardError::InvalidArgument(format!(
                    "local port {} is not a number from 1 to 65535",
                    request.local_port
                ))
            })?;
        let bind_ip = match request.bind_address.trim() {
            "" => DEFAULT_BIND,
            text => text
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    ForwardError::InvalidArgument(format!(
                        "bind address {text:?} is not an IP address"
                    ))
                })?,
        };
        let local = SocketAddr::new(bind_ip, port);
        if !bind_ip.is_loopback() {
            if !request.allow_other_users {
                return Err(ForwardError::InvalidArgument(format!(
                    "{bind_ip} is reachable from beyond this machine, and the owner of a remote \
                     connection cannot be checked; add --allow-other-users to serve anyone who \
                     can reach {local}, or bind to 127.0.0.1"
                )));
            }
            tracing::warn!(%local, "forward listens beyond this machine: anyone who can reach it can use the tunnel");
        }
        let bastion = self.bastion_for(&request.bastion)?;
        let name = request.name.trim();
        if !name.is_empty() {
            validate_name(name).map_err(ForwardError::InvalidArgument)?;
        }
        let list = self.lock();
        let taken_by_unrestored = self.unrestored.lock().iter().any(|u| u.name() == name);
        if !name.is_empty() && taken_by_unrestored {
            return Err(ForwardError::AlreadyExists(format!(
                "a forward named {name:?} already exists (not started; see `bastionctl forward list`)"
            )));
        }
        if let Some(other) = list
            .iter()
            .find(|f| !name.is_empty() && f.spec.name == name)
        {
            return Err(ForwardError::AlreadyExists(format!(
                "a forward named {name:?} already exists (local port {})",
                other.spec.local.port()
            )));
        }
        if let Some(other) = list
            .iter()
            .find(|f| port != 0 && overlaps(f.spec.local, local))
        {
            return Err(ForwardError::AlreadyExists(format!(
                "local port {port} is already used by forward {:?} ({} → {})",
                other.spec.name, other.spec.local, other.spec.target
            )));
        }
        let listener = forward::bind(local).map_err(|e| {
            let message = forward::bind_error(local, &e);
            match e.kind() {
                std::io::ErrorKind::AddrInUse => ForwardError::AlreadyExists(message),
                std::io::ErrorKind::AddrNotAvailable => ForwardError::InvalidArgument(message),
                std::io::ErrorKind::PermissionDenied => ForwardError::InvalidArgument(message),
                _ => ForwardError::Internal(message),
            }
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| ForwardError::Internal(format!("cannot read {local}'s port: {e}")))?;
        let name = if name.is_empty() {
            let base = match &target {
                Destination::Fixed(target) => default_name(target),
                Destination::Socks5 => default_socks_name(port),
            };
            unique_name(&base, |n| list.iter().any(|f| f.spec.name == n))
        } else {
            name.to_string()
        };
        // A VM-name target was made an id before (control/names.rs); a
        // SOCKS5 listener looks its clients' VM names up in this group.
        let resource_group = Some(request.resource_group.trim())
            .filter(|rg| target.is_socks5() && !rg.is_empty())
            .map(str::to_owned);
        let spec = ForwardSpec {
            id: new_id(),
            name,
            bastion,
            target,
            local,
            created_at_ms: now_ms(),
            allow_other_users: request.allow_other_users,
            source: Source::Cli,
            resource_group,
            unknown: serde_json::Map::new(),
        };
        let mut saved = self.saved(&list);
        saved.push(spec.to_saved().to_entry());
        Ok((listener, spec, saved))
    }

    /// Removes the forward named by `selector` (name, id or local port).
    pub async fn remove(&self, selector: &str) -> Result<proto::Forward, ForwardError> {
        let selector = selector.trim();
        let _changing = self.changes.lock().await;
        let found = find(&self.lock(), selector);
        let index = match found {
            Ok(index) => index,
            Err(not_found) => return self.remove_unrestored(selector).await.ok_or(not_found)?,
        };
        let saved = {
            let list = self.lock();
            let spec = &list[index].spec;
            if spec.source == Source::Config {
                return Err(ForwardError::InvalidArgument(format!(
                    "forward {} is declared in {} as [forwards.{}]; remove it there and run \
                     `bastionctl reload`",
                    spec.name,
                    self.config_file.display(),
                    spec.name
                )));
            }
            let mut rest = list.to_vec();
            rest.remove(index);
            self.saved(&rest)
        };
        self.persist(saved)
            .await
            .map_err(|e| ForwardError::Internal(format!("forward not removed: {e:#}")))?;
        // Changes are serialised, so the index still names the same forward.
        let forward = self.lock().remove(index);
        forward.stop().await;
        tracing::info!(forward = %forward.spec.name, "removed forward");
        self.shared.events.forward_removed(forward.spec.id.clone());
        let mut proto = forward.to_proto();
        proto.state = ForwardState::Stopping.into();
        Ok(proto)
    }

    /// Removes a forward that was never started, if `selector` names one.
    async fn remove_unrestored(
        &self,
        selector: &str,
    ) -> Option<Result<proto::Forward, ForwardError>> {
        let (index, saved) = {
            let list = self.lock();
            let unrestored = self.unrestored.lock();
            let index = unrestored.iter().position(|u| u.matches(selector))?;
            let mut saved = self.saved_with(&list, &unrestored);
            // The saved forwards come first, then the unrestored ones.
            saved.remove(saved.len() - unrestored.len() + index);
            (index, saved)
        };
        if let Err(e) = self.persist(saved).await {
            return Some(Err(ForwardError::Internal(format!(
                "forward not removed: {e:#}"
            ))));
        }
        let removed = self.unrestored.lock().remove(index);
        self.shared.events.forward_removed(removed.id().to_owned());
        let mut proto = removed.to_proto();
        proto.state = ForwardState::Stopping.into();
        Some(Ok(proto))
    }

    pub fn list(&self) -> Vec<Arc<Forward>> {
        self.lock().clone()
    }

    /// Every forward as `list` shows it, those not started included.
    pub fn protos(&self) -> Vec<proto::Forward> {
        let mut protos: Vec<_> = self.list().iter().map(|f| f.to_proto()).collect();
        protos.extend(self.unrestored.lock().iter().map(Unrestored::to_proto));
        protos
    }

    /// Saved forwards that could not be started.
    pub fn unrestored(&self) -> usize {
        self.unrestored.lock().len()
    }

    /// What the state file holds for `list` plus the unrestored forwards:
    /// the forwards added with bastionctl (declared ones live in the settings).
    fn saved(&self, list: &[Arc<Forward>]) -> Vec<Value> {
        self.saved_with(list, &self.unrestored.lock())
    }

    fn saved_with(&self, list: &[Arc<Forward>], unrestored: &[Unrestored]) -> Vec<Value> {
        list.iter()
            .filter(|f| f.spec.source == Source::Cli)
            .map(|f| f.spec.to_saved().to_entry())
            .chain(unrestored.iter().map(|u| u.entry.clone()))
            .collect()
    }

    /// Writes `saved` on the blocking pool: fsync and rename may take long
    /// on a busy disk, and must not stall the runtime's workers.
    async fn persist(&self, saved: Vec<Value>) -> anyhow::Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.save(&saved))
            .await
            .map_err(|e| anyhow::anyhow!("the state save did not finish: {e}"))?
    }

    /// Stops every forward (shutdown); the list and the state file stay as they are.
    pub async fn stop_all(&self) {
        for forward in self.list() {
            forward.stop().await;
        }
    }

    /// Saves the current forwards (at shutdown, in case an earlier save failed).
    pub async fn save(&self) -> anyhow::Result<()> {
        let _changing = self.changes.lock().await;
        let saved = self.saved(&self.lock());
        self.persist(saved).await
    }

    /// The bastion a request names, or the default one.
    pub fn bastion_for(&self, requested: &str) -> Result<String, ForwardError> {
        let connector = self.shared.connector();
        let settings = connector.settings();
        let requested = requested.trim();
        if settings.bastions.is_empty() {
            return Err(ForwardError::NotFound(
                "no bastions are configured; add one with `bastionctl bastion add NAME RESOURCE_ID` \
                 (or under [bastions] in config.toml; `bastionctl bastion discover` lists those you can use)"
                .into(),
            ));
        }
        if requested.is_empty() {
            return settings.default_bastion().map(str::to_string).ok_or_else(|| {
                ForwardError::InvalidArgument(format!(
                    "several bastions are configured and no `default_bastion`; pick one with --bastion ({})",
                    settings.bastion_names()
                ))
            });
        }
        if settings.bastions.contains_key(requested) {
            Ok(requested.to_string())
        } else {
            Err(ForwardError::NotFound(format!(
                "no bastion named {requested:?} (known: {})",
                settings.bastion_names()
            )))
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<Arc<Forward>>> {
        self.list.lock()
    }
}

/// Where the requested forward's connections go: its target, or each
/// client's choice for a SOCKS5 listener.
fn find(list: &[Arc<Forward>], selector: &str) -> Result<usize, ForwardError> {
    if let Some(i) = list
        .iter()
        .position(|f| f.spec.name == selector || f.spec.id == selector)
    {
        return Ok(i);
    }
    if let Ok(port) = selector.parse::<u16>() {
        let matches: Vec<usize> = (0..list.len())
            .filter(|i| list[*i].spec.local.port() == port)
            .collect();
        match matches.as_slice() {
            [i] => return Ok(*i),
            [] => {}
            _ => {
                return Err(ForwardError::InvalidArgument(format!(
                    "several forwards listen on port {port}; remove one by name"
                )));
            }
        }
    }
    Err(ForwardError::NotFound(format!(
        "no forward with name, id or local port {selector:?}"
    )))
}

/// Two listeners conflict if they share a port and either is a wildcard or both are the same address.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_listeners() {
        let a: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        assert!(overlaps(a, "0.0.0.0:2222".parse().unwrap()));
        assert!(!overlaps(a, "127.0.0.2:2222".parse().unwrap()));
        assert!(!overlaps(a, "127.0.0.1:2223".parse().unwrap()));
    }
}

//! The set of forwards: add (validate, bind, persist), remove, list, and
//! restore at start-up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bastion_proto::v1::{self as proto, ForwardState};

use crate::forward::{self, Forward, ForwardSpec};
use crate::shared::Shared;
use crate::store::Store;
use bastion_proto::target::{Target, TargetHost};
use bastion_proto::time::now_ms;

/// Where forwards listen unless asked otherwise: never the network.
const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Names are typed on command lines and used in ssh configs.
const MAX_NAME_LEN: usize = 64;

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
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ForwardError> for tonic::Status {
    fn from(e: ForwardError) -> tonic::Status {
        let code = match &e {
            ForwardError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            ForwardError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            ForwardError::NotFound(_) => tonic::Code::NotFound,
            ForwardError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            ForwardError::Internal(_) => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

pub struct Forwards {
    shared: Arc<Shared>,
    store: Store,
    /// In creation order. A std mutex: never held across an await.
    list: Mutex<Vec<Arc<Forward>>>,
}

impl Forwards {
    pub fn new(shared: Arc<Shared>, store: Store) -> Forwards {
        Forwards {
            shared,
            store,
            list: Mutex::default(),
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
        for saved in &loaded.forwards {
            let spec = match ForwardSpec::from_saved(saved) {
                Ok(spec) => spec,
                Err(e) => {
                    self.shared
                        .alert(format!("skipping saved forward {:?}: {e}", saved.name));
                    continue;
                }
            };
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
    pub fn add(&self, request: proto::AddForwardRequest) -> Result<proto::Forward, ForwardError> {
        let target = request
            .target
            .ok_or_else(|| ForwardError::InvalidArgument("a target is required".into()))?;
        let target = Target::from_parts(&target.host, target.port)
            .map_err(|e| ForwardError::InvalidArgument(e.to_string()))?;
        let port = u16::try_from(request.local_port)
            .ok()
            .filter(|p| *p != 0)
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
            tracing::warn!(%local, "forward listens beyond this machine: anyone who can reach it can use the tunnel");
        }
        let bastion = self.bastion_for(&request.bastion)?;
        let name = request.name.trim();
        if !name.is_empty() {
            validate_name(name)?;
        }
        let mut list = self.lock();
        if let Some(other) = list
            .iter()
            .find(|f| !name.is_empty() && f.spec.name == name)
        {
            return Err(ForwardError::AlreadyExists(format!(
                "a forward named {name:?} already exists (local port {})",
                other.spec.local.port()
            )));
        }
        if let Some(other) = list.iter().find(|f| overlaps(f.spec.local, local)) {
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
                std::io::ErrorKind::PermissionDenied => ForwardError::FailedPrecondition(message),
                _ => ForwardError::Internal(message),
            }
        })?;
        let name = if name.is_empty() {
            unique_name(&default_name(&target), &list)
        } else {
            name.to_string()
        };
        let spec = ForwardSpec {
            id: new_id(),
            name,
            bastion,
            target,
            local,
            created_at_ms: now_ms(),
        };
        let mut saved: Vec<_> = list.iter().map(|f| f.spec.to_saved()).collect();
        saved.push(spec.to_saved());
        self.store
            .save(&saved)
            .map_err(|e| ForwardError::Internal(format!("forward not added: {e:#}")))?;
        let forward = Forward::start(spec, Ok(listener), &self.shared);
        list.push(forward.clone());
        drop(list);
        let proto = forward.to_proto();
        self.shared.events.forward_changed(proto.clone());
        Ok(proto)
    }

    /// Removes the forward named by `selector` (name, id or local port).
    pub async fn remove(&self, selector: &str) -> Result<proto::Forward, ForwardError> {
        let selector = selector.trim();
        let forward = {
            let mut list = self.lock();
            let index = find(&list, selector)?;
            let saved: Vec<_> = list
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, f)| f.spec.to_saved())
                .collect();
            self.store
                .save(&saved)
                .map_err(|e| ForwardError::Internal(format!("forward not removed: {e:#}")))?;
            list.remove(index)
        };
        forward.stop().await;
        tracing::info!(forward = %forward.spec.name, "removed forward");
        self.shared.events.forward_removed(forward.spec.id.clone());
        let mut proto = forward.to_proto();
        proto.state = ForwardState::Stopping.into();
        Ok(proto)
    }

    pub fn list(&self) -> Vec<Arc<Forward>> {
        self.lock().clone()
    }

    /// Stops every forward (shutdown); the list and the state file stay as they are.
    pub async fn stop_all(&self) {
        for forward in self.list() {
            forward.stop().await;
        }
    }

    /// Saves the current forwards (at shutdown, in case an earlier save failed).
    pub fn save(&self) -> anyhow::Result<()> {
        let saved: Vec<_> = self.lock().iter().map(|f| f.spec.to_saved()).collect();
        self.store.save(&saved)
    }

    /// The bastion a request names, or the default one.
    pub fn bastion_for(&self, requested: &str) -> Result<String, ForwardError> {
        let connector = self.shared.connector();
        let settings = &connector.settings;
        let requested = requested.trim();
        if settings.bastions.is_empty() {
            return Err(ForwardError::FailedPrecondition(
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Forward>>> {
        crate::lock::lock(&self.list)
    }
}

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

fn validate_name(name: &str) -> Result<(), ForwardError> {
    let ok = name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        && !name.chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ForwardError::InvalidArgument(format!(
            "forward name {name:?} must be up to {MAX_NAME_LEN} letters, digits, '-', '_', '.', ':' and not all digits"
        )))
    }
}

/// "10.1.0.4-22", "fd00--4-22", "vm1-22".
fn default_name(target: &Target) -> String {
    let host = match &target.host {
        TargetHost::Ip(IpAddr::V6(ip)) => ip.to_string().replace(':', "-"),
        TargetHost::Ip(ip) => ip.to_string(),
        TargetHost::Vm(id) => id.rsplit('/').next().unwrap_or("vm").to_string(),
        TargetHost::Name(name) => name.clone(),
    };
    format!("{host}-{}", target.port)
}

fn unique_name(base: &str, list: &[Arc<Forward>]) -> String {
    let taken = |name: &str| list.iter().any(|f| f.spec.name == name);
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .unwrap_or_else(new_id)
}

/// A short random id; forwards are few, so 32 bits never collide in practice.
fn new_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(
            default_name(&Target::parse("10.1.0.4:22").unwrap()),
            "10.1.0.4-22"
        );
        assert_eq!(
            default_name(&Target::parse("[fd00::4]:22").unwrap()),
            "fd00--4-22"
        );
        assert_eq!(
            default_name(
                &Target::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1:22")
                    .unwrap()
            ),
            "vm1-22"
        );
    }

    #[test]
    fn names_and_overlaps() {
        assert!(validate_name("dev-ssh").is_ok());
        assert!(validate_name("2222").is_err());
        assert!(validate_name("has space").is_err());
        let a: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        assert!(overlaps(a, "0.0.0.0:2222".parse().unwrap()));
        assert!(!overlaps(a, "127.0.0.2:2222".parse().unwrap()));
        assert!(!overlaps(a, "127.0.0.1:2223".parse().unwrap()));
    }
}

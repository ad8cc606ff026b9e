//! What a forward is, apart from its listener and counters: the validated
//! description that the state file keeps (for forwards added with
//! bastionctl) or the settings file declares.

use std::net::SocketAddr;

use crate::forwards::destination::Destination;
use crate::forwards::source::Source;
use crate::forwards::store::SavedForward;

/// The validated, persistent description of a forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    pub id: String,
    pub name: String,
    pub bastion: String,
    pub target: Destination,
    pub local: SocketAddr,
    pub created_at_ms: i64,
    /// Serve every local user, not only the daemon's own.
    pub allow_other_users: bool,
    pub source: Source,
    /// Where a VM name is searched: a declared forward's target (declared
    /// forwards keep the name and look it up per connection, through the
    /// 5-minute cache) or what a SOCKS5 client asks for.
    pub resource_group: Option<String>,
    /// Saved fields this version does not know, written back as they were.
    pub unknown: serde_json::Map<String, serde_json::Value>,
}

impl ForwardSpec {
    pub fn to_saved(&self) -> SavedForward {
        SavedForward {
            id: self.id.clone(),
            name: self.name.clone(),
            bastion: self.bastion.clone(),
            target: self.target.to_string(),
            resource_group: self.resource_group.clone(),
            bind_address: self.local.ip().to_string(),
            local_port: self.local.port(),
            created_at_ms: self.created_at_ms,
            allow_other_users: self.allow_other_users,
            unknown: self.unknown.clone(),
        }
    }

    pub fn from_saved(saved: &SavedForward) -> Result<ForwardSpec, String> {
        let target = Destination::parse(&saved.target).map_err(|e| e.to_string())?;
        let ip = saved
            .bind_address
            .parse()
            .map_err(|_| format!("bad bind address {:?}", saved.bind_address))?;
        Ok(ForwardSpec {
            id: saved.id.clone(),
            name: saved.name.clone(),
            bastion: saved.bastion.clone(),
            target,
            local: SocketAddr::new(ip, saved.local_port),
            created_at_ms: saved.created_at_ms,
            allow_other_users: saved.allow_other_users,
            source: Source::Cli,
            resource_group: saved.resource_group.clone(),
            unknown: saved.unknown.clone(),
        })
    }

    /// Whether `other` listens and leads to the same place the same way
    /// (what a declared entry's change is judged by; id and age aside).
    pub fn same_route(&self, other: &ForwardSpec) -> bool {
        (
            &self.bastion,
            &self.target,
            self.local,
            self.allow_other_users,
            &self.resource_group,
        ) == (
            &other.bastion,
            &other.target,
            other.local,
            other.allow_other_users,
            &other.resource_group,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;

    #[test]
    fn a_socks5_entry_is_written_back_as_it_was_read() {
        let entry = serde_json::json!({"id": "0000000c", "name": "proxy", "bastion": "hub",
            "target": "socks5", "resource_group": "rg-app", "bind_address": "127.0.0.1",
            "local_port": 1080, "created_at_ms": 3, "labels": {"team": "db"}});
        let saved = SavedForward::deserialize(&entry).unwrap();
        let spec = ForwardSpec::from_saved(&saved).unwrap();
        assert_eq!(spec.target, Destination::Socks5);
        assert_eq!(spec.resource_group.as_deref(), Some("rg-app"));
        assert_eq!(spec.to_saved().to_entry(), entry);
    }
}

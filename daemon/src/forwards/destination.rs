//! Where a forward's connections go: one fixed target, or wherever each
//! SOCKS5 client asks; and the proto form of a target, as `list` shows it.

use bastion_proto::target::{Target, TargetHost};
use bastion_proto::v1 as proto;

use crate::forwards::socks::SOCKS5_TARGET;

/// Where a forward's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Always this target.
    Fixed(Target),
    /// Where each client asks through SOCKS5; VM names are looked up in
    /// `resource_group` when there is one.
    Socks5 { resource_group: Option<String> },
}

impl Destination {
    /// From the state file's `target` ("socks5" or a target as typed) and
    /// `resource_group`.
    pub fn from_saved(target: &str, resource_group: Option<&str>) -> Result<Destination, String> {
        if target == SOCKS5_TARGET {
            return Ok(Destination::Socks5 {
                resource_group: resource_group.map(str::to_string),
            });
        }
        Target::parse(target)
            .map(Destination::Fixed)
            .map_err(|e| e.to_string())
    }

    /// Where a SOCKS5 listener looks VM names up, if it is one and has one.
    pub fn resource_group(&self) -> Option<&str> {
        match self {
            Destination::Socks5 { resource_group } => resource_group.as_deref(),
            Destination::Fixed(_) => None,
        }
    }

    /// As `forward list` shows it: the target with host "socks5" and port 0
    /// for a SOCKS5 listener.
    pub fn to_proto(&self) -> proto::Target {
        match self {
            Destination::Fixed(target) => target_proto(target),
            Destination::Socks5 { .. } => proto::Target {
                host: SOCKS5_TARGET.into(),
                port: 0,
            },
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Fixed(target) => target.fmt(f),
            Destination::Socks5 { .. } => f.write_str(SOCKS5_TARGET),
        }
    }
}

/// The proto form of a target.
pub fn target_proto(target: &Target) -> proto::Target {
    proto::Target {
        host: match &target.host {
            TargetHost::Ip(ip) => ip.to_string(),
            TargetHost::Vm(id) | TargetHost::Name(id) => id.clone(),
        },
        port: u32::from(target.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_forms_read_back() {
        let socks = Destination::from_saved(SOCKS5_TARGET, Some("rg-app")).unwrap();
        assert_eq!(socks.to_string(), "socks5");
        assert_eq!(socks.resource_group(), Some("rg-app"));
        assert_eq!(socks.to_proto().port, 0);
        let fixed = Destination::from_saved("[fd00::4]:22", None).unwrap();
        assert_eq!(fixed.to_string(), "[fd00::4]:22");
        assert_eq!(fixed.resource_group(), None);
        assert!(Destination::from_saved("socks5:0", None).is_err());
    }
}

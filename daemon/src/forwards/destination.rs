//! Where a forward's connections go: one fixed target, or wherever each
//! SOCKS5 client asks; as the state file and the settings file spell it
//! (`10.1.0.4:22`, or `socks5`) and as `list` shows it.

use bastion_proto::target::{SOCKS5_TARGET, Target, TargetError, TargetHost};
use bastion_proto::v1 as proto;

/// Where a forward's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Always this target.
    Fixed(Target),
    /// Where each client asks through SOCKS5 (VM names are looked up in the
    /// forward's resource group, as a declared VM-name target is).
    Socks5,
}

impl Destination {
    /// `socks5`, or a target as users type it.
    pub fn parse(text: &str) -> Result<Destination, TargetError> {
        if text == SOCKS5_TARGET {
            return Ok(Destination::Socks5);
        }
        Target::parse(text).map(Destination::Fixed)
    }

    /// What an `AddForward` asks for: a SOCKS5 listener (no target), or its target.
    pub fn of_request(request: &proto::AddForwardRequest) -> Result<Destination, String> {
        if request.socks5 {
            return match request.target {
                Some(_) => Err("a SOCKS5 listener takes no target: its clients name theirs".into()),
                None => Ok(Destination::Socks5),
            };
        }
        let target = request.target.as_ref().ok_or("a target is required")?;
        Target::from_parts(&target.host, target.port)
            .map(Destination::Fixed)
            .map_err(|e| e.to_string())
    }

    pub fn is_socks5(&self) -> bool {
        matches!(self, Destination::Socks5)
    }

    /// Whether the system may pick the local port: only for a managed
    /// cluster, whose kubeconfig `aks add` writes with the port picked.
    pub fn port_may_be_picked(&self) -> bool {
        matches!(self, Destination::Fixed(t) if matches!(t.host, TargetHost::Cluster(_)))
    }

    /// As `forward list` shows it: host "socks5" and port 0 for a SOCKS5 listener.
    pub fn to_proto(&self) -> proto::Target {
        match self {
            Destination::Fixed(target) => target_proto(target),
            Destination::Socks5 => proto::Target {
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
            Destination::Socks5 => f.write_str(SOCKS5_TARGET),
        }
    }
}

/// The proto form of a target.
pub fn target_proto(target: &Target) -> proto::Target {
    proto::Target {
        host: match &target.host {
            TargetHost::Ip(ip) => ip.to_string(),
            TargetHost::Vm(id) | TargetHost::Name(id) | TargetHost::Cluster(id) => id.clone(),
        },
        port: u32::from(target.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_forms_read_back() {
        let socks = Destination::parse(SOCKS5_TARGET).unwrap();
        assert!(socks.is_socks5());
        assert_eq!(socks.to_string(), "socks5");
        assert_eq!(socks.to_proto().port, 0);
        let fixed = Destination::parse("[fd00::4]:22").unwrap();
        assert_eq!(fixed.to_string(), "[fd00::4]:22");
        assert!(!fixed.is_socks5() && !fixed.port_may_be_picked());
        let cluster = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1:443";
        assert!(Destination::parse(cluster).unwrap().port_may_be_picked());
        assert!(Destination::parse("socks5:0").is_err());
        assert!(
            Target::parse(SOCKS5_TARGET).is_err(),
            "older daemons keep it unstarted"
        );
    }
}

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

    pub fn is_socks5(&self) -> bool {
        matches!(self, Destination::Socks5)
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
            TargetHost::Vm(id) | TargetHost::Name(id) => id.clone(),
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
        assert!(!fixed.is_socks5());
        assert!(Destination::parse("socks5:0").is_err());
        assert!(
            Target::parse(SOCKS5_TARGET).is_err(),
            "older daemons keep it unstarted"
        );
    }
}

//! Targets behind a Bastion: an IP address in the VNet, or a VM by its ARM
//! resource id, plus a port. Parsed from what users type ("10.1.0.4:22",
//! "[fd00::4]:22", "/subscriptions/…/virtualMachines/vm1:22").

use std::fmt;
use std::net::IpAddr;

/// Why a target was refused; the message says what shape is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target {0:?} has no port; expected HOST:PORT such as 10.1.0.4:22 or [fd00::4]:22")]
    MissingPort(String),
    #[error("target port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    #[error(
        "target host {0:?} is neither an IP address nor a VM resource id \
         (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>)"
    )]
    BadHost(String),
}

/// The host part of a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// Reached through the Bastion's IP-based connection.
    Ip(IpAddr),
    /// A VM's ARM resource id, as typed (ARM ids are case-insensitive).
    Vm(String),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Ip(ip) => ip.fmt(f),
            TargetHost::Vm(id) => f.write_str(id),
        }
    }
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: TargetHost,
    pub port: u16,
}

impl Target {
    /// Parses "HOST:PORT" as users type it.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            // "[v6]:port"
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| TargetError::MissingPort(s.to_string()))?;
            (host, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| TargetError::MissingPort(s.to_string()))?;
            if host.contains(':') && !host.starts_with('/') {
                // A bare IPv6 address: the last colon may be part of it.
                return Err(TargetError::MissingPort(s.to_string()));
            }
            (host, port)
        };
        let port = parse_port(port)?;
        Ok(Target {
            host: parse_host(host)?,
            port,
        })
    }

    /// Validates the parts of a target received over the control API.
    pub fn from_parts(host: &str, port: u32) -> Result<Target, TargetError> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| TargetError::BadPort(port.to_string()))?;
        let host = host.trim();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(Target {
            host: parse_host(host)?,
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            TargetHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

/// Parses a target into (host, port), host without IPv6 brackets.
pub fn parse_target(s: &str) -> Result<(String, u16), TargetError> {
    let target = Target::parse(s)?;
    Ok((target.host.to_string(), target.port))
}

fn parse_port(s: &str) -> Result<u16, TargetError> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| TargetError::BadPort(s.to_string()))
}

fn parse_host(s: &str) -> Result<TargetHost, TargetError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(TargetHost::Ip(ip));
    }
    if is_vm_resource_id(s) {
        return Ok(TargetHost::Vm(s.to_string()));
    }
    Err(TargetError::BadHost(s.to_string()))
}

/// `/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/NAME`
fn is_vm_resource_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let expected = [
        Some(""),
        Some("subscriptions"),
        None,
        Some("resourceGroups"),
        None,
        Some("providers"),
        Some("Microsoft.Compute"),
        Some("virtualMachines"),
        None,
    ];
    parts.len() == expected.len()
        && parts.iter().zip(expected).all(|(part, want)| match want {
            Some(want) => part.eq_ignore_ascii_case(want),
            None => !part.is_empty(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str =
        "/subscriptions/0000/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1";

    #[test]
    fn parses_ipv4_ipv6_and_vm() {
        assert_eq!(
            parse_target("10.1.0.4:22").unwrap(),
            ("10.1.0.4".into(), 22)
        );
        assert_eq!(
            parse_target("[fd00::4]:22").unwrap(),
            ("fd00::4".into(), 22)
        );
        assert_eq!(
            parse_target(&format!("{VM}:3389")).unwrap(),
            (VM.into(), 3389)
        );
    }

    #[test]
    fn refuses_bad_targets() {
        assert!(matches!(
            parse_target("10.1.0.4"),
            Err(TargetError::MissingPort(_))
        ));
        assert!(matches!(
            parse_target("fd00::4:22"),
            Err(TargetError::MissingPort(_))
        ));
        assert!(matches!(
            parse_target("10.1.0.4:0"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(
            parse_target("10.1.0.4:70000"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(
            parse_target("myvm:22"),
            Err(TargetError::BadHost(_))
        ));
        assert!(matches!(
            parse_target(
                "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/bastionHosts/b:22"
            ),
            Err(TargetError::BadHost(_))
        ));
    }

    #[test]
    fn from_parts_and_display_round_trip() {
        let t = Target::from_parts("fd00::4", 22).unwrap();
        assert_eq!(t.to_string(), "[fd00::4]:22");
        assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
        assert!(Target::from_parts("10.1.0.4", 65536).is_err());
        assert!(Target::from_parts("10.1.0.4", 0).is_err());
    }
}

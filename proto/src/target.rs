//! Targets behind a Bastion: an IP address in the VNet, a VM (or a scale-set
//! instance) by its ARM resource id, a VM by its name, or a managed (AKS)
//! cluster by its ARM resource id, plus a port. Parsed from what users type
//! ("10.1.0.4:22", "[fd00::4]:22", "/subscriptions/…/virtualMachines/vm1:22",
//! "myvm:22", "/subscriptions/…/managedClusters/aks1:443").

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
        "target host {0:?} is neither an IP address, a resource id ({shapes}) \
         nor a VM name (1 to {MAX_VM_NAME_LEN} letters, digits, '-', '_', '.')",
        shapes = accepted_shapes()
    )]
    BadHost(String),
    #[error(
        "target {0:?} is not a resource id a Bastion tunnel takes; accepted shapes: {shapes}",
        shapes = accepted_shapes()
    )]
    BadResourceId(String),
}

/// What a resource id a Bastion tunnel takes names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResourceKind {
    /// A VM or a scale-set instance.
    Vm,
    /// A managed (AKS) cluster: the Bastion reaches its API server.
    Cluster,
}

/// What follows `/providers/` in the resource ids a Bastion tunnel takes as
/// targets (`az network bastion tunnel --target-resource-id`): VMs,
/// scale-set instances and managed clusters (`az aks bastion`). `*` is any
/// non-empty segment.
const RESOURCE_SHAPES: [(ResourceKind, &[&str]); 3] = [
    (
        ResourceKind::Vm,
        &["Microsoft.Compute", "virtualMachines", "*"],
    ),
    (
        ResourceKind::Vm,
        &[
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            "*",
            "virtualMachines",
            "*",
        ],
    ),
    (
        ResourceKind::Cluster,
        &["Microsoft.ContainerService", "managedClusters", "*"],
    ),
];

/// The accepted resource-id shapes, for messages.
fn accepted_shapes() -> String {
    RESOURCE_SHAPES
        .iter()
        .map(|(_, shape)| {
            let mut names = ["<name>", "<instance>"].into_iter();
            let tail: Vec<&str> = shape
                .iter()
                .map(|s| match *s {
                    "*" => names.next().unwrap_or("<name>"),
                    s => s,
                })
                .collect();
            format!(
                "/subscriptions/<sub>/resourceGroups/<rg>/providers/{}",
                tail.join("/")
            )
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The host part of a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// Reached through the Bastion's IP-based connection.
    Ip(IpAddr),
    /// A VM's (or a scale-set instance's) ARM resource id, as typed (ARM ids
    /// are case-insensitive).
    Vm(String),
    /// A VM's name, looked up through ARM in the bastion's subscription (case-insensitive).
    Name(String),
    /// A managed (AKS) cluster's ARM resource id: the Bastion reaches its API server.
    Cluster(String),
}

impl TargetHost {
    /// What kind of target this is, as `forward list` shows it: "ip", "vm",
    /// "vm-name" or "aks".
    pub fn kind(&self) -> &'static str {
        match self {
            TargetHost::Ip(_) => "ip",
            TargetHost::Vm(_) => "vm",
            TargetHost::Name(_) => "vm-name",
            TargetHost::Cluster(_) => "aks",
        }
    }
}

/// Longest Azure VM name (Linux VMs allow 64; Windows fewer, still within it).
pub const MAX_VM_NAME_LEN: usize = 64;

/// What a SOCKS5 listener has for a target, whose clients name theirs: so
/// it is written in the state and settings files, and shown (host
/// "socks5", port 0) by `forward list`. Not a target (no port), so nothing
/// that predates SOCKS5 listeners can misread it as one.
pub const SOCKS5_TARGET: &str = "socks5";

/// Whether `s` is shaped like an Azure VM name: 1–64 letters, digits, `-`, `_`, `.`.
pub fn is_vm_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VM_NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Ip(ip) => ip.fmt(f),
            TargetHost::Vm(id) | TargetHost::Name(id) | TargetHost::Cluster(id) => f.write_str(id),
        }
    }
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: TargetHost,
    pub port: u16,
}

/// The ports Azure documents IP-based connection for (native client): SSH and RDP.
pub const DOCUMENTED_IP_PORTS: [u16; 2] = [22, 3389];

impl Target {
    /// For an IP target on a port Azure does not document for IP-based
    /// connection, the one-line caveat to show; `None` otherwise.
    pub fn ip_port_caveat(&self) -> Option<String> {
        if !matches!(self.host, TargetHost::Ip(_)) || DOCUMENTED_IP_PORTS.contains(&self.port) {
            return None;
        }
        Some(format!(
            "Azure documents IP-based connection for SSH (22) and RDP (3389) only, so port {} may be refused; \
             if it is, target the VM by name instead (VMNAME:{})",
            self.port, self.port
        ))
    }

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
    if s.starts_with('/') {
        return match resource_kind(s) {
            Some(ResourceKind::Vm) => Ok(TargetHost::Vm(s.to_string())),
            Some(ResourceKind::Cluster) => Ok(TargetHost::Cluster(s.to_string())),
            None => Err(TargetError::BadResourceId(s.to_string())),
        };
    }
    // Not an address: a dotted all-digit host is a mistyped IP, not a name.
    let looks_numeric = s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if is_vm_name(s) && !looks_numeric {
        return Ok(TargetHost::Name(s.to_string()));
    }
    Err(TargetError::BadHost(s.to_string()))
}

/// What `s` names when it is `/subscriptions/S/resourceGroups/RG/providers/`
/// followed by one of [`RESOURCE_SHAPES`]; `None` for any other shape.
fn resource_kind(s: &str) -> Option<ResourceKind> {
    let parts: Vec<&str> = s.split('/').collect();
    let (scope, tail) = parts.split_at_checked(6)?;
    let fits = |part: &str, want: &str| match want {
        "*" => !part.is_empty(),
        want => part.eq_ignore_ascii_case(want),
    };
    let scope_ok = scope
        .iter()
        .zip(["", "subscriptions", "*", "resourceGroups", "*", "providers"])
        .all(|(part, want)| match want {
            "" => part.is_empty(),
            want => fits(part, want),
        });
    if !scope_ok {
        return None;
    }
    RESOURCE_SHAPES
        .iter()
        .find(|(_, shape)| {
            shape.len() == tail.len() && tail.iter().zip(*shape).all(|(p, w)| fits(p, w))
        })
        .map(|(kind, _)| *kind)
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
            parse_target("my vm:22"),
            Err(TargetError::BadHost(_))
        ));
        assert!(matches!(
            parse_target("10.1.0.400:22"),
            Err(TargetError::BadHost(_))
        ));
        assert!(matches!(
            parse_target(&format!("{}:22", "a".repeat(65))),
            Err(TargetError::BadHost(_))
        ));
        assert!(matches!(
            parse_target("vm/1:22"),
            Err(TargetError::BadHost(_))
        ));
        let malformed = parse_target(
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/bastionHosts/b:22",
        )
        .unwrap_err();
        assert!(matches!(malformed, TargetError::BadResourceId(_)));
        let text = malformed.to_string();
        assert!(
            text.contains("providers/Microsoft.Compute/virtualMachines/<name>")
                && text.contains(
                    "providers/Microsoft.Compute/virtualMachineScaleSets/<name>/virtualMachines/<instance>"
                )
                && text.contains("providers/Microsoft.ContainerService/managedClusters/<name>"),
            "{text}"
        );
        for bad in [
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/:22",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/s:22",
            "/subscriptions//resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm:22",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c/agentPools/p:443",
        ] {
            assert!(
                matches!(parse_target(bad), Err(TargetError::BadResourceId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_scale_set_instances() {
        let id = "/subscriptions/0000/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachineScaleSets/web-ss/virtualMachines/0";
        let t = Target::parse(&format!("{id}:22")).unwrap();
        assert_eq!(t.host, TargetHost::Vm(id.into()));
        let lower = id.to_lowercase();
        assert!(Target::parse(&format!("{lower}:22")).is_ok());
    }

    #[test]
    fn only_unusual_ip_ports_get_a_caveat() {
        let caveat = |t: &str| Target::parse(t).unwrap().ip_port_caveat();
        assert_eq!(caveat("10.1.0.4:22"), None);
        assert_eq!(caveat("10.1.0.4:3389"), None);
        assert_eq!(caveat("myvm:5432"), None);
        let text = caveat("10.1.0.4:5432").unwrap();
        assert!(text.contains("SSH (22) and RDP (3389) only"), "{text}");
        assert!(text.contains("VMNAME:5432"), "{text}");
    }

    #[test]
    fn parses_managed_clusters() {
        let id = "/subscriptions/0000/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/aks1";
        let t = Target::parse(&format!("{id}:443")).unwrap();
        assert_eq!(t.host, TargetHost::Cluster(id.into()));
        assert_eq!(t.host.kind(), "aks");
        assert_eq!(Target::from_parts(id, 443).unwrap(), t);
        assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
        assert_eq!(
            Target::parse(&format!("{VM}:22")).unwrap().host.kind(),
            "vm"
        );
    }

    #[test]
    fn parses_vm_names() {
        let t = Target::parse("My-VM_1.dev:22").unwrap();
        assert_eq!(t.host, TargetHost::Name("My-VM_1.dev".into()));
        assert_eq!(t.to_string(), "My-VM_1.dev:22");
        assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
        let longest = "a".repeat(MAX_VM_NAME_LEN);
        assert!(Target::from_parts(&longest, 22).is_ok());
        assert_eq!(
            Target::from_parts("myvm", 22).unwrap().host,
            TargetHost::Name("myvm".into())
        );
    }

    #[test]
    fn from_parts_and_display_round_trip() {
        let t = Target::from_parts("fd00::4", 22).unwrap();
        assert_eq!(t.to_string(), "[fd00::4]:22");
        assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
        assert!(Target::from_parts("10.1.0.4", 65536).is_err());
        assert!(Target::from_parts("10.1.0.4", 0).is_err());
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text parses or is refused, and what parses reads back the same.
            #[test]
            fn any_text_parses_or_is_refused_and_round_trips(text in "\\PC{0,80}") {
                if let Ok(target) = Target::parse(&text) {
                    proptest::prop_assert_eq!(Target::parse(&target.to_string()).unwrap(), target);
                }
            }

            /// Every IP and port a user can type parses to itself.
            #[test]
            fn every_ip_and_port_parses(ip in proptest::arbitrary::any::<std::net::IpAddr>(), port in 1u16..) {
                let text = std::net::SocketAddr::new(ip, port).to_string();
                let target = Target::parse(&text).unwrap();
                proptest::prop_assert_eq!(target.port, port);
                proptest::prop_assert_eq!(Target::parse(&target.to_string()).unwrap(), target);
            }
        }
    }
}

//! Names and ids of forwards: both select a forward on the command line
//! (`forward remove NAME|ID|PORT`), so a name may look like neither a port
//! nor an id.

use std::net::IpAddr;

use bastion_proto::target::{Target, TargetHost};

/// Names are typed on command lines and used in ssh configs.
const MAX_NAME_LEN: usize = 64;
/// Forward ids are this many hex digits (see [`new_id`]); a name of that
/// shape could be read as another forward's id.
const ID_HEX_DIGITS: usize = 8;

/// Checks a name the user chose; the error says what a name may be.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        && !name.chars().all(|c| c.is_ascii_digit())
        && !(name.len() == ID_HEX_DIGITS && name.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "forward name {name:?} must be up to {MAX_NAME_LEN} letters, digits, '-', '_', '.', ':', \
             not all digits (a port) and not {ID_HEX_DIGITS} hex digits (an id)"
        ))
    }
}

/// "10.1.0.4-22", "fd00--4-22", "vm1-22", "aks1-443".
pub fn default_name(target: &Target) -> String {
    let host = match &target.host {
        TargetHost::Ip(IpAddr::V6(ip)) => ip.to_string().replace(':', "-"),
        TargetHost::Ip(ip) => ip.to_string(),
        TargetHost::Vm(id) | TargetHost::Cluster(id) => {
            id.rsplit('/').next().unwrap_or("resource").to_string()
        }
        TargetHost::Name(name) => name.clone(),
    };
    format!("{host}-{}", target.port)
}

/// "socks5-1080": a SOCKS5 listener is known by its local port.
pub fn default_socks_name(local_port: u16) -> String {
    format!("socks5-{local_port}")
}

/// `base`, or `base-2`, `base-3`… whichever is not `taken`.
pub fn unique_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .unwrap_or_else(new_id)
}

/// A short random id; forwards are few, so 32 bits never collide in practice.
pub fn new_id() -> String {
    format!("{:0width$x}", rand::random::<u32>(), width = ID_HEX_DIGITS)
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
        assert_eq!(unique_name("a", |n| n == "a" || n == "a-2"), "a-3");
    }

    #[test]
    fn names_that_read_as_ports_or_ids_are_refused() {
        assert!(validate_name("dev-ssh").is_ok());
        assert!(validate_name("2222").is_err());
        assert!(validate_name("deadBEEF").is_err(), "reads as an id");
        assert!(validate_name(&new_id()).is_err(), "reads as an id");
        assert!(validate_name("deadbeef-1").is_ok());
        assert!(validate_name("has space").is_err());
    }
}

//! `[forwards.NAME]`: forwards declared in the settings file, checked as the
//! rest of the file is (a bad entry names its key and stops the start or the
//! reload). `forwards::set::declared` reconciles them with the running ones.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bastion_proto::target::{SOCKS5_TARGET, Target};
use serde::Deserialize;

use super::BastionSettings;

/// One `[forwards.NAME]` entry, as written; the same settings as
/// `bastionctl forward add`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredForward {
    /// Any target form: `10.1.0.4:22`, `<VM resource id>:22`, `web01:22`;
    /// or `socks5`, a SOCKS5 listener whose clients name theirs.
    pub target: String,
    /// The local port (1–65535).
    pub port: u16,
    /// A key of `[bastions]`; `default_bastion` (or the only one) if absent.
    pub bastion: Option<String>,
    /// Where to listen; 127.0.0.1 if absent.
    pub bind: Option<IpAddr>,
    /// Where a VM-name target is looked up [default: the whole subscription].
    pub resource_group: Option<String>,
    /// Serve every local user (required with a `bind` beyond loopback).
    #[serde(default)]
    pub allow_other_users: bool,
}

impl DeclaredForward {
    /// The parsed target, `None` for a SOCKS5 listener (checked when the
    /// file is read).
    pub fn parsed_target(&self) -> Result<Option<Target>, String> {
        if self.target == SOCKS5_TARGET {
            return Ok(None);
        }
        Target::parse(&self.target)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Checks every entry; the message names the key (`forwards.NAME.port`).
pub fn validate(
    forwards: &BTreeMap<String, DeclaredForward>,
    bastions: &BTreeMap<String, BastionSettings>,
    default_bastion: Option<&str>,
    bastion_names: &str,
) -> Result<(), String> {
    for (name, entry) in forwards {
        let key = |field: &str| format!("`forwards.{name}.{field}`");
        if let Err(e) = entry.parsed_target() {
            return Err(format!("{} = {:?}: {e}", key("target"), entry.target));
        }
        if entry.port == 0 {
            return Err(format!("{} = 0 is out of range (1 to 65535)", key("port")));
        }
        match &entry.bastion {
            Some(bastion) if !bastions.contains_key(bastion) => {
                return Err(format!(
                    "{} = {bastion:?} names no bastion in [bastions] (known: {bastion_names})",
                    key("bastion")
                ));
            }
            None if default_bastion.is_none() => {
                return Err(format!(
                    "{} is needed: there is no `default_bastion` (known: {bastion_names})",
                    key("bastion")
                ));
            }
            _ => {}
        }
        if let Some(bind) = entry.bind
            && !bind.is_loopback()
            && !entry.allow_other_users
        {
            return Err(format!(
                "{} must be true with `bind` = \"{bind}\": the owner of a remote connection \
                 cannot be checked",
                key("allow_other_users")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Settings;

    const HUBS: &str = "[bastions.hub]\nresource_id = \"/subscriptions/0/resourceGroups/rg/providers/Microsoft.Network/bastionHosts/hub\"\n\
        [bastions.spoke]\nresource_id = \"/subscriptions/0/resourceGroups/rg/providers/Microsoft.Network/bastionHosts/spoke\"\n";

    fn parse(forwards: &str) -> Result<Settings, String> {
        let text = format!("default_bastion = \"hub\"\n{HUBS}{forwards}");
        Settings::parse(&text, Path::new("/etc/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn every_setting_of_forward_add_can_be_declared() {
        let s = parse(
            "[forwards.dev-ssh]\ntarget = \"web01:22\"\nport = 2222\nbastion = \"spoke\"\n\
             bind = \"0.0.0.0\"\nresource_group = \"rg-app\"\nallow_other_users = true\n\
             [forwards.db]\ntarget = \"10.1.0.5:5432\"\nport = 15432\n",
        )
        .unwrap();
        let dev = &s.forwards["dev-ssh"];
        assert_eq!(dev.port, 2222);
        assert_eq!(dev.bastion.as_deref(), Some("spoke"));
        assert_eq!(dev.bind, Some("0.0.0.0".parse().unwrap()));
        assert!(dev.allow_other_users);
        assert_eq!(s.forwards["db"].bastion, None);
        assert!(!s.forwards["db"].allow_other_users);
    }

    #[test]
    fn a_socks5_listener_is_declared_by_its_target() {
        let s = parse("[forwards.proxy]\ntarget = \"socks5\"\nport = 1080\n").unwrap();
        assert_eq!(s.forwards["proxy"].parsed_target(), Ok(None));
        let err = parse("[forwards.proxy]\ntarget = \"socks4\"\nport = 1080\n").unwrap_err();
        assert!(err.contains("forwards.proxy.target"), "{err}");
    }

    #[test]
    fn bad_entries_name_their_key() {
        for (entry, key) in [
            ("target = \"nonsense\"\nport = 1\n", "forwards.x.target"),
            ("target = \"10.1.0.4:22\"\nport = 0\n", "forwards.x.port"),
            ("target = \"10.1.0.4:22\"\nport = 70000\n", "port"),
            (
                "target = \"10.1.0.4:22\"\nport = 1\nbastion = \"no\"\n",
                "forwards.x.bastion",
            ),
            (
                "target = \"10.1.0.4:22\"\nport = 1\nbind = \"::\"\n",
                "forwards.x.allow_other_users",
            ),
            (
                "target = \"10.1.0.4:22\"\nport = 1\nbind = \"host\"\n",
                "bind",
            ),
            ("target = \"10.1.0.4:22\"\nport = 1\ncolour = 1\n", "colour"),
            ("port = 1\n", "target"),
        ] {
            let err = parse(&format!("[forwards.x]\n{entry}")).unwrap_err();
            assert!(
                err.contains(key) && err.contains("/etc/config.toml"),
                "{key}: {err}"
            );
        }
    }
}

//! One concept: the settings file (`config.toml`), its shape and its checks.
//! Unknown keys and bad values are errors that name the file, the line and
//! the key; a missing file means defaults. (`[tunnel]` and `[forwards]` have
//! files of their own under `config/`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod forwards;
mod tunnel;
pub use forwards::DeclaredForward;
pub use tunnel::TunnelSettings;

/// Public-cloud Azure Resource Manager.
pub const DEFAULT_RESOURCE_MANAGER: &str = "https://management.azure.com";
/// Public-cloud Entra ID.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The audience Bastion accepts for `aztoken`: an ARM token.
pub const DEFAULT_TOKEN_SCOPE: &str = "https://management.azure.com/.default";
/// A Standard Bastion carries about 40 SSH sessions, shared with everyone
/// else using it (portal users included): one daemon takes at most 32 unless
/// told otherwise, leaving room for the rest.
pub const DEFAULT_MAX_SESSIONS: u32 = 32;
/// More sessions than any Bastion SKU carries.
const MAX_MAX_SESSIONS: u32 = 10_000;
/// Default waiting connections per session: a burst of IDE windows or a
/// parallel `ansible` run waits its turn, a runaway loop does not pile up.
const WAITING_PER_SESSION: u32 = 8;
/// Upper bound of `max_waiting`: each waiting connection holds a descriptor.
const MAX_MAX_WAITING: u32 = 100_000;

/// A settings problem, with the file it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read settings file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid settings in {}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
}

/// The whole settings file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Used when a forward names no bastion; optional when only one is configured.
    pub default_bastion: Option<String>,
    #[serde(default)]
    pub bastions: BTreeMap<String, BastionSettings>,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub cloud: CloudSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default)]
    pub tunnel: TunnelSettings,
    /// Forwards declared here (`[forwards.NAME]`), next to those added with
    /// `bastionctl forward add`.
    #[serde(default)]
    pub forwards: BTreeMap<String, DeclaredForward>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BastionSettings {
    /// `/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/bastionHosts/<name>`
    pub resource_id: String,
    /// Live Bastion sessions this daemon opens at most on this bastion;
    /// connections beyond it wait for a free one.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// Connections waiting for one of those sessions at most; beyond it new
    /// ones are closed at once, so a flood holds neither descriptors nor
    /// memory for `setup_timeout_secs`. Default: [`WAITING_PER_SESSION`]
    /// times `max_sessions`.
    pub max_waiting: Option<u32>,
    /// The tenant whose tokens this bastion's subscription accepts, when it
    /// is not the credential's own (optional: the Azure CLI finds it).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl BastionSettings {
    /// `max_waiting`, or its default.
    pub fn max_waiting(&self) -> u32 {
        self.max_waiting
            .unwrap_or_else(|| self.max_sessions.saturating_mul(WAITING_PER_SESSION))
    }
}

fn default_max_sessions() -> u32 {
    DEFAULT_MAX_SESSIONS
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    AzureCli,
    #[default]
    DeveloperTools,
    ClientSecret,
    ManagedIdentity,
    WorkloadIdentity,
}

impl CredentialKind {
    /// The name used in the settings file and in `Status`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::AzureCli => "azure-cli",
            CredentialKind::DeveloperTools => "developer-tools",
            CredentialKind::ClientSecret => "client-secret",
            CredentialKind::ManagedIdentity => "managed-identity",
            CredentialKind::WorkloadIdentity => "workload-identity",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub credential: CredentialKind,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudSettings {
    pub resource_manager: String,
    pub authority_host: String,
    /// The scope of the Entra token handed to ARM and Bastion.
    pub token_scope: String,
}

impl Default for CloudSettings {
    fn default() -> Self {
        CloudSettings {
            resource_manager: DEFAULT_RESOURCE_MANAGER.into(),
            authority_host: DEFAULT_AUTHORITY_HOST.into(),
            token_scope: DEFAULT_TOKEN_SCOPE.into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Extra CA certificates (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// A digest of `ca_file`'s content when loaded, so a reload notices new
    /// certificates at the same path (not a setting).
    #[serde(skip)]
    pub ca_digest: Option<u64>,
}

impl Settings {
    /// Reads `file`; a missing file gives the defaults (no bastions yet).
    pub fn load(file: &Path) -> Result<Settings, ConfigError> {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let mut settings = Settings::parse(&text, file)?;
                // Unreadable now: tls_config reports it with the path.
                settings.tls.ca_digest = settings.tls.ca_file.as_deref().and_then(|ca| {
                    use std::hash::{Hash, Hasher};
                    let mut hasher = std::hash::DefaultHasher::new();
                    std::fs::read(ca).ok()?.hash(&mut hasher);
                    Some(hasher.finish())
                });
                Ok(settings)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(source) => Err(ConfigError::Read {
                file: file.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and validates settings text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Settings, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        let mut settings: Settings =
            toml::from_str(text).map_err(|e| invalid(describe_toml_error(text, &e)))?;
        settings.validate().map_err(invalid)?;
        // A relative `ca_file` is relative to the settings file, not to
        // wherever the daemon happened to be started.
        if let (Some(ca_file), Some(dir)) = (&settings.tls.ca_file, file.parent())
            && ca_file.is_relative()
        {
            settings.tls.ca_file = Some(dir.join(ca_file));
        }
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(default) = &self.default_bastion
            && !self.bastions.contains_key(default)
        {
            return Err(format!(
                "`default_bastion` = {default:?} names no bastion in [bastions] (known: {})",
                self.bastion_names()
            ));
        }
        for (name, bastion) in &self.bastions {
            if !is_bastion_resource_id(&bastion.resource_id) {
                return Err(format!(
                    "`bastions.{name}.resource_id` = {:?} is not a bastion host resource id \
                     (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/bastionHosts/<name>)",
                    bastion.resource_id
                ));
            }
            if !(1..=MAX_MAX_SESSIONS).contains(&bastion.max_sessions) {
                return Err(format!(
                    "`bastions.{name}.max_sessions` = {} is out of range (1 to {MAX_MAX_SESSIONS})",
                    bastion.max_sessions
                ));
            }
            if let Some(waiting) = bastion.max_waiting.filter(|w| *w > MAX_MAX_WAITING) {
                return Err(format!(
                    "`bastions.{name}.max_waiting` = {waiting} is out of range (0 to {MAX_MAX_WAITING})"
                ));
            }
        }
        for (key, value) in [
            ("cloud.resource_manager", &self.cloud.resource_manager),
            ("cloud.authority_host", &self.cloud.authority_host),
        ] {
            match url::Url::parse(value) {
                Ok(url) if url.scheme() == "https" => {}
                _ => return Err(format!("`{key}` = {value:?} is not an https:// URL")),
            }
        }
        self.tunnel.validate()?;
        forwards::validate(
            &self.forwards,
            &self.bastions,
            self.default_bastion(),
            &self.bastion_names(),
        )
    }

    /// The bastion a forward uses when it names none.
    pub fn default_bastion(&self) -> Option<&str> {
        match &self.default_bastion {
            Some(name) => Some(name),
            None if self.bastions.len() == 1 => self.bastions.keys().next().map(String::as_str),
            None => None,
        }
    }

    /// "hub, spoke" or "none", for error messages.
    pub fn bastion_names(&self) -> String {
        if self.bastions.is_empty() {
            "none".into()
        } else {
            self.bastions.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// `/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/bastionHosts/NAME`
pub fn is_bastion_resource_id(id: &str) -> bool {
    parse_bastion_resource_id(id).is_some()
}

/// (subscription, resource group, name) of a bastion host resource id.
pub fn parse_bastion_resource_id(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split('/').collect();
    let ["", subs, sub, rgs, rg, providers, ns, kind, name] = parts.as_slice() else {
        return None;
    };
    let fixed = [
        (*subs, "subscriptions"),
        (*rgs, "resourceGroups"),
        (*providers, "providers"),
        (*ns, "Microsoft.Network"),
        (*kind, "bastionHosts"),
    ];
    let ok = fixed
        .iter()
        .all(|(got, want)| got.eq_ignore_ascii_case(want))
        && [sub, rg, name].iter().all(|p| !p.is_empty());
    ok.then_some((*sub, *rg, *name))
}

/// One line: "line L, column C: key `K`: message".
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim();
    let Some(span) = err.span() else {
        return message.to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=').map(|(key, _)| key.trim()) {
        Some(key) if !key.is_empty() && !message.contains(&format!("`{key}`")) => {
            format!("line {line_no}, column {column}: key `{key}`: {message}")
        }
        _ => format!("line {line_no}, column {column}: {message}"),
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = "/subscriptions/0000/resourceGroups/rg-hub/providers/Microsoft.Network/bastionHosts/bastion-hub";

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("/home/u/.config/bastiond/config.toml"))
    }

    #[test]
    fn full_file_parses() {
        let s = parse(&format!(
            r#"
default_bastion = "hub"
[bastions.hub]
resource_id = "{HUB}"
[auth]
credential = "azure-cli"
tenant_id = "t"
[cloud]
resource_manager = "https://127.0.0.1:8443"
authority_host = "https://127.0.0.1:8443"
[tls]
ca_file = "/tmp/ca.pem"
[tunnel]
keepalive_interval_secs = 5
"#
        ))
        .unwrap();
        assert_eq!(s.default_bastion(), Some("hub"));
        assert_eq!(s.auth.credential, CredentialKind::AzureCli);
        assert_eq!(
            s.tunnel.keepalive_timeout_secs,
            TunnelSettings::default().keepalive_timeout_secs
        );
        assert_eq!(s.cloud.token_scope, DEFAULT_TOKEN_SCOPE);
    }

    #[test]
    fn relative_ca_file_is_beside_the_settings_file() {
        let s = parse("[tls]\nca_file = \"corp-ca.pem\"\n").unwrap();
        assert_eq!(
            s.tls.ca_file.unwrap(),
            PathBuf::from("/home/u/.config/bastiond/corp-ca.pem")
        );
    }

    #[test]
    fn missing_file_is_defaults() {
        let s = Settings::load(Path::new("/nonexistent/config.toml")).unwrap();
        assert_eq!(s.auth.credential, CredentialKind::DeveloperTools);
        assert!(s.bastions.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("[auth]\ncredentail = \"azure-cli\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.toml"), "{err}");
        assert!(err.contains("credentail"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_value_names_key() {
        let err = parse("[auth]\ncredential = \"password\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("credential"), "{err}");
        assert!(err.contains("config.toml"), "{err}");
        let err = parse("[tunnel]\nkeepalive_interval_secs = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("keepalive_interval_secs"), "{err}");
    }

    #[test]
    fn durations_have_a_maximum() {
        let err = parse("[tunnel]\nkeepalive_interval_secs = 18446744073709551615\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keepalive_interval_secs") && err.contains("3600"),
            "{err}"
        );
        let err = parse("[tunnel]\nkeepalive_timeout_secs = 100000\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keepalive_timeout_secs") && err.contains("600"),
            "{err}"
        );
        assert!(parse("[tunnel]\nkeepalive_interval_secs = 3600\n").is_ok());
    }

    #[test]
    fn semantic_errors_name_key() {
        let err = parse(&format!(
            "default_bastion = \"spoke\"\n[bastions.hub]\nresource_id = \"{HUB}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("default_bastion") && err.contains("hub"),
            "{err}"
        );
        let err = parse("[bastions.hub]\nresource_id = \"/subscriptions/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bastions.hub.resource_id"), "{err}");
        let err = parse("[cloud]\nresource_manager = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cloud.resource_manager"), "{err}");
        let err = parse(&format!(
            "[bastions.hub]\nresource_id = \"{HUB}\"\nmax_sessions = 0\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("bastions.hub.max_sessions"), "{err}");
        let err = parse(&format!(
            "[bastions.hub]\nresource_id = \"{HUB}\"\nmax_waiting = 1000000\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("bastions.hub.max_waiting"), "{err}");
        let s = parse(&format!("[bastions.hub]\nresource_id = \"{HUB}\"\n")).unwrap();
        assert_eq!(s.bastions["hub"].max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(
            s.bastions["hub"].max_waiting(),
            DEFAULT_MAX_SESSIONS * WAITING_PER_SESSION
        );
    }

    #[test]
    fn single_bastion_is_the_default() {
        let s = parse(&format!("[bastions.hub]\nresource_id = \"{HUB}\"\n")).unwrap();
        assert_eq!(s.default_bastion(), Some("hub"));
        assert_eq!(
            parse_bastion_resource_id(HUB),
            Some(("0000", "rg-hub", "bastion-hub"))
        );
    }
}

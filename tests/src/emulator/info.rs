//! What the emulator leaves on disk for others: `emulator.json` (EmulatorInfo) and a
//! bastiond `config.toml` pointing at it, both written atomically.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::BastionSpec;
use super::vnet::Services;

/// Everything a client needs to use the emulator; `emulator.json` holds the same.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorInfo {
    /// "127.0.0.1:PORT" — also every bastion's dnsName.
    pub endpoint: String,
    /// "127.0.0.1:PORT" of Developer bastions' dnsName (their `/api/connection`).
    pub developer_endpoint: String,
    /// "127.0.0.1:PORT" of the data pod `/api/connection` names.
    pub pod_endpoint: String,
    pub ca_file: PathBuf,
    /// The first bastion's ARM id.
    pub bastion_resource_id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub az_path: Option<PathBuf>,
    pub config_file: PathBuf,
    pub services: Services,
}

/// Everything but the client secret.
impl std::fmt::Debug for EmulatorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorInfo")
            .field("endpoint", &self.endpoint)
            .field("developer_endpoint", &self.developer_endpoint)
            .field("pod_endpoint", &self.pod_endpoint)
            .field("ca_file", &self.ca_file)
            .field("bastion_resource_id", &self.bastion_resource_id)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("az_path", &self.az_path)
            .field("config_file", &self.config_file)
            .field("services", &self.services)
            .finish()
    }
}

impl EmulatorInfo {
    /// `https://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("https://{}", self.endpoint)
    }

    /// Reads an `emulator.json` written by a running emulator.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Writes `contents` to `path` via a temp file and rename, so readers never see half a file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A TOML basic string: JSON string escapes are valid TOML escapes.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A bare TOML key when the key allows it, else a quoted one.
fn toml_key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { s.to_owned() } else { toml_str(s) }
}

/// bastiond settings using every emulated bastion and the Azure CLI credential.
pub(crate) fn config_toml(bastions: &[BastionSpec], endpoint: &str, ca_file: &Path) -> String {
    let mut out =
        String::from("# Written by bastion-emulator: bastiond settings for this emulator.\n");
    if let Some(first) = bastions.first() {
        out += &format!("default_bastion = {}\n", toml_str(&first.key));
    }
    for b in bastions {
        out += &format!(
            "\n[bastions.{}]\nresource_id = {}\n",
            toml_key(&b.key),
            toml_str(&b.resource_id())
        );
    }
    let url = toml_str(&format!("https://{endpoint}"));
    out += &format!(
        "\n[auth]\ncredential = \"azure-cli\"\n\n[cloud]\nresource_manager = {url}\nauthority_host = {url}\n\n[tls]\nca_file = {}\n",
        toml_str(&ca_file.to_string_lossy())
    );
    out
}

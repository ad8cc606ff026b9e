//! The settings file as `bastion add|list|remove` edit it: with a
//! format-preserving TOML editor, so the user's comments, order and layout
//! survive; written through a temporary file and a rename, so a crash never
//! leaves half a file.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use toml_edit::{DocumentMut, Item, Table, value};

use crate::exit::Exit;

/// A new settings file holds no secret (they come from the environment):
/// readable by others, as a file the user created would be.
const NEW_FILE_MODE: u32 = 0o644;

/// Largest bastion name: it is typed on command lines and is a TOML key.
const MAX_BASTION_NAME_LEN: usize = 64;

/// Where the daemon reads its settings by default:
/// `$XDG_CONFIG_HOME/bastiond/config.toml`, else `~/.config/bastiond/config.toml`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set; pass --config")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("bastiond").join("config.toml"))
}

/// One `[bastions.NAME]` entry as the file has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BastionEntry {
    pub name: String,
    pub resource_id: String,
    pub default: bool,
}

/// The settings file, parsed for editing.
pub struct SettingsFile {
    path: PathBuf,
    doc: DocumentMut,
}

impl SettingsFile {
    /// Reads `path`; a missing file is an empty one (created on save).
    pub fn open(path: &Path) -> anyhow::Result<SettingsFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let doc = text
            .parse::<DocumentMut>()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(SettingsFile {
            path: path.to_path_buf(),
            doc,
        })
    }

    /// The configured bastions, in file order.
    pub fn bastions(&self) -> Vec<BastionEntry> {
        let default = self.doc.get("default_bastion").and_then(Item::as_str);
        let Some(table) = self.doc.get("bastions").and_then(Item::as_table_like) else {
            return Vec::new();
        };
        table
            .iter()
            .map(|(name, item)| BastionEntry {
                name: name.to_string(),
                resource_id: item
                    .get("resource_id")
                    .and_then(Item::as_str)
                    .unwrap_or_default()
                    .to_string(),
                default: default == Some(name),
            })
            .collect()
    }

    /// Adds `[bastions.NAME]`; an existing name is refused.
    pub fn add(&mut self, name: &str, resource_id: &str) -> anyhow::Result<()> {
        validate_name(name)?;
        if !is_bastion_resource_id(resource_id) {
            bail!(
                "{resource_id:?} is not a bastion host resource id \
                 (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/bastionHosts/<name>); \
                 `bastionctl bastion discover` lists the ones you can use"
            );
        }
        if self.bastions().iter().any(|b| b.name == name) {
            bail!(
                "a bastion named {name:?} is already in {}; remove it first or pick another name",
                self.path.display()
            );
        }
        let bastions = self
            .doc
            .entry("bastions")
            .or_insert_with(|| {
                let mut table = Table::new();
                table.set_implicit(true);
                Item::Table(table)
            })
            .as_table_like_mut()
            .context("`bastions` in the settings file is not a table")?;
        let mut entry = Table::new();
        entry.insert("resource_id", value(resource_id));
        bastions.insert(name, Item::Table(entry));
        Ok(())
    }

    /// Removes `[bastions.NAME]` (and `default_bastion` if it named it).
    pub fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        let removed = self
            .doc
            .get_mut("bastions")
            .and_then(Item::as_table_like_mut)
            .and_then(|t| t.remove(name));
        if removed.is_none() {
            let known: Vec<String> = self.bastions().into_iter().map(|b| b.name).collect();
            return Err(Exit::NotFound.error(format!(
                "no bastion named {name:?} in {} (known: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        }
        if self.doc.get("default_bastion").and_then(Item::as_str) == Some(name) {
            self.doc.remove("default_bastion");
        }
        Ok(())
    }

    /// The file's new text.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Writes the file (directory created if needed): temp file, fsync, rename.
    pub fn save(&self) -> anyhow::Result<()> {
        crate::atomic_write::write(&self.path, self.text().as_bytes(), NEW_FILE_MODE)
    }
}

fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BASTION_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !ok {
        bail!(
            "bastion name {name:?} must be 1 to {MAX_BASTION_NAME_LEN} letters, digits, '-' or '_'"
        );
    }
    Ok(())
}

/// `/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/bastionHosts/NAME`
fn is_bastion_resource_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    let ["", subs, sub, rgs, rg, providers, ns, kind, name] = parts.as_slice() else {
        return false;
    };
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    is(subs, "subscriptions")
        && is(rgs, "resourceGroups")
        && is(providers, "providers")
        && is(ns, "Microsoft.Network")
        && is(kind, "bastionHosts")
        && [sub, rg, name].iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/bastionHosts/b1";

    fn file(text: &str) -> SettingsFile {
        SettingsFile {
            path: PathBuf::from("/nowhere/config.toml"),
            doc: text.parse().unwrap(),
        }
    }

    #[test]
    fn add_keeps_comments_and_layout() {
        let before = "# my settings\ndefault_bastion = \"hub\"  # the usual one\n\n\
                      [bastions.hub]\nresource_id = \"/x\" # hub\n\n[tunnel]\n# quiet\neof_linger_secs = 2\n";
        let mut f = file(before);
        f.add("spoke", ID).unwrap();
        let after = f.text();
        assert!(
            after
                .starts_with(before.trim_end_matches("\n[tunnel]\n# quiet\neof_linger_secs = 2\n")),
            "{after}"
        );
        assert!(after.contains("# my settings\n"), "{after}");
        assert!(after.contains("# the usual one"), "{after}");
        assert!(after.contains("# quiet\neof_linger_secs = 2"), "{after}");
        assert!(
            after.contains(&format!("[bastions.spoke]\nresource_id = \"{ID}\"\n")),
            "{after}"
        );
        assert_eq!(f.bastions().len(), 2);
        assert!(
            f.add("spoke", ID)
                .unwrap_err()
                .to_string()
                .contains("already")
        );
        assert!(
            f.add("x", "/nope")
                .unwrap_err()
                .to_string()
                .contains("discover")
        );
        assert!(f.add("bad name", ID).is_err());
    }

    #[test]
    fn add_to_an_empty_file_and_remove() {
        let mut f = file("");
        f.add("hub", ID).unwrap();
        assert_eq!(
            f.text(),
            format!("[bastions.hub]\nresource_id = \"{ID}\"\n")
        );
        let text = format!(
            "default_bastion = \"hub\"\n{}\n# keep\n[tunnel]\neof_linger_secs = 2\n",
            f.text()
        );
        let mut f = file(&text);
        f.remove("hub").unwrap();
        assert_eq!(f.bastions(), vec![]);
        assert!(!f.text().contains("default_bastion"), "{}", f.text());
        assert!(
            f.text().contains("# keep\n[tunnel]\neof_linger_secs = 2\n"),
            "{}",
            f.text()
        );
        assert!(
            f.remove("hub")
                .unwrap_err()
                .to_string()
                .contains("known: none")
        );
    }
}

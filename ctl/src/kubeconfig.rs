//! The kubeconfig as `aks add|remove` edit it: parsed and written by a YAML
//! library (never by hand), entries replaced in place or appended, every
//! other entry left as it was, written atomically (a new file owner-only:
//! it holds credentials). Entries bastionctl wrote carry an extension named
//! [`EXTENSION`] saying which forward they belong to, so `aks remove` takes
//! away exactly those and nothing else. Comments do not survive a rewrite
//! (no YAML library keeps them), which is why kubectl drops them too.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};

/// The name of the extension that marks bastionctl's entries.
pub const EXTENSION: &str = "bastiond";
/// A kubeconfig holds credentials: a new one is readable by its owner only.
const NEW_FILE_MODE: u32 = 0o600;
/// Larger than any real kubeconfig by far; a bigger file is not one.
const MAX_KUBECONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// The three lists of a kubeconfig, each of `{name, <kind>: {...}}` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Clusters,
    Contexts,
    Users,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Clusters => "clusters",
            Section::Contexts => "contexts",
            Section::Users => "users",
        }
    }

    /// The key of an entry's body: `cluster`, `context`, `user`.
    pub fn body_key(self) -> &'static str {
        match self {
            Section::Clusters => "cluster",
            Section::Contexts => "context",
            Section::Users => "user",
        }
    }
}

/// What bastionctl records in the entries it writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The forward's name in bastiond.
    pub forward: String,
    /// The managed cluster's resource id.
    #[serde(rename = "managed-cluster")]
    pub managed_cluster: String,
}

/// `$KUBECONFIG`'s first file, else `~/.kube/config` (where kubectl writes).
pub fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither KUBECONFIG nor HOME is set; pass --kubeconfig")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

/// A kubeconfig file, parsed for editing.
pub struct Kubeconfig {
    path: PathBuf,
    doc: Mapping,
}

impl Kubeconfig {
    /// Reads `path`; a missing or empty file is an empty kubeconfig.
    pub fn open(path: &Path) -> anyhow::Result<Kubeconfig> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if text.len() as u64 > MAX_KUBECONFIG_BYTES {
            bail!(
                "{} is larger than {MAX_KUBECONFIG_BYTES} bytes: not a kubeconfig",
                path.display()
            );
        }
        let doc = if text.iter().all(u8::is_ascii_whitespace) {
            empty()
        } else {
            match serde_norway::from_slice(&text)
                .with_context(|| format!("{} is not valid YAML", path.display()))?
            {
                Value::Mapping(doc) => doc,
                Value::Null => empty(),
                _ => bail!(
                    "{} is not a kubeconfig (its top level is not a mapping)",
                    path.display()
                ),
            }
        };
        Ok(Kubeconfig {
            path: path.to_path_buf(),
            doc,
        })
    }

    /// A kubeconfig that is not on disk (ARM's answer).
    pub fn parse(text: &[u8], what: &str) -> anyhow::Result<Kubeconfig> {
        match serde_norway::from_slice(text).with_context(|| format!("{what} is not valid YAML"))? {
            Value::Mapping(doc) => Ok(Kubeconfig {
                path: PathBuf::new(),
                doc,
            }),
            _ => bail!("{what} is not a kubeconfig"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self, section: Section) -> &[Value] {
        self.doc
            .get(section.key())
            .and_then(Value::as_sequence)
            .map_or(&[], Vec::as_slice)
    }

    /// The body of the entry `name` (`clusters[].cluster` and so on).
    pub fn body(&self, section: Section, name: &str) -> Option<&Mapping> {
        self.list(section)
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
            .get(section.body_key())?
            .as_mapping()
    }

    pub fn current_context(&self) -> Option<&str> {
        self.doc
            .get("current-context")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
    }

    pub fn set_current_context(&mut self, name: &str) {
        self.doc
            .insert("current-context".into(), Value::String(name.to_owned()));
    }

    /// bastionctl's mark on the entry `name`, if it carries one.
    pub fn mark(&self, section: Section, name: &str) -> Option<Mark> {
        self.body(section, name)?
            .get("extensions")?
            .as_sequence()?
            .iter()
            .find(|ext| ext.get("name").and_then(Value::as_str) == Some(EXTENSION))
            .and_then(|ext| serde_norway::from_value(ext.get("extension")?.clone()).ok())
    }

    /// Names of the contexts bastionctl wrote for `forward`.
    pub fn contexts_of(&self, forward: &str) -> Vec<String> {
        self.list(Section::Contexts)
            .iter()
            .filter_map(|e| e.get("name")?.as_str())
            .filter(|name| {
                self.mark(Section::Contexts, name)
                    .is_some_and(|m| m.forward == forward)
            })
            .map(str::to_owned)
            .collect()
    }

    /// Puts `body`, marked with `mark`, as the entry `name`: in place of an
    /// entry of that name, else appended.
    pub fn put(&mut self, section: Section, name: &str, mut body: Mapping, mark: &Mark) {
        let extension = serde_norway::to_value(mark).unwrap_or(Value::Null);
        let mut ext = Mapping::new();
        ext.insert("extension".into(), extension);
        ext.insert("name".into(), EXTENSION.into());
        body.insert(
            "extensions".into(),
            Value::Sequence(vec![Value::Mapping(ext)]),
        );
        // kubectl writes each entry's keys sorted: `cluster`/`context` before
        // `name`, `name` before `user`.
        let mut entry = Mapping::new();
        let (body_key, name_value) = (section.body_key(), Value::String(name.to_owned()));
        if body_key < "name" {
            entry.insert(body_key.into(), Value::Mapping(body));
            entry.insert("name".into(), name_value);
        } else {
            entry.insert("name".into(), name_value);
            entry.insert(body_key.into(), Value::Mapping(body));
        }
        let list = self
            .doc
            .entry(section.key().into())
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if !list.is_sequence() {
            *list = Value::Sequence(Vec::new());
        }
        let Value::Sequence(list) = list else { return };
        match list
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(existing) => *existing = Value::Mapping(entry),
            None => list.push(Value::Mapping(entry)),
        }
    }

    /// Removes the entry `name` if bastionctl wrote it for `forward`; true if it did.
    pub fn remove_marked(&mut self, section: Section, name: &str, forward: &str) -> bool {
        if self
            .mark(section, name)
            .is_none_or(|m| m.forward != forward)
        {
            return false;
        }
        let Some(Value::Sequence(list)) = self.doc.get_mut(section.key()) else {
            return false;
        };
        list.retain(|e| e.get("name").and_then(Value::as_str) != Some(name));
        if self.current_context() == Some(name) && section == Section::Contexts {
            self.set_current_context("");
        }
        true
    }

    /// The file's new text.
    pub fn text(&self) -> anyhow::Result<String> {
        serde_norway::to_string(&self.doc).context("cannot serialise the kubeconfig")
    }

    /// Writes the file: temp file, fsync, rename; a new file is 0600.
    pub fn save(&self) -> anyhow::Result<()> {
        crate::atomic_write::write(&self.path, self.text()?.as_bytes(), NEW_FILE_MODE)
    }
}

/// What kubectl writes into a new kubeconfig before its first entry.
fn empty() -> Mapping {
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("clusters".into(), Value::Sequence(Vec::new()));
    doc.insert("contexts".into(), Value::Sequence(Vec::new()));
    doc.insert("current-context".into(), "".into());
    doc.insert("kind".into(), "Config".into());
    doc.insert("preferences".into(), Value::Mapping(Mapping::new()));
    doc.insert("users".into(), Value::Sequence(Vec::new()));
    doc
}

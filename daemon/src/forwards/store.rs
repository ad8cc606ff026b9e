//! The state file: saved forwards (not counters), `{"version": 1, "forwards": [...]}`.
//! Writes are atomic (temp file, fsync, rename, fsync directory).
//!
//! Read entry by entry, so a file from another version (a downgrade, or a
//! field or target kind a newer version added) never costs a forward: an
//! entry this version cannot use is kept verbatim and written back on every
//! save, and fields it does not know on entries it can use survive a save.
//! Only a file that is not a state file at all is moved aside as
//! `state.json.corrupt-<unix ts>` and reported, never silently overwritten.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The state file version this daemon writes.
const VERSION: u32 = 1;

/// One saved forward, as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedForward {
    pub id: String,
    pub name: String,
    pub bastion: String,
    /// As users type it: "10.1.0.4:22", "[fd00::4]:22", "/subscriptions/…:22";
    /// "socks5" for a SOCKS5 listener (no port: an older daemon keeps such
    /// an entry unstarted instead of misreading it).
    pub target: String,
    pub bind_address: String,
    pub local_port: u16,
    pub created_at_ms: i64,
    /// Serves every local user; left out when false so older daemons can
    /// still read the file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_other_users: bool,
    /// Where a SOCKS5 listener's clients' VM names are looked up; left out
    /// when unset (a forward added with bastionctl keeps the VM's id instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// Fields this version does not know (a newer one wrote them): kept
    /// and written back as they were.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

impl SavedForward {
    /// The entry as the file holds it.
    pub fn to_entry(&self) -> Value {
        // A struct of strings, numbers and a JSON map always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The file's outline; entries are read one by one.
#[derive(Deserialize)]
struct StateFile {
    version: u32,
    forwards: Vec<Value>,
}

#[derive(Serialize)]
struct StateFileOut<'a> {
    version: u32,
    forwards: &'a [Value],
}

/// An entry this version cannot use, kept as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptEntry {
    pub entry: Value,
    /// Why it cannot be used, for the user.
    pub reason: String,
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub forwards: Vec<SavedForward>,
    pub kept: Vec<KeptEntry>,
    /// Set when the file was unreadable and moved aside, or written by a
    /// newer version; shown to the user.
    pub notice: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    /// The version saves write: ours, or a newer one the file had (entries
    /// kept verbatim are in that version's format, and ours are a subset).
    version: Arc<AtomicU32>,
}

impl Store {
    pub fn new(path: PathBuf) -> Store {
        Store {
            path,
            version: Arc::new(AtomicU32::new(VERSION)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the saved forwards; a missing file is an empty list.
    pub fn load(&self) -> Result<Loaded> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(state) => Ok(self.read_entries(state)),
            Err(e) => self.move_aside(&e.to_string()),
        }
    }

    fn read_entries(&self, state: StateFile) -> Loaded {
        let mut loaded = Loaded::default();
        if state.version > VERSION {
            self.version.store(state.version, Ordering::Relaxed);
            loaded.notice = Some(format!(
                "state file {} was written by a newer bastiond (version {}); \
                 forwards this version cannot use are kept in it, shown as errors",
                self.path.display(),
                state.version
            ));
        }
        for entry in state.forwards {
            match SavedForward::deserialize(&entry) {
                Ok(saved) => loaded.forwards.push(saved),
                Err(e) => loaded.kept.push(KeptEntry {
                    reason: format!("this version cannot read it ({e})"),
                    entry,
                }),
            }
        }
        loaded
    }

    fn move_aside(&self, problem: &str) -> Result<Loaded> {
        let aside = self.path.with_file_name(format!(
            "{}.corrupt-{}",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("state.json"),
            bastion_proto::time::now_ms() / 1000
        ));
        fs::rename(&self.path, &aside)
            .with_context(|| format!("cannot move unreadable {} aside", self.path.display()))?;
        let notice = format!(
            "state file {} was unreadable ({problem}); moved it to {} and started with no saved forwards",
            self.path.display(),
            aside.display()
        );
        Ok(Loaded {
            notice: Some(notice),
            ..Loaded::default()
        })
    }

    /// Replaces the file atomically with `entries`.
    pub fn save(&self, entries: &[Value]) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(&StateFileOut {
            version: self.version.load(Ordering::Relaxed),
            forwards: entries,
        })?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            fs::File::open(dir)?.sync_all()
        };
        write()
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(name: &str) -> SavedForward {
        SavedForward {
            id: "a1b2c3d4".into(),
            name: name.into(),
            bastion: "hub".into(),
            target: "10.1.0.4:22".into(),
            bind_address: "127.0.0.1".into(),
            local_port: 2222,
            created_at_ms: 1,
            allow_other_users: false,
            resource_group: None,
            unknown: Map::new(),
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("sub/state.json"));
        assert!(store.load().unwrap().forwards.is_empty());
        store.save(&[forward("dev").to_entry()]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.forwards, vec![forward("dev")]);
        assert!(loaded.notice.is_none());
        store.save(&[]).unwrap();
        assert!(store.load().unwrap().forwards.is_empty());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{ not json").unwrap();
        let store = Store::new(path.clone());
        let loaded = store.load().unwrap();
        assert!(loaded.forwards.is_empty());
        let notice = loaded.notice.unwrap();
        assert!(notice.contains("corrupt-"), "{notice}");
        assert!(!path.exists());
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].starts_with("state.json.corrupt-"));
        assert_eq!(fs::read(dir.path().join(&aside[0])).unwrap(), b"{ not json");
    }

    #[test]
    fn a_newer_file_is_read_entry_by_entry_and_written_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut known = forward("dev").to_entry();
        known["labels"] = serde_json::json!({"team": "db"});
        let unknown = serde_json::json!({"name": "aks", "target": {"kind": "cluster"}});
        let file = serde_json::json!({"version": 2, "forwards": [known, unknown]});
        fs::write(&path, file.to_string()).unwrap();
        let store = Store::new(path.clone());
        let loaded = store.load().unwrap();
        assert!(loaded.notice.unwrap().contains("version 2"));
        assert_eq!(loaded.forwards.len(), 1);
        assert_eq!(loaded.forwards[0].unknown["labels"]["team"], "db");
        assert_eq!(loaded.kept.len(), 1);
        assert_eq!(loaded.kept[0].entry, unknown);
        assert!(
            loaded.kept[0].reason.contains("cannot read"),
            "{:?}",
            loaded.kept
        );

        let entries = [loaded.forwards[0].to_entry(), loaded.kept[0].entry.clone()];
        store.save(&entries).unwrap();
        let written: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written, file, "the file is written back as it was");
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any file content loads (or is moved aside) without panicking, and
            /// what loads is written back with every entry it had.
            #[test]
            fn any_state_file_loads_and_keeps_its_entries(text in proptest::prelude::prop_oneof![
                "\\PC{0,200}",
                proptest::collection::vec(
                    proptest::prelude::prop_oneof![
                        proptest::prelude::Just(serde_json::json!({"id": "a", "name": "n", "bastion": "b",
                            "target": "10.0.0.1:22", "bind_address": "127.0.0.1", "local_port": 2222, "created_at_ms": 1})),
                        "\\PC{0,20}".prop_map(serde_json::Value::from),
                        proptest::num::i64::ANY.prop_map(serde_json::Value::from),
                        ("\\PC{0,8}", "\\PC{0,8}").prop_map(|(k, v)| serde_json::json!({"name": "x", k: v})),
                    ],
                    0..6,
                ).prop_map(|forwards| serde_json::json!({"version": 1, "forwards": forwards}).to_string()),
            ]) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("state.json");
                fs::write(&path, &text).unwrap();
                let store = Store::new(path.clone());
                let loaded = store.load().unwrap();
                if loaded.notice.as_deref().is_some_and(|n| n.contains("corrupt-")) {
                    return Ok(());
                }
                let entries: Vec<Value> = loaded
                    .forwards
                    .iter()
                    .map(SavedForward::to_entry)
                    .chain(loaded.kept.iter().map(|k| k.entry.clone()))
                    .collect();
                let before: Value = serde_json::from_str(&text).unwrap();
                store.save(&entries).unwrap();
                let after: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
                let count = |v: &Value| v["forwards"].as_array().map_or(0, Vec::len);
                proptest::prop_assert_eq!(count(&after), count(&before));
            }
        }
    }
}

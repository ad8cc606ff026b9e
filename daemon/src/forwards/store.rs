//! The state file: saved forwards (not counters), `{"version": 1, "forwards": [...]}`.
//! Writes are atomic (temp file, fsync, rename, fsync directory). A file we
//! cannot read is moved aside as `state.json.corrupt-<unix ts>` and reported,
//! never silently overwritten.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The only state file version so far.
const VERSION: u32 = 1;

/// One saved forward, as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// A SOCKS5 listener's resource group for VM names; left out when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    forwards: Vec<SavedForward>,
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub forwards: Vec<SavedForward>,
    /// Set when the file was unreadable and moved aside; shown to the user.
    pub notice: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(path: PathBuf) -> Store {
        Store { path }
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
        let problem = match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(state) if state.version == VERSION => {
                return Ok(Loaded {
                    forwards: state.forwards,
                    notice: None,
                });
            }
            Ok(state) => format!("unsupported version {}", state.version),
            Err(e) => e.to_string(),
        };
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
            forwards: Vec::new(),
            notice: Some(notice),
        })
    }

    /// Replaces the file atomically.
    pub fn save(&self, forwards: &[SavedForward]) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(&StateFile {
            version: VERSION,
            forwards: forwards.to_vec(),
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
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("sub/state.json"));
        assert!(store.load().unwrap().forwards.is_empty());
        store.save(&[forward("dev")]).unwrap();
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
    fn unknown_version_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, br#"{"version": 2, "forwards": []}"#).unwrap();
        let loaded = Store::new(path).load().unwrap();
        assert!(loaded.notice.unwrap().contains("version 2"));
    }
}

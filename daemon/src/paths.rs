//! Where the daemon keeps its files: XDG locations found through `directories`;
//! the control socket is found as bastionctl finds it ([`bastion_proto::socket`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bastion_proto::socket;

/// The files of one user's daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Settings, `$XDG_CONFIG_HOME/bastiond/config.toml` (optional file).
    pub config_file: PathBuf,
    /// Saved forwards, `$XDG_STATE_HOME/bastiond/state.json`.
    pub state_file: PathBuf,
    /// Control socket, `$XDG_RUNTIME_DIR/bastiond/bastiond.sock`.
    pub socket: PathBuf,
}

impl Paths {
    /// Resolves the default locations from the environment.
    pub fn resolve() -> Result<Paths> {
        let dirs = directories::ProjectDirs::from("", "", "bastiond")
            .context("cannot determine the home directory (is $HOME set?)")?;
        let state_dir = dirs
            .state_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dirs.data_local_dir().to_path_buf());
        Ok(Paths {
            config_file: dirs.config_dir().join("config.toml"),
            state_file: state_dir.join("state.json"),
            socket: socket::default_path(),
        })
    }

    /// The lock file that makes the daemon single-instance, next to the socket.
    pub fn lock_file(&self) -> PathBuf {
        socket::lock_file_for(&self.socket)
    }
}

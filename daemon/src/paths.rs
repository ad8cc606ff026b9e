//! Where the daemon keeps its files: XDG locations found through `directories`,
//! with `BASTIOND_SOCKET` overriding the control socket for both binaries.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Environment variable that overrides the control socket path.
pub const SOCKET_ENV: &str = "BASTIOND_SOCKET";

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
        let config_file = dirs.config_dir().join("config.toml");
        let state_dir = dirs
            .state_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dirs.data_local_dir().to_path_buf());
        let socket = match std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty()) {
            Some(socket) => PathBuf::from(socket),
            None => match dirs.runtime_dir() {
                Some(dir) => dir.join("bastiond.sock"),
                // Without XDG_RUNTIME_DIR (no systemd login session) fall back to a
                // per-uid directory in /tmp; the daemon makes it 0700 and checks the owner.
                None => std::env::temp_dir()
                    .join(format!("bastiond-{}", nix::unistd::getuid()))
                    .join("bastiond.sock"),
            },
        };
        Ok(Paths {
            config_file,
            state_file: state_dir.join("state.json"),
            socket,
        })
    }

    /// The lock file that makes the daemon single-instance, next to the socket.
    pub fn lock_file(&self) -> PathBuf {
        lock_file_for(&self.socket)
    }
}

/// The lock file guarding `socket`: same directory, `.lock` extension.
pub fn lock_file_for(socket: &Path) -> PathBuf {
    socket.with_extension("lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_sits_next_to_socket() {
        assert_eq!(
            lock_file_for(Path::new("/run/user/1/bastiond/bastiond.sock")),
            PathBuf::from("/run/user/1/bastiond/bastiond.lock")
        );
    }
}

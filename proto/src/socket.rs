//! Where the control socket is, decided the same way by both binaries:
//! `BASTIOND_SOCKET`, else `$XDG_RUNTIME_DIR/bastiond/bastiond.sock`, else a
//! per-uid directory under the system's temporary directory (no login session,
//! e.g. a cron job or a container).

use std::path::{Path, PathBuf};

/// Environment variable that overrides the control socket path.
pub const SOCKET_ENV: &str = "BASTIOND_SOCKET";

/// The socket's file name inside its directory.
const SOCKET_FILE: &str = "bastiond.sock";

/// The control socket's path for this user.
pub fn default_path() -> PathBuf {
    if let Some(socket) = std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty()) {
        return PathBuf::from(socket);
    }
    let runtime_dir = directories::ProjectDirs::from("", "", "bastiond")
        .and_then(|dirs| dirs.runtime_dir().map(Path::to_path_buf));
    match runtime_dir {
        Some(dir) => dir.join(SOCKET_FILE),
        // The daemon creates this directory 0700 and checks its owner.
        None => std::env::temp_dir()
            .join(format!("bastiond-{}", nix::unistd::getuid()))
            .join(SOCKET_FILE),
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

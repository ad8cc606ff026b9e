//! Whether a control socket is this user's own daemon: its directory belongs
//! to the user and no one else can write to it (so no one can swap the
//! socket), and the process serving it runs as the user (SO_PEERCRED). Checked
//! before any byte is sent, since requests carry forwards and `connect` data.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

/// Permission bits that let someone other than the owner create, remove or
/// rename entries in a directory.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Why a socket is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "refusing to use {}: its directory {} belongs to {}, not to you ({}); point --socket or BASTIOND_SOCKET at your own daemon's socket",
        socket.display(), dir.display(), user_text(*owner), user_text(*uid)
    )]
    ForeignDirectory {
        socket: PathBuf,
        dir: PathBuf,
        owner: u32,
        uid: u32,
    },
    #[error(
        "refusing to use {}: its directory {} is writable by other users (mode {mode:o}), so anyone could replace the socket; use a private directory (chmod 700) or the default socket",
        socket.display(), dir.display()
    )]
    SharedDirectory {
        socket: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "refusing to talk to {}: it is served by {}, not by you ({}); nothing was sent. Point --socket or BASTIOND_SOCKET at your own daemon's socket",
        socket.display(), user_text(*owner), user_text(*uid)
    )]
    ForeignDaemon {
        socket: PathBuf,
        owner: u32,
        uid: u32,
    },
    #[error("cannot check who owns {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Checks the directory holding `socket` (before connecting).
pub fn check_directory(socket: &Path) -> Result<(), TrustError> {
    let dir = match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        // No directory means no daemon: connecting reports that clearly.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(TrustError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Err(TrustError::ForeignDirectory {
            socket: socket.to_path_buf(),
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(TrustError::SharedDirectory {
            socket: socket.to_path_buf(),
            dir: dir.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Checks that the server at the other end of `stream` runs as this user.
pub fn check_server(socket: &Path, stream: &UnixStream) -> Result<(), TrustError> {
    let cred = stream.peer_cred().map_err(|source| TrustError::Io {
        path: socket.to_path_buf(),
        source,
    })?;
    let uid = nix::unistd::getuid().as_raw();
    if cred.uid() != uid {
        return Err(TrustError::ForeignDaemon {
            socket: socket.to_path_buf(),
            owner: cred.uid(),
            uid,
        });
    }
    Ok(())
}

/// `uid 1000 (alice)`, or just the uid when it has no name.
fn user_text(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_directories_pass_shared_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bastiond.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check_directory(&socket).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let error = check_directory(&socket).unwrap_err();
        assert!(
            matches!(error, TrustError::SharedDirectory { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("writable by other users"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn our_own_server_passes() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let stream = UnixStream::connect(&socket).await.unwrap();
        check_server(&socket, &stream).unwrap();
    }
}

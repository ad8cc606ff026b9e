//! This process as the user's one daemon: the per-user lock, the control
//! socket's directory (the user's own, 0700) and the socket itself (0600).
//! A second daemon exits with a message naming the first, instead of
//! stealing its socket.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::paths::Paths;

/// Held while the daemon runs: the lock, and the socket removed on drop.
pub struct Instance {
    socket: PathBuf,
    _lock: Flock<fs::File>,
}

impl Instance {
    /// Takes the lock and binds the control socket.
    pub fn acquire(paths: &Paths) -> Result<(Instance, UnixListener)> {
        let lock = lock(paths)?;
        let listener = bind_socket(&paths.socket)?;
        let instance = Instance {
            socket: paths.socket.clone(),
            _lock: lock,
        };
        Ok((instance, listener))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Before the lock goes: a new daemon must not see our socket as its own.
        let _ = fs::remove_file(&self.socket);
    }
}

/// Takes the per-user lock next to the socket; a second daemon exits here.
fn lock(paths: &Paths) -> Result<Flock<fs::File>> {
    let dir = paths.socket.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Another user's directory could swap our socket or lock under us.
    let owner = fs::metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?
        .uid();
    let uid = nix::unistd::getuid().as_raw();
    if owner != uid {
        bail!(
            "{} belongs to uid {owner}, not to you (uid {uid}); choose another socket with --socket or BASTIOND_SOCKET",
            dir.display()
        );
    }
    let lock_file = paths.lock_file();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_file)
        .with_context(|| format!("cannot open lock file {}", lock_file.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            bail!(
                "bastiond is already running (pid {}, socket {})",
                if pid.is_empty() { "unknown" } else { pid },
                paths.socket.display()
            );
        }
        Err((_, e)) => bail!("cannot lock {}: {e}", lock_file.display()),
    };
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())?;
    Ok(lock)
}

/// Binds the control socket (0600). Holding the lock, any socket file already
/// there was left by a daemon that died: remove it.
fn bind_socket(socket: &Path) -> Result<std::os::unix::net::UnixListener> {
    match fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(socket = %socket.display(), "removing stale socket left by a previous daemon");
            fs::remove_file(socket)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            socket.display()
        ),
        Err(_) => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot bind control socket {}", socket.display()))?;
    fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Many forwards × many connections: allow as many descriptors as the hard limit.
pub fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            config_file: dir.join("config.toml"),
            state_file: dir.join("state.json"),
            socket: dir.join("run/bastiond.sock"),
        }
    }

    #[test]
    fn a_second_daemon_is_refused_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let (first, _listener) = Instance::acquire(&paths).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&paths.socket), 0o600);
        assert_eq!(mode(paths.socket.parent().unwrap()), 0o700);
        let error = format!("{:#}", Instance::acquire(&paths).err().unwrap());
        assert!(
            error.contains("already running") && error.contains(&std::process::id().to_string()),
            "{error}"
        );
        drop(first);
        assert!(!paths.socket.exists(), "the socket goes with the daemon");
        Instance::acquire(&paths).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced_but_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        fs::create_dir_all(paths.socket.parent().unwrap()).unwrap();
        // A crashed daemon leaves its socket file behind.
        drop(UnixListener::bind(&paths.socket).unwrap());
        let (instance, _listener) = Instance::acquire(&paths).unwrap();
        drop(instance);
        fs::write(&paths.socket, "not a socket").unwrap();
        let error = format!("{:#}", Instance::acquire(&paths).err().unwrap());
        assert!(error.contains("is not a socket"), "{error}");
        assert_eq!(fs::read_to_string(&paths.socket).unwrap(), "not a socket");
    }

    #[test]
    fn another_users_directory_is_refused() {
        if !nix::unistd::getuid().is_root() {
            return; // only root can hand a directory to another user
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let run = paths.socket.parent().unwrap();
        fs::create_dir_all(run).unwrap();
        std::os::unix::fs::chown(run, Some(65534), None).unwrap();
        let error = format!("{:#}", Instance::acquire(&paths).err().unwrap());
        assert!(error.contains("uid 65534"), "{error}");
    }
}

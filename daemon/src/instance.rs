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

/// Permission bits that let other users add, remove or rename entries.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Held while the daemon runs: the lock, and the socket removed on drop.
pub struct Instance {
    socket: PathBuf,
    _lock: Flock<fs::File>,
    /// Two daemons on one state file would overwrite each other's forwards,
    /// even with different sockets.
    _state_lock: Flock<fs::File>,
}

impl Instance {
    /// Takes the lock and binds the control socket.
    pub fn acquire(paths: &Paths) -> Result<(Instance, UnixListener)> {
        let lock = lock(paths)?;
        let state_lock = lock_state(&paths.state_file)?;
        let listener = bind_socket(&paths.socket)?;
        let instance = Instance {
            socket: paths.socket.clone(),
            _lock: lock,
            _state_lock: state_lock,
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
    check_directory(dir)?;
    let lock_file = paths.lock_file();
    take(&lock_file, |pid| {
        format!(
            "bastiond is already running (pid {pid}, socket {})",
            paths.socket.display()
        )
    })
}

/// Takes the lock of the state file, `<state file>.lock` beside it.
fn lock_state(state_file: &Path) -> Result<Flock<fs::File>> {
    let dir = state_file.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut name = state_file.as_os_str().to_owned();
    name.push(".lock");
    take(Path::new(&name), |pid| {
        format!(
            "another bastiond (pid {pid}) already uses the state file {}; stop it, or give this one its own with --state-file",
            state_file.display()
        )
    })
}

/// Locks `lock_file` exclusively and writes our pid into it; when another
/// process holds it, fails with `busy(its pid)`.
fn take(lock_file: &Path, busy: impl FnOnce(&str) -> String) -> Result<Flock<fs::File>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_file)
        .with_context(|| format!("cannot open lock file {}", lock_file.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            bail!(busy(if pid.is_empty() { "unknown" } else { pid }));
        }
        Err((_, e)) => bail!("cannot lock {}: {e}", lock_file.display()),
    };
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())?;
    Ok(lock)
}

/// Another user's directory, or one others may write to, could swap our
/// socket or lock under us (the `/tmp` fallback is the case that matters).
/// Not following symlinks: a link planted at the fallback path is refused.
fn check_directory(dir: &Path) -> Result<()> {
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    let owner = meta.uid();
    let uid = nix::unistd::getuid().as_raw();
    if !meta.is_dir() {
        bail!(
            "{} is not a directory (a symlink?); refusing to put the control socket there; choose another socket with BASTIOND_SOCKET",
            dir.display()
        );
    }
    if owner != uid {
        bail!(
            "{} belongs to uid {owner}, not to you (uid {uid}); choose another socket with BASTIOND_SOCKET",
            dir.display()
        );
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        bail!(
            "{} is writable by other users (mode {:o}); run `chmod 700 {}` or choose another socket with BASTIOND_SOCKET",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        );
    }
    Ok(())
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
    fn a_second_daemon_on_the_same_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first_paths = paths(dir.path());
        let (_first, _listener) = Instance::acquire(&first_paths).unwrap();
        let second = Paths {
            socket: dir.path().join("run2/bastiond.sock"),
            ..first_paths.clone()
        };
        let error = format!("{:#}", Instance::acquire(&second).err().unwrap());
        assert!(
            error.contains("state file") && error.contains(&std::process::id().to_string()),
            "{error}"
        );
        assert!(!second.socket.exists(), "the second daemon binds nothing");
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

    #[test]
    fn a_shared_or_linked_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let run = paths.socket.parent().unwrap();
        fs::create_dir_all(run).unwrap();
        fs::set_permissions(run, fs::Permissions::from_mode(0o1777)).unwrap();
        let error = format!("{:#}", Instance::acquire(&paths).err().unwrap());
        assert!(error.contains("writable by other users"), "{error}");
        fs::remove_dir(run).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&elsewhere)
            .unwrap();
        std::os::unix::fs::symlink(&elsewhere, run).unwrap();
        let error = format!("{:#}", Instance::acquire(&paths).err().unwrap());
        assert!(error.contains("not a directory"), "{error}");
    }
}

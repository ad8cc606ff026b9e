//! `bastiond`: parses flags, sets up logging, takes the per-user lock, binds
//! the control socket and hands over to [`bastiond::daemon::run`].

use std::fs;
use std::io::{IsTerminal, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bastiond::{daemon, paths::Paths};
use clap::Parser;
use nix::fcntl::{Flock, FlockArg};

/// The last bound on exiting, after the daemon's own bounded shutdown.
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// Log filter when neither --log-level nor RUST_LOG is given.
const DEFAULT_LOG_FILTER: &str = "info";

/// A per-user daemon that keeps Azure Bastion tunnels to private IPs open.
///
/// Control it with `bastionctl`. Files: $XDG_CONFIG_HOME/bastiond/config.toml
/// (settings), $XDG_STATE_HOME/bastiond/state.json (saved forwards),
/// $XDG_RUNTIME_DIR/bastiond/bastiond.sock (control socket, or $BASTIOND_SOCKET).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Settings file [default: $XDG_CONFIG_HOME/bastiond/config.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control socket [default: $BASTIOND_SOCKET or $XDG_RUNTIME_DIR/bastiond/bastiond.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// State file with the saved forwards [default: $XDG_STATE_HOME/bastiond/state.json]
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Log filter such as "debug" or "bastiond=debug,info" [default: $RUST_LOG or "info"]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(args.log_level.as_deref()) {
        eprintln!("bastiond: {e:#}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bastiond: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: Option<&str>) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?
        }
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn run(args: Args) -> Result<()> {
    // Everything the daemon creates is private to its user.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    raise_file_limit();
    let mut paths = Paths::resolve()?;
    if let Some(config) = args.config {
        paths.config_file = config;
    }
    if let Some(state_file) = args.state_file {
        paths.state_file = state_file;
    }
    if let Some(socket) = args.socket {
        paths.socket = socket;
    }
    let _lock = lock(&paths)?;
    let listener = bind_socket(&paths.socket)?;
    tracing::info!(socket = %paths.socket.display(), "control socket bound");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let options = daemon::Options {
        config_file: paths.config_file.clone(),
        state_file: paths.state_file.clone(),
    };
    let result = runtime.block_on(async {
        let listener =
            tokio::net::UnixListener::from_std(listener).context("using the control socket")?;
        daemon::run(options, listener, shutdown_signal()?).await
    });
    let _ = fs::remove_file(&paths.socket);
    // Every task has been cancelled and waited for (bounded); do not let a
    // straggler hold the exit up.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    result
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
fn raise_file_limit() {
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

/// Completes on SIGTERM or SIGINT. Registered before the daemon starts, so
/// a signal during start-up is a clean shutdown too.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

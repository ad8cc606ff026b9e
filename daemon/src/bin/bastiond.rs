//! `bastiond`: parses flags, sets up logging, becomes the user's one daemon
//! ([`bastiond::instance`]) and hands over to [`bastiond::daemon::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bastiond::instance::{self, Instance};
use bastiond::{daemon, paths::Paths};
use clap::Parser;

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
    bastiond::control::reload::ignore_sighup_until_caught()?;
    instance::raise_file_limit();
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
    let (instance, listener) = Instance::acquire(&paths)?;
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
        daemon::run(options, listener, daemon::shutdown_signal()?).await
    });
    drop(instance);
    // Every task has been cancelled and waited for (bounded); do not let a
    // straggler hold the exit up.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    result
}

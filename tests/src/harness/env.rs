//! [`TestEnv`]: one isolated world per test. A temp dir holds the daemon's
//! XDG directories, a HOME, the emulator's state dir and the daemon logs;
//! the emulator runs in-process and its config.toml is the daemon's.
//! When it ends it replays the tail of every daemon log (libtest shows it
//! for failed tests only) unless told to stay [`quiet`](TestEnv::quiet);
//! `BASTION_E2E_KEEP=1` keeps the temp dir. [`TestEnv::start_with_latency`]
//! puts a WAN round trip between the emulator and everything else.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use tempfile::TempDir;

use crate::emulator::{Emulator, EmulatorConfig, Ledger};
use crate::harness::bins;

/// Unix socket paths must fit in `sun_path` (108 bytes); keep a margin.
const MAX_SOCKET_PATH: usize = 100;
/// Short root for temp dirs: `$TMPDIR` may be long enough to break socket paths.
const TEMP_ROOT: &str = "/tmp";
/// Set (to anything) to keep each test's temp dir for a post-mortem.
const KEEP_VAR: &str = "BASTION_E2E_KEEP";
/// Daemon log lines replayed when an env ends; libtest shows them only for
/// failed tests, which is when they are wanted.
const LOG_TAIL_LINES: usize = 60;

/// Variables of the developer's or CI's environment that would change what
/// the daemon does (its socket, credentials, proxies, supervision).
const SCRUBBED_VARS: [&str; 10] = [
    "BASTIOND_SOCKET",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub struct TestEnv {
    /// The emulator playing Entra, ARM and the Bastion.
    pub emulator: Emulator,
    dir: TempDir,
    /// Distinct names for the log and notify socket of each daemon started.
    daemons: AtomicUsize,
    logs: Mutex<Vec<PathBuf>>,
    /// Whether dropping the env replays the daemon logs to stderr.
    replay_logs: bool,
}

impl TestEnv {
    /// Waits until the emulator holds no live Bastion session.
    pub async fn wait_no_live_sessions(&self) -> anyhow::Result<()> {
        self.emulator
            .wait_for(
                "no live sessions",
                |l| l.live_sessions == 0,
                crate::harness::STEP_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Waits until every Bastion session is deleted and every WebSocket
    /// closed; the ledger then, for further checks.
    pub async fn wait_all_ended(&self, what: &str) -> anyhow::Result<Ledger> {
        self.emulator
            .wait_for(
                what,
                |l| l.live_sessions == 0 && l.open_websockets == 0,
                crate::harness::STEP_TIMEOUT,
            )
            .await
    }

    /// An emulator with its defaults (one bastion "hub").
    pub async fn start() -> anyhow::Result<TestEnv> {
        Self::start_with(|_| {}).await
    }

    /// An emulator `rtt` away from the daemon, bastionctl and the fake az
    /// (see [`EmulatorConfig::latency`]); its VNet services stay local to it.
    pub async fn start_with_latency(rtt: Duration) -> anyhow::Result<TestEnv> {
        Self::start_with(|config| config.latency = rtt).await
    }

    /// An emulator configured by `customize` (bastions, token lifetime, ...).
    pub async fn start_with(
        customize: impl FnOnce(&mut EmulatorConfig),
    ) -> anyhow::Result<TestEnv> {
        let mut dir = tempfile::Builder::new()
            .prefix("bt")
            .tempdir_in(TEMP_ROOT)
            .context("cannot create the test's temp dir")?;
        dir.disable_cleanup(std::env::var_os(KEEP_VAR).is_some());
        let mut config = EmulatorConfig::new(dir.path().join("emu"));
        config.emulator_exe = Some(bins::path("bastion-emulator")?);
        customize(&mut config);
        let emulator = Emulator::start(config)
            .await
            .context("cannot start the emulator")?;
        let env = TestEnv {
            emulator,
            dir,
            daemons: AtomicUsize::new(0),
            logs: Mutex::new(Vec::new()),
            replay_logs: true,
        };
        for sub in ["run", "config/bastiond", "state", "home"] {
            std::fs::create_dir_all(env.root().join(sub))?;
        }
        // The runtime dir must be private, as a login session's would be.
        set_mode(&env.runtime_dir(), 0o700)?;
        std::fs::copy(&env.emulator.info().config_file, env.config_file())
            .context("cannot copy the emulator's config.toml")?;
        let socket = env.socket();
        ensure!(
            socket.as_os_str().len() < MAX_SOCKET_PATH,
            "socket path too long: {}",
            socket.display()
        );
        Ok(env)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.root().join("run")
    }

    pub fn config_home(&self) -> PathBuf {
        self.root().join("config")
    }

    pub fn state_home(&self) -> PathBuf {
        self.root().join("state")
    }

    /// `$XDG_CONFIG_HOME/bastiond/config.toml`, a copy of the emulator's.
    pub fn config_file(&self) -> PathBuf {
        self.config_home().join("bastiond").join("config.toml")
    }

    /// Appends `extra` (TOML) to the daemon's settings file.
    pub fn add_settings(&self, extra: &str) -> anyhow::Result<()> {
        let mut config = std::fs::read_to_string(self.config_file())?;
        config.push_str(extra);
        std::fs::write(self.config_file(), config)?;
        Ok(())
    }

    /// Puts `lines` (TOML) at the top of the `[bastions.NAME]` table.
    pub fn set_bastion_settings(&self, name: &str, lines: &str) -> anyhow::Result<()> {
        let table = format!("[bastions.{name}]\n");
        let config = std::fs::read_to_string(self.config_file())?;
        ensure!(config.contains(&table), "no {table} in {config}");
        let config = config.replace(&table, &format!("{table}{lines}\n"));
        std::fs::write(self.config_file(), config)?;
        Ok(())
    }

    /// A server of the test's own, reachable from the bastions at `ip:port`.
    pub async fn mapped_server(
        &self,
        ip: std::net::IpAddr,
        port: u16,
    ) -> anyhow::Result<tokio::net::TcpListener> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.emulator.map_target(ip, port, listener.local_addr()?);
        Ok(listener)
    }

    /// `$XDG_STATE_HOME/bastiond/state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.state_home().join("bastiond").join("state.json")
    }

    /// The default socket both binaries derive from `XDG_RUNTIME_DIR`.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("bastiond").join("bastiond.sock")
    }

    /// The fake `az`'s directory, first on the children's PATH.
    pub fn fake_az_dir(&self) -> PathBuf {
        let info = self.emulator.info();
        info.az_path
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| info.config_file.with_file_name("bin"), Path::to_path_buf)
    }

    /// Environment of every child (daemon, bastionctl, ssh): isolated XDG
    /// dirs and HOME, the fake az first on PATH, no proxies.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        for var in SCRUBBED_VARS {
            cmd.env_remove(var);
        }
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("AZURE_") {
                cmd.env_remove(var);
            }
        }
        let mut path = OsString::from(self.fake_az_dir());
        if let Some(system) = std::env::var_os("PATH") {
            path.push(":");
            path.push(system);
        }
        cmd.env("PATH", path)
            .env("HOME", self.root().join("home"))
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_STATE_HOME", self.state_home())
            .env("XDG_DATA_HOME", self.root().join("home/.local/share"))
            .env("XDG_CACHE_HOME", self.root().join("home/.cache"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .kill_on_drop(true);
    }

    /// A fresh, distinct number for each daemon started in this env.
    pub(crate) fn next_daemon(&self) -> usize {
        self.daemons.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record_log(&self, path: PathBuf) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path);
    }

    /// No replay of the daemon logs when this env ends: for a caller that
    /// keeps them elsewhere (the bench, whose output is its table).
    pub fn quiet(&mut self) {
        self.replay_logs = false;
    }

    /// Everything every daemon of this env wrote to stderr, in start order.
    pub fn all_logs(&self) -> String {
        let paths = self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        paths
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !self.replay_logs {
            return;
        }
        let paths = self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("--- {} (last {} lines) ---", path.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

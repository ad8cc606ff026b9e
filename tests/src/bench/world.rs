//! The world one run measures: an in-process emulator, the real `bastiond`
//! (release build, via the e2e harness: temp XDG dirs, the fake az on PATH,
//! READY=1), its forwards added with the real `bastionctl`, the bare client
//! (the `bench-bare` process, or in this process with `--bare-in-process`).
//! Each [`Path`] has its [`Routes`] to the emulator's echo, source and sink.
//! In WAN mode (`--rtt-ms`) the emulator sits behind a delay line, and so do
//! the services direct TCP reaches (there is no Bastion in between to pay it).

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bare::Bare;
use super::bare_child::BareChild;
use super::log::BenchLog;
use super::options::Options;
use super::resources::Process;
use crate::emulator::{ECHO_IP, INFO_FILE, SINK_IP, SOURCE_IP, latency_proxy};
use crate::harness::net::local;
use crate::harness::{Daemon, TestEnv};

/// The daemon logs as a user's would by default; debug logs would bill every
/// connection for formatting.
const DAEMON_LOG_LEVEL: &str = "info";
/// Ports of the targets: echo, chargen and discard by tradition (the VNet serves any).
const ECHO_PORT: u16 = 7;
const SOURCE_PORT: u16 = 19;
const SINK_PORT: u16 = 9;
/// Waiting for every Bastion session to end: the daemon lingers 2 s after a
/// client's EOF, and 1000 sessions take a moment to DELETE.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The three ways a workload reaches the emulator's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// (a) a bastiond forward.
    Daemon,
    /// (b) the bare protocol client, no daemon.
    Bare,
    /// (c) direct TCP, no tunnel.
    Direct,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Daemon, Path::Bare, Path::Direct];

    fn index(self) -> usize {
        match self {
            Path::Daemon => 0,
            Path::Bare => 1,
            Path::Direct => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Path::Daemon => "(a) bastiond",
            Path::Bare => "(b) bare",
            Path::Direct => "(c) direct",
        }
    }
}

/// `max_sessions` for the bench's bastion: above the largest concurrency level.
const BENCH_MAX_SESSIONS: u32 = 10_000;

/// Where a path's workloads connect.
#[derive(Clone, Copy, Debug)]
pub struct Routes {
    pub echo: SocketAddr,
    pub source: SocketAddr,
    pub sink: SocketAddr,
}

pub struct World {
    pub env: TestEnv,
    pub daemon: Daemon,
    /// The daemon's process.
    pub process: Process,
    /// The bare client's process, when it has one of its own.
    pub bare_process: Option<Process>,
    /// The `bench-bare` child; None when (b) runs in this process
    /// (`--bare-in-process`, the protocol's absolute floor).
    bare_child: Option<BareChild>,
    routes: [Routes; 3],
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// The echo target as the daemon knows it, for `bastionctl connect`.
pub fn echo_target() -> String {
    format!("{ECHO_IP}:{ECHO_PORT}")
}

impl World {
    /// Emulator (behind the WAN delay line if `opts` asks), daemon (no
    /// forwards yet) and the bare client; logs go to `log`.
    pub async fn start(opts: &Options, log: &BenchLog) -> anyhow::Result<World> {
        let (bare_in_process, tunnel) = (opts.bare_in_process, &opts.tunnel);
        let rtt = opts.wan_rtt().unwrap_or_default();
        let mut env = TestEnv::start_with_latency(rtt)
            .await
            .context("starting the emulator")?;
        // The daemon's logs go to the bench log (`stop`), not to the terminal.
        env.quiet();
        // The concurrency workload holds up to 1000 tunnels open at once to
        // measure the daemon, not a Bastion's session limit (the emulator has
        // none): lift the daemon's `max_sessions` cap for it.
        let mut settings = std::fs::read_to_string(env.config_file())?.replace(
            "[bastions.hub]\n",
            &format!("[bastions.hub]\nmax_sessions = {BENCH_MAX_SESSIONS}\n"),
        );
        if !tunnel.is_empty() {
            settings.push_str(&format!("\n[tunnel]\n{}\n", tunnel.join("\n")));
        }
        std::fs::write(env.config_file(), settings)?;
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let daemon = Daemon::start_with(&env, &["--log-level", DAEMON_LOG_LEVEL], &[])
            .await
            .context("starting bastiond")?;
        let process = Process::new(daemon.pid());
        let targets = [
            SocketAddrV4::new(ECHO_IP, ECHO_PORT),
            SocketAddrV4::new(SOURCE_IP, SOURCE_PORT),
            SocketAddrV4::new(SINK_IP, SINK_PORT),
        ];
        let (bare_child, addrs) = if bare_in_process {
            let bare = Bare::new(env.emulator.info()).await?;
            let mut addrs = Vec::new();
            for target in targets {
                addrs.push(
                    bare.forward(*target.ip(), target.port(), &tasks, &cancel)
                        .await?,
                );
            }
            (None, addrs)
        } else {
            let info = env.emulator.info().config_file.with_file_name(INFO_FILE);
            let (child, addrs) = BareChild::start(&info, &targets, log.stdio()).await?;
            (Some(child), addrs)
        };
        let bare_process = bare_child.as_ref().map(|c| Process::new(c.pid()));
        let [echo, source, sink] = addrs[..] else {
            anyhow::bail!("the bare client listens on {addrs:?}");
        };
        let bare_routes = Routes { echo, source, sink };
        let services = env.emulator.info().services;
        let mut direct = Routes {
            echo: services.echo,
            source: services.source,
            sink: services.sink,
        };
        if let Some(rtt) = opts.wan_rtt() {
            for addr in [&mut direct.echo, &mut direct.source, &mut direct.sink] {
                *addr = latency_proxy(*addr, rtt, &tasks, &cancel).await?;
            }
        }
        Ok(World {
            env,
            daemon,
            process,
            bare_process,
            bare_child,
            // Daemon routes are filled in by `add_forwards`.
            routes: [direct, bare_routes, direct],
            tasks,
            cancel,
        })
    }

    /// Adds the daemon's echo, source and sink forwards with `bastionctl`.
    pub async fn add_forwards(&mut self) -> anyhow::Result<()> {
        let add = |target: String, name: &'static str| {
            let env = &self.env;
            async move {
                let port = env.add_forward(&target, &["--name", name]).await?;
                anyhow::Ok(local(port))
            }
        };
        let echo = add(format!("{ECHO_IP}:{ECHO_PORT}"), "bench-echo").await?;
        let source = add(format!("{SOURCE_IP}:{SOURCE_PORT}"), "bench-source").await?;
        let sink = add(format!("{SINK_IP}:{SINK_PORT}"), "bench-sink").await?;
        self.routes[Path::Daemon.index()] = Routes { echo, source, sink };
        Ok(())
    }

    /// `n` more forwards (to the echo, on other ports) that carry no traffic.
    pub async fn add_idle_forwards(&self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let target = format!("{ECHO_IP}:{}", 1000 + i);
            let name = format!("bench-idle-{i}");
            self.env.add_forward(&target, &["--name", &name]).await?;
        }
        Ok(())
    }

    /// The process doing the forwarding on `path`, if it is one of its own.
    pub fn process_of(&self, path: Path) -> Option<Process> {
        match path {
            Path::Daemon => Some(self.process),
            Path::Bare => self.bare_process,
            Path::Direct => None,
        }
    }

    pub fn routes(&self, path: Path) -> Routes {
        self.routes[path.index()]
    }

    /// Waits until the emulator has no live session and no open WebSocket,
    /// so one measurement's teardown never overlaps the next.
    pub async fn settle(&self) -> anyhow::Result<()> {
        self.env
            .emulator
            .wait_for(
                "every Bastion session to end",
                |l| l.live_sessions == 0 && l.open_websockets == 0,
                SETTLE_TIMEOUT,
            )
            .await
            .map(drop)
    }

    /// SIGTERM to the daemon (it deletes its sessions first), then the bare
    /// client, the sink and the emulator; returns the sessions left behind.
    /// The daemon's stderr goes to `log`, under `tag`.
    pub async fn stop(mut self, log: &BenchLog, tag: &str) -> anyhow::Result<u64> {
        let status = self.daemon.stop().await;
        log.line(&format!(
            "--- {tag}: bastiond stderr ---\n{}",
            self.env.all_logs().trim_end()
        ));
        let status = status?;
        anyhow::ensure!(status.success(), "bastiond exited with {status}");
        if let Some(child) = self.bare_child {
            child.stop().await?;
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let leaked = self.env.emulator.ledger().live_sessions;
        // Dropping the env cancels the emulator's tasks and removes its temp dirs.
        drop(self.env);
        Ok(leaked)
    }
}

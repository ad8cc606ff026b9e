//! `bench --soak MINUTES`: the daemon under hours of ordinary abuse, in
//! minutes. Connections open and close at a steady rate through its
//! forwards, a mix of echo, download, slow-reader and typing connections (a
//! terminal's keystrokes for seconds), while the
//! emulator answers every fifth upgrade with HTTP after the 101 (a retry
//! covers that) and now and then drops every live WebSocket (nothing can
//! cover that for a connection that has carried bytes). At the start and the
//! end, with no traffic: the daemon's RSS, open descriptors (by kind, so a
//! difference says what it is), threads, runtime tasks, active connections
//! and the live Bastion sessions. Not run in CI.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::descriptors::Descriptors;
use super::log::BenchLog;
use super::options::Options;
use super::resources::Process;
use super::world::{Path, World};
use crate::emulator::{DropMode, HandshakeQuirk};
use crate::harness::net::{echo_roundtrip, payload, source_read};

/// One new connection this often: 20 a second, a busy developer's day
/// (IDE reconnects, `git` over ssh, port checks) compressed.
const PACE: Duration = Duration::from_millis(50);
/// Every this many upgrades, HTTP after the 101 (retried unseen).
const FLAKY_UPGRADE_EVERY: u64 = 5;
/// How often every live WebSocket is dropped.
const DROP_EVERY: Duration = Duration::from_secs(20);
/// Traffic before the start sample: allocator arenas, pools and spares warm.
const WARM_UP: Duration = Duration::from_secs(10);
/// Bytes per echo and per download connection.
const ECHO_BYTES: usize = 64 * 1024;
const DOWNLOAD_BYTES: u64 = 256 * 1024;
/// A slow reader reads this much at a time, pausing in between.
const SLOW_READ: usize = 4096;
const SLOW_PAUSE: Duration = Duration::from_millis(2);
const SLOW_BYTES: u64 = 512 * 1024;
/// A typing connection sends a keystroke this often and waits for its echo,
/// for [`TYPING_FOR`]: long enough that every drop of the WebSockets finds a
/// dozen of them in flight, so the soak sees that fault, not only its timer.
const KEYSTROKE_EVERY: Duration = Duration::from_millis(100);
const TYPING_FOR: Duration = Duration::from_secs(3);
/// The kinds of connection, taken in turn.
const KINDS: u64 = 5;
/// After the last connection, how long the daemon may take to close what it
/// keeps for the next burst: its HTTPS pool closes connections idle for 90 s
/// (`POOL_IDLE_TIMEOUT` in daemon/src/azure/http.rs), reaped on a timer of
/// that period, so up to twice that, plus a margin.
const IDLE_DRAIN_WITHIN: Duration = Duration::from_secs(200);
/// How often the descriptors are counted while waiting for that.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What the daemon holds, at rest.
#[derive(Debug, Clone)]
pub struct Sample {
    pub rss_kib: u64,
    pub fds: Descriptors,
    pub threads: u64,
    pub tasks: u64,
    pub active_connections: u64,
    pub live_sessions: u64,
}

/// One row of the report: a figure of a sample, as printed.
type Figure = fn(&Sample) -> String;

/// A soak's outcome.
#[derive(Debug)]
pub struct SoakReport {
    pub minutes: u64,
    pub start: Sample,
    pub end: Sample,
    /// Once the descriptors came back to the start's count (or
    /// [`IDLE_DRAIN_WITHIN`] passed), and how long after `end` that was.
    pub idle: Sample,
    pub idle_after: Duration,
    pub connections: u64,
    /// Failed while a drop of every WebSocket happened during their life.
    pub cut_by_drops: u64,
    /// Failed with no drop to blame: lost to a fault a retry should cover.
    pub lost: Vec<String>,
}

impl SoakReport {
    pub fn table(&self) -> String {
        let idle_column = format!("+{} s idle", self.idle_after.as_secs());
        let row = |name: &str, values: [String; 3]| {
            let [a, b, c] = values;
            format!("{name:<22}{a:>12}{b:>12}{c:>14}\n")
        };
        let samples = [&self.start, &self.end, &self.idle];
        let each = |figure: Figure| samples.map(figure);
        let mut out = format!(
            "soak: {} minutes, {} connections, {} cut by dropped WebSockets, {} lost\n",
            self.minutes,
            self.connections,
            self.cut_by_drops,
            self.lost.len()
        );
        out.push_str(&row("", ["start".into(), "end".into(), idle_column]));
        let figures: [(&str, Figure); 6] = [
            ("RSS (KiB)", |s| s.rss_kib.to_string()),
            ("open descriptors", |s| s.fds.total().to_string()),
            ("threads", |s| s.threads.to_string()),
            ("runtime tasks", |s| s.tasks.to_string()),
            ("active connections", |s| s.active_connections.to_string()),
            ("live sessions", |s| s.live_sessions.to_string()),
        ];
        for (name, figure) in figures {
            out.push_str(&row(name, each(figure)));
        }
        for (when, sample) in [("at the end", &self.end), ("once idle", &self.idle)] {
            for change in sample.fds.changes_since(&self.start.fds) {
                out.push_str(&format!("descriptors {when}: {change}\n"));
            }
        }
        for lost in self.lost.iter().take(10) {
            out.push_str(&format!("lost: {lost}\n"));
        }
        out
    }
}

/// Runs the soak for `minutes` on a fresh world.
pub async fn run(opts: &Options, minutes: u64, log: &BenchLog) -> anyhow::Result<SoakReport> {
    let mut world = World::start(opts, log).await?;
    world.add_forwards().await?;
    let faults = world.env.emulator.faults();
    faults.set_handshake_quirk_every(Some(HandshakeQuirk::HttpTextAfter101), FLAKY_UPGRADE_EVERY);
    let drops = Arc::new(AtomicU64::new(0));
    let mut traffic = Traffic::default();
    traffic.run(&world, &drops, WARM_UP, false).await;
    let start = sample(&world).await?;
    traffic = Traffic::default();
    traffic
        .run(&world, &drops, Duration::from_secs(minutes * 60), true)
        .await;
    let end = sample(&world).await?;
    let (idle, idle_after) = sample_once_idle(&world, &start).await?;
    let leaked = world.stop(log, "soak").await?;
    anyhow::ensure!(
        leaked == 0,
        "{leaked} Bastion sessions left after the daemon stopped"
    );
    Ok(SoakReport {
        minutes,
        start,
        end,
        idle,
        idle_after,
        connections: traffic.connections,
        cut_by_drops: traffic.cut_by_drops,
        lost: traffic.lost,
    })
}

/// The daemon at rest: once every session has ended.
async fn sample(world: &World) -> anyhow::Result<Sample> {
    world.settle().await?;
    let process = Process::new(world.daemon.pid());
    let status = world.env.ctl_json(&["status", "--json"]).await?;
    let (rss_kib, threads) = process.rss_kib_and_threads()?;
    Ok(Sample {
        rss_kib,
        fds: Descriptors::of(world.daemon.pid())?,
        threads,
        tasks: status["tasks"]
            .as_u64()
            .context("status --json has no tasks")?,
        active_connections: status["active_connections"].as_u64().unwrap_or_default(),
        live_sessions: world.env.emulator.ledger().live_sessions,
    })
}

/// The daemon once its descriptors are back to `start`'s count, or after
/// [`IDLE_DRAIN_WITHIN`]: what it keeps for the next burst is gone by then,
/// so what remains is a leak.
async fn sample_once_idle(world: &World, start: &Sample) -> anyhow::Result<(Sample, Duration)> {
    let waiting = Instant::now();
    while waiting.elapsed() < IDLE_DRAIN_WITHIN
        && Descriptors::count(world.daemon.pid())? > start.fds.total()
    {
        tokio::time::sleep(IDLE_POLL).await;
    }
    let waited = waiting.elapsed();
    Ok((sample(world).await?, waited))
}

#[derive(Default)]
struct Traffic {
    connections: u64,
    cut_by_drops: u64,
    lost: Vec<String>,
}

impl Traffic {
    /// Opens a connection every [`PACE`] for `length`, dropping every
    /// WebSocket every [`DROP_EVERY`] if `drop_websockets`; waits for all.
    async fn run(
        &mut self,
        world: &World,
        drops: &Arc<AtomicU64>,
        length: Duration,
        drop_websockets: bool,
    ) {
        let routes = world.routes(Path::Daemon);
        let faults = world.env.emulator.faults();
        let started = Instant::now();
        let mut pace = tokio::time::interval(PACE);
        let mut next_drop = started + DROP_EVERY;
        // Every connection's outcome, counted at the end (a handle is small).
        let mut running = Vec::new();
        while started.elapsed() < length {
            pace.tick().await;
            if drop_websockets && Instant::now() >= next_drop {
                drops.fetch_add(1, Ordering::SeqCst);
                faults.drop_all_websockets(DropMode::Abrupt);
                next_drop += DROP_EVERY;
            }
            let n = self.connections;
            self.connections += 1;
            let drops = drops.clone();
            running.push(tokio::spawn(async move {
                let before = drops.load(Ordering::SeqCst);
                let result = match n % KINDS {
                    0 => echo_roundtrip(routes.echo, &payload(ECHO_BYTES, n)).await,
                    1 => source_read(routes.source, DOWNLOAD_BYTES).await,
                    2 => slow_read(routes.source, SLOW_BYTES).await,
                    3 => typing(routes.echo).await,
                    _ => echo_roundtrip(routes.echo, b"a keystroke").await,
                };
                let cut = drops.load(Ordering::SeqCst) != before;
                (n, result, cut)
            }));
        }
        for task in running {
            match task.await {
                Ok((_, Ok(()), _)) => {}
                Ok((_, Err(_), true)) => self.cut_by_drops += 1,
                Ok((n, Err(e), false)) => self.lost.push(format!("connection {n}: {e:#}")),
                Err(e) => self.lost.push(format!("a connection task failed: {e}")),
            }
        }
    }
}

/// Types into an echo service for [`TYPING_FOR`], a keystroke every
/// [`KEYSTROKE_EVERY`], each echoed before the next.
async fn typing(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let started = Instant::now();
    let mut echoed = [0u8; 1];
    while started.elapsed() < TYPING_FOR {
        stream.write_all(b"k").await?;
        stream.read_exact(&mut echoed).await?;
        anyhow::ensure!(&echoed == b"k", "the echo sent back {echoed:?}");
        tokio::time::sleep(KEYSTROKE_EVERY).await;
    }
    Ok(())
}

/// Reads `n` bytes from a source service slowly, as a terminal draws output.
async fn slow_read(addr: std::net::SocketAddr, n: u64) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(format!("{n}\n").as_bytes()).await?;
    let mut buf = vec![0u8; SLOW_READ];
    let mut got = 0u64;
    loop {
        match stream.read(&mut buf).await? {
            0 => break,
            read => got += read as u64,
        }
        tokio::time::sleep(SLOW_PAUSE).await;
    }
    anyhow::ensure!(got == n, "the slow reader got {got} of {n} bytes");
    Ok(())
}

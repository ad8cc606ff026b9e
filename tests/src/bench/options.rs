//! The benchmark's flags and the sizes they resolve to. Every size has a full
//! default (what BENCHMARKS.md records) and a `--quick` default for a smoke run;
//! a flag given explicitly wins over both.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Bulk transfer size per direction and path: big enough that connection setup
/// and TCP slow start vanish in the figure.
const BULK_MIB: u64 = 256;
const QUICK_BULK_MIB: u64 = 16;
/// Sequential connections timed for setup latency; 200 gives a stable p99.
const SETUP_CONNS: usize = 200;
const QUICK_SETUP_CONNS: usize = 40;
/// 64-byte round trips timed on one connection.
const RTT_COUNT: usize = 2000;
const QUICK_RTT_COUNT: usize = 200;
/// Concurrency levels: one connection up to a busy developer machine's worth.
const CONC_LEVELS: [usize; 4] = [1, 10, 100, 1000];
/// Bytes echoed per concurrency level, split across its connections.
const CONC_MIB: u64 = 64;
const QUICK_CONC_MIB: u64 = 8;
/// Idle connections held open to measure the daemon's memory per connection.
const IDLE_CONNS: usize = 1000;
const QUICK_IDLE_CONNS: usize = 100;
/// CPU is sampled in clock ticks (10 ms): 5 s resolves 0.2 % of one core.
const IDLE_SECS: u64 = 5;
const QUICK_IDLE_SECS: u64 = 1;
/// Extra forwards added to measure the daemon's memory per forward.
const EXTRA_FORWARDS: usize = 16;
const QUICK_EXTRA_FORWARDS: usize = 4;
/// Independent runs (fresh emulator and daemon each); figures are their medians.
const RUNS: usize = 3;
const QUICK_RUNS: usize = 1;
/// WAN mode (`--rtt-ms`): every setup costs whole round trips (~0.2 s at
/// 40 ms), so fewer connections; 60 still give a steady median and p90.
const WAN_SETUP_CONNS: usize = 60;
const QUICK_WAN_SETUP_CONNS: usize = 20;
/// WAN mode: each round trip takes the emulated RTT, and they hardly vary.
const WAN_RTT_COUNT: usize = 50;
const QUICK_WAN_RTT_COUNT: usize = 10;

/// Benchmark of bastiond against the Bastion emulator: (a) a bastiond forward,
/// (b) a bare protocol client without daemon, (c) direct TCP, side by side.
///
/// Needs the release binaries: `cargo build --release --workspace` first.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
pub struct Flags {
    /// Small sizes and one run: a smoke test of the benchmark itself.
    #[arg(long)]
    pub quick: bool,
    /// Independent runs; the table shows their medians [default: 3, quick: 1].
    #[arg(long)]
    pub runs: Option<usize>,
    /// MiB per bulk transfer (upload, download, both ways) [default: 256, quick: 16].
    #[arg(long)]
    pub bulk_mib: Option<u64>,
    /// Sequential connections timed for setup latency [default: 200, quick: 40].
    #[arg(long)]
    pub setup_conns: Option<usize>,
    /// 64-byte round trips timed [default: 2000, quick: 200].
    #[arg(long)]
    pub rtt_count: Option<usize>,
    /// Concurrency levels, comma-separated [default: 1,10,100,1000].
    #[arg(long, value_delimiter = ',')]
    pub conc_levels: Option<Vec<usize>>,
    /// MiB echoed per concurrency level, split across its connections [default: 64, quick: 8].
    #[arg(long)]
    pub conc_mib: Option<u64>,
    /// Idle connections held to measure daemon RSS per connection [default: 1000, quick: 100].
    #[arg(long)]
    pub idle_conns: Option<usize>,
    /// Seconds of each idle CPU sample [default: 5, quick: 1].
    #[arg(long)]
    pub idle_secs: Option<u64>,
    /// Run the bare client (b) inside the bench process instead of as the
    /// `bench-bare` process: the protocol's absolute floor, without the
    /// process boundary a daemon cannot avoid.
    #[arg(long)]
    pub bare_in_process: bool,
    /// WAN mode: put this round trip (ms) in front of the emulator and of the
    /// direct path's echo, and measure only setup (in RTT units) and round
    /// trips; bulk, concurrency and idle resources are skipped. 0 = the LAN
    /// benchmark [setup conns default: 60, quick: 20; round trips: 50, quick: 10].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rtt_ms: u64,
    /// Where the JSON report goes [default: target/bench/bench.json].
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<PathBuf>,
    /// Where the logs go (daemons, bench-bare, emulator, progress)
    /// [default: target/bench/bench.log].
    #[arg(long, value_name = "PATH")]
    pub log_out: Option<PathBuf>,
    /// A `[tunnel]` setting for the daemon, as KEY=VALUE (repeatable), e.g.
    /// `--tunnel max_frame_bytes=4096` to compare frame sizes.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tunnel: Vec<String>,
    /// Instead of the benchmark: a soak of this many minutes (connections at
    /// a steady rate, flaky upgrades, dropped WebSockets, slow readers),
    /// reporting the daemon's resources at its start and end.
    #[arg(long, value_name = "MINUTES")]
    pub soak: Option<u64>,
}

/// The resolved sizes of a benchmark run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    pub quick: bool,
    pub bare_in_process: bool,
    /// The emulated round trip in WAN mode; 0 = LAN.
    pub rtt_ms: u64,
    pub runs: usize,
    pub bulk_bytes: u64,
    pub setup_conns: usize,
    pub rtt_count: usize,
    pub conc_levels: Vec<usize>,
    pub conc_bytes: u64,
    pub idle_conns: usize,
    /// Seconds of each idle CPU sample.
    pub idle_secs: u64,
    pub extra_forwards: usize,
    /// `[tunnel]` lines added to the daemon's settings.
    pub tunnel: Vec<String>,
}

impl Options {
    pub fn idle_window(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }

    /// The emulated round trip; None on the LAN.
    pub fn wan_rtt(&self) -> Option<Duration> {
        (self.rtt_ms > 0).then(|| Duration::from_millis(self.rtt_ms))
    }

    pub fn resolve(flags: &Flags) -> Options {
        let q = flags.quick;
        let wan = flags.rtt_ms > 0;
        let (setup_conns, rtt_count) = match (wan, q) {
            (false, false) => (SETUP_CONNS, RTT_COUNT),
            (false, true) => (QUICK_SETUP_CONNS, QUICK_RTT_COUNT),
            (true, false) => (WAN_SETUP_CONNS, WAN_RTT_COUNT),
            (true, true) => (QUICK_WAN_SETUP_CONNS, QUICK_WAN_RTT_COUNT),
        };
        let pick = |given: Option<u64>, full: u64, quick: u64| {
            given.unwrap_or(if q { quick } else { full })
        };
        let pick_n = |given: Option<usize>, full: usize, quick: usize| {
            given.unwrap_or(if q { quick } else { full })
        };
        Options {
            quick: q,
            bare_in_process: flags.bare_in_process,
            rtt_ms: flags.rtt_ms,
            runs: pick_n(flags.runs, RUNS, QUICK_RUNS).max(1),
            bulk_bytes: pick(flags.bulk_mib, BULK_MIB, QUICK_BULK_MIB).max(1) << 20,
            setup_conns: flags.setup_conns.unwrap_or(setup_conns).max(1),
            rtt_count: flags.rtt_count.unwrap_or(rtt_count).max(1),
            conc_levels: flags
                .conc_levels
                .clone()
                .unwrap_or_else(|| CONC_LEVELS.to_vec())
                .into_iter()
                .filter(|&n| n > 0)
                .collect(),
            conc_bytes: pick(flags.conc_mib, CONC_MIB, QUICK_CONC_MIB).max(1) << 20,
            idle_conns: pick_n(flags.idle_conns, IDLE_CONNS, QUICK_IDLE_CONNS),
            idle_secs: pick(flags.idle_secs, IDLE_SECS, QUICK_IDLE_SECS).max(1),
            extra_forwards: if q {
                QUICK_EXTRA_FORWARDS
            } else {
                EXTRA_FORWARDS
            },
            tunnel: flags.tunnel.clone(),
        }
    }
}

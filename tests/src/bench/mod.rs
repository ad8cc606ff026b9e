//! The benchmark behind `cargo run --release -p bastion-tests --bin bench`:
//! the same workloads through (a) a real `bastiond` forward, (b) a bare
//! protocol client in this process (the floor of what the protocol costs) and
//! (c) direct TCP to the emulator's services, all through one in-process
//! emulator, side by side in every run.
//!
//! - [`options`]: flags and the sizes they resolve to
//! - [`world`]: emulator, daemon and forwards, bare client, the paths' routes
//! - [`bare`]: the bare protocol client (token POST, WebSocket, pump, DELETE);
//!   [`bare_child`]: running it as the `bench-bare` process
//! - [`pattern`]: the bytes moved and their checks
//! - [`bulk`], [`latency`], [`concurrency`], [`resources`]: the measurements
//! - [`proxycommand`]: `bastionctl connect` (ssh's ProxyCommand) timed
//! - [`aks`]: kubectl through an AKS forward against a plain forward
//! - [`socks`]: a SOCKS5 listener's setup against a forward's, LAN and WAN
//! - [`wan`]: WAN mode (`--rtt-ms`), setup in round trips
//! - [`soak`]: `--soak MINUTES`, the daemon's resources after long abuse;
//!   [`descriptors`]: which descriptors it holds, by kind
//! - [`suite`]: one run, measurement by measurement
//! - [`log`]: where everything but the table goes
//! - [`metric`], [`stats`]: named figures, percentiles, medians, ratios
//! - [`targets`]: the performance goals judged on the figures
//! - [`machine`], [`report`]: what ran where, the table and the JSON file

pub mod aks;
pub mod bare;
pub mod bare_child;
pub mod bulk;
pub mod concurrency;
pub mod descriptors;
pub mod latency;
pub mod log;
pub mod machine;
pub mod metric;
pub mod options;
pub mod pattern;
pub mod proxycommand;
pub mod report;
pub mod resources;
pub mod soak;
pub mod socks;
pub mod stats;
pub mod suite;
pub mod targets;
pub mod wan;
pub mod world;

use std::path::PathBuf;

use anyhow::Context as _;

use log::BenchLog;
use machine::Machine;
use metric::Sheet;
use options::{Flags, Options};
use report::Report;

/// What the README tells people to run; the flags given are appended.
const COMMAND: &str = "cargo run --release -p bastion-tests --bin bench --";
/// Where the JSON goes by default, under the Cargo target directory.
const DEFAULT_JSON: &str = "bench/bench.json";
/// Where the logs go by default, next to the JSON.
const DEFAULT_LOG: &str = "bench/bench.log";

/// Runs the benchmark `flags` asks for; failures are in the report, the
/// logs in `log`, one line per run on stderr.
pub async fn run(flags: &Flags, log: &BenchLog) -> anyhow::Result<Report> {
    let opts = Options::resolve(flags);
    let mut machine = Machine::describe();
    let bytes = opts.bulk_bytes;
    let upload_sha256 = tokio::task::spawn_blocking(move || pattern::sha256_hex(bytes))
        .await
        .context("hashing the upload")?;
    let mut runs = Vec::with_capacity(opts.runs);
    let mut failures = Vec::new();
    for i in 1..=opts.runs {
        let tag = format!("run {i}/{}", opts.runs);
        eprintln!("bench: {tag}");
        log.line(&format!("=== {tag} ==="));
        let out = suite::run(&opts, &tag, &upload_sha256, log).await;
        runs.push(out.sheet);
        failures.extend(out.failures);
    }
    machine.load_after = machine::load_average();
    let median = Sheet::medians(&runs);
    let targets = targets::judge(&median, &runs);
    let args: Vec<String> = std::env::args().skip(1).collect();
    Ok(Report {
        command: format!("{COMMAND} {}", args.join(" "))
            .trim_end_matches([' ', '-'])
            .to_owned(),
        machine,
        options: opts,
        median,
        runs,
        targets,
        failures,
    })
}

/// `<target dir>/bench/bench.json`, the target dir being the one this
/// binary was built into (`target/release/bench` → `target/`).
pub fn default_json_path() -> PathBuf {
    target_dir().join(DEFAULT_JSON)
}

/// `<target dir>/bench/bench.log`.
pub fn default_log_path() -> PathBuf {
    target_dir().join(DEFAULT_LOG)
}

fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

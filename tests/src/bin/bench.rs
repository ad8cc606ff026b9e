//! `bench`: bastiond against a bare protocol client and direct TCP, through
//! the Bastion emulator. See `bastion_tests::bench` and BENCHMARKS.md.

use std::process::ExitCode;

use anyhow::Context as _;
use bastion_tests::bench::{self, log::BenchLog, options::Flags};
use clap::Parser as _;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// File descriptors a 1000-connection level needs in this process: the
/// client socket, the bare client's accepted socket, its TLS WebSocket and
/// token connection, the emulator's side of each and the target connection.
const FDS_PER_CONNECTION: u64 = 8;
const MAX_CONNECTIONS: u64 = 1000;
/// Emulator and sink logs only when something is wrong.
const DEFAULT_LOG_FILTER: &str = "warn";

fn main() -> ExitCode {
    let flags = Flags::parse();
    match run(&flags) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false) when some measurement failed (the report says which).
fn run(flags: &Flags) -> anyhow::Result<bool> {
    let log_path = flags
        .log_out
        .clone()
        .unwrap_or_else(bench::default_log_path);
    let log = BenchLog::create(&log_path)?;
    log.init_tracing(DEFAULT_LOG_FILTER);
    eprintln!(
        "bench: logs (daemons, bench-bare, emulator, progress) go to {}",
        log_path.display()
    );
    raise_fd_limit()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if let Some(minutes) = flags.soak {
        let opts = bench::options::Options::resolve(flags);
        let report = runtime.block_on(bench::soak::run(&opts, minutes, &log))?;
        println!("{}", report.table());
        return Ok(report.lost.is_empty());
    }
    let report = runtime.block_on(bench::run(flags, &log))?;
    let json = flags
        .json_out
        .clone()
        .unwrap_or_else(bench::default_json_path);
    report.write_json(&json)?;
    println!("{}", report.table());
    println!("JSON: {}", json.display());
    Ok(report.failures.is_empty())
}

/// The soft open-file limit up to the hard one (the daemon child inherits it).
fn raise_fd_limit() -> anyhow::Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    }
    if hard < FDS_PER_CONNECTION * MAX_CONNECTIONS {
        eprintln!("bench: warning: only {hard} open files allowed; 1000 connections may fail");
    }
    Ok(())
}

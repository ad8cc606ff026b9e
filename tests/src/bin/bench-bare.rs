//! `bench-bare`: the benchmark's bare protocol client (b) as a process of its
//! own, so it pays the same process boundaries as bastiond. Listens on
//! 127.0.0.1 for each `--target`, prints `listening ADDR…` (one per target,
//! in order) and serves until its stdin closes or SIGTERM.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use bastion_tests::bench::bare::Bare;
use bastion_tests::emulator::EmulatorInfo;
use clap::Parser;
use tokio::io::AsyncReadExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Logs only when something is wrong: the bench reads stdout, stderr is the user's.
const DEFAULT_LOG_FILTER: &str = "warn";

/// The bare Bastion client of the benchmark, as a forwarder.
#[derive(Parser)]
#[command(name = "bench-bare")]
struct Args {
    /// The emulator's emulator.json.
    #[arg(long)]
    emulator_json: PathBuf,
    /// A VNet target, e.g. 10.1.0.4:7; one listener each.
    #[arg(long, required = true)]
    target: Vec<SocketAddrV4>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    bastion_tests::init_logging(DEFAULT_LOG_FILTER);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench-bare: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-bare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let info = EmulatorInfo::load(&args.emulator_json)?;
    let bare = Bare::new(&info).await?;
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    let mut line = String::from("listening");
    for target in &args.target {
        let addr = bare
            .forward(*target.ip(), target.port(), &tasks, &cancel)
            .await
            .with_context(|| format!("listening for {target}"))?;
        line += &format!(" {addr}");
    }
    println!("{line}");
    let mut term = signal(SignalKind::terminate())?;
    let mut stdin = tokio::io::stdin();
    let mut byte = [0u8; 1];
    tokio::select! {
        _ = term.recv() => {}
        // EOF (or an error): the parent is gone or done with us.
        _ = stdin.read(&mut byte) => {}
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    let failures = bare.failures();
    anyhow::ensure!(failures == 0, "{failures} connections failed");
    Ok(())
}

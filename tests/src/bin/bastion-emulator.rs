//! `bastion-emulator --state-dir DIR [--port P] [faults…]` serves the Bastion emulator
//! until SIGTERM/SIGINT; `bastion-emulator az --endpoint E --ca-file F -- ARGS` is the
//! fake Azure CLI that `DIR/bin/az` execs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bastion_tests::emulator::{
    DropMode, Emulator, EmulatorConfig, FaultBody, Faults, HandshakeQuirk, az_main,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "bastion-emulator",
    version,
    about = "Azure Bastion emulator (Entra, ARM, data plane) for tests",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// The fake Azure CLI (what DIR/bin/az runs).
    Az(AzArgs),
}

#[derive(Args)]
struct AzArgs {
    /// The emulator's address (host:port) the fake az asks for tokens.
    #[arg(long)]
    endpoint: String,
    /// The emulator's CA certificate (PEM).
    #[arg(long)]
    ca_file: PathBuf,
    /// The arguments az was called with.
    #[arg(last = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Where ca.pem, config.toml, bin/az and emulator.json go.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Listening port on 127.0.0.1 (0 = OS-chosen).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// WAN mode: a round trip of N ms between the emulator and its clients
    /// (N/2 each way, plus a TCP handshake's round trip before a new
    /// connection's first bytes); 0 = none.
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,
    /// Lifetime of the tokens Entra and the fake az mint [default: 1 hour].
    #[arg(long)]
    token_lifetime_secs: Option<u64>,
    /// SKU of every bastion (Standard, Premium, Basic, Developer).
    #[arg(long)]
    sku: Option<String>,
    /// Turn "Native client support" off on every bastion.
    #[arg(long)]
    disable_tunneling: bool,
    /// Turn "IP-based connection" off on every bastion.
    #[arg(long)]
    disable_ip_connect: bool,
    /// Fail the next N POST /api/tokens.
    #[arg(long, default_value_t = 0)]
    fail_token_posts: u32,
    /// HTTP status of those failures.
    #[arg(long, default_value_t = 500)]
    fail_status: u16,
    /// Body of those failures: Azure-style JSON, a Tomcat HTML page, or nothing.
    #[arg(long, value_enum, default_value_t = BodyKind::Json)]
    fail_body: BodyKind,
    /// Fail the next N fake-az calls.
    #[arg(long, default_value_t = 0)]
    fail_az: u32,
    /// Delay before answering each POST /api/tokens.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Drop each tunnel after this many relayed bytes.
    #[arg(long)]
    drop_after_bytes: Option<u64>,
    /// How tunnels are dropped: the connection just ends, or a Close frame first.
    #[arg(long, value_enum, default_value_t = DropKind::Abrupt)]
    drop_mode: DropKind,
    /// A reported Bastion handshake oddity, on every upgrade.
    #[arg(long, value_enum)]
    quirk: Option<QuirkKind>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BodyKind {
    Json,
    Html,
    Empty,
}

#[derive(Clone, Copy, ValueEnum)]
enum DropKind {
    Abrupt,
    Close,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuirkKind {
    NoUpgradeHeaders,
    HttpTextAfter101,
    StallAfterUpgrade,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Az(az)) => {
            // Read while single-threaded: the time crate refuses it once threads exist.
            let offset = time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ERROR: {e}");
                    return std::process::ExitCode::from(1);
                }
            };
            let code = rt.block_on(az_main(&az.endpoint, &az.ca_file, &az.args, offset));
            std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        None => match serve(cli.serve) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bastion-emulator: {e:#}");
                std::process::ExitCode::from(1)
            }
        },
    }
}

#[tokio::main]
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    bastion_tests::init_logging("info");
    let state_dir = args.state_dir.clone().context("--state-dir is required")?;
    let mut cfg = EmulatorConfig::new(&state_dir);
    cfg.port = args.port;
    cfg.latency = Duration::from_millis(args.latency_ms);
    cfg.emulator_exe = Some(std::env::current_exe().context("locating this executable")?);
    if let Some(secs) = args.token_lifetime_secs {
        cfg.token_lifetime = Duration::from_secs(secs);
    }
    for b in &mut cfg.bastions {
        if let Some(sku) = &args.sku {
            b.sku = sku.clone();
        }
        b.enable_tunneling &= !args.disable_tunneling;
        b.enable_ip_connect &= !args.disable_ip_connect;
    }
    let emulator = Emulator::start_with_faults(cfg, |f| arm_faults(f, &args)).await?;
    let info = emulator.info();
    let wan = match args.latency_ms {
        0 => String::new(),
        ms => format!(" ({ms} ms round trip away)"),
    };
    eprintln!(
        "bastion-emulator ready on https://{}{wan}\n  config:   {}\n  CA:       {}\n  bastion:  {}\n  run:      PATH={}:$PATH bastiond --config {}",
        info.endpoint,
        info.config_file.display(),
        info.ca_file.display(),
        info.bastion_resource_id,
        state_dir.join("bin").display(),
        info.config_file.display(),
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    emulator.shutdown().await;
    Ok(())
}

fn arm_faults(f: &Faults, args: &ServeArgs) {
    if args.fail_token_posts > 0 {
        let body = match args.fail_body {
            BodyKind::Json => FaultBody::Json("Injected failure".to_owned()),
            BodyKind::Html => FaultBody::Html(
                "<!doctype html><html><body><h1>HTTP Status 500 – Internal Server Error</h1></body></html>".to_owned(),
            ),
            BodyKind::Empty => FaultBody::Empty,
        };
        f.fail_token_posts(args.fail_token_posts, args.fail_status, body);
    }
    f.fail_az(args.fail_az);
    if let Some(ms) = args.delay_ms {
        f.set_delay(Duration::from_millis(ms));
    }
    let mode = match args.drop_mode {
        DropKind::Abrupt => DropMode::Abrupt,
        DropKind::Close => DropMode::CloseFrame,
    };
    f.drop_websockets_after(args.drop_after_bytes, mode);
    f.set_handshake_quirk(args.quirk.map(|q| match q {
        QuirkKind::NoUpgradeHeaders => HandshakeQuirk::NoUpgradeHeaders,
        QuirkKind::HttpTextAfter101 => HandshakeQuirk::HttpTextAfter101,
        QuirkKind::StallAfterUpgrade => HandshakeQuirk::StallAfterUpgrade,
    }));
}

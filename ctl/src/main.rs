//! `bastionctl`: the command-line client of bastiond.
//!
//! Module map:
//! - `cli`        : the clap command tree (flags, subcommands, value parsers)
//! - `daemon`     : reaching the daemon (socket, version check, gRPC errors)
//! - `output`     : table and JSON rendering shared by the commands
//! - `forward`    : `forward add|list|remove` (`watch`: `forward watch`)
//! - `socks`      : `socks add`, a SOCKS5 listener (a forward whose clients name the target)
//! - `status`     : `status` and `reload`
//! - `connect`    : `connect`, stdio <-> the daemon's Connect stream (ssh ProxyCommand),
//!   through `stdio` (pipes on the reactor)
//! - `ssh_config` : `ssh-config`, a ready `Host` block for ~/.ssh/config
//! - `service`    : `service install|uninstall|status` (systemd user unit)
//! - `docs`       : `completions` and `man`
//! - `doctor`     : `doctor TARGET`, the daemon's step-by-step check printed
//! - `discover`   : `bastion discover`, the bastions the daemon's credential sees
//! - `bastion`    : `bastion add|list|remove`, through `settings_file` (format-preserving edits)
//! - `aks`        : `aks add|remove` (`aks_list`: `aks list`), via `kubeconfig` and `atomic_write`
//! - `exit`       : the documented exit statuses, and the class of each failure
//!
//! Every failure ends as one line `bastionctl: <reason>` on stderr and an
//! exit status from `exit` that scripts can branch on.

mod aks;
mod aks_list;
mod atomic_write;
mod bastion;
mod cli;
mod connect;
mod daemon;
mod discover;
mod docs;
mod doctor;
mod exit;
mod forward;
mod kubeconfig;
mod output;
mod service;
mod service_env;
mod settings_file;
mod socks;
mod ssh_config;
mod status;
mod stdio;
mod watch;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{BastionCommand, Cli, Command, ForwardCommand, SocksCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::report_usage_error(err),
    };
    // One thread: every command is a client of one socket, and `connect`
    // starts once per ssh, where worker threads would be start-up cost.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return fail(&anyhow::Error::new(err).context("cannot start the async runtime"));
        }
    };
    let result = runtime.block_on(run(cli));
    // `connect` may leave a blocking stdin read behind that cannot be
    // cancelled; don't wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket;
    match cli.command {
        Command::Forward { command } => match command {
            ForwardCommand::Add(args) => forward::add(socket, args).await,
            ForwardCommand::List { json } => forward::list(socket, json).await,
            ForwardCommand::Remove { selector } => forward::remove(socket, &selector).await,
            ForwardCommand::Watch { json } => watch::run(socket, json).await,
        },
        Command::Socks {
            command: SocksCommand::Add(args),
        } => socks::add(socket, args).await,
        Command::Status { json } => status::status(socket, json).await,
        Command::Reload => status::reload(socket).await,
        Command::Connect(args) => connect::run(socket, args).await,
        Command::SshConfig(args) => ssh_config::run(socket, &args),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
        Command::Service { command } => service::run(command),
        Command::Doctor(args) => doctor::run(socket, args).await,
        Command::Bastion { command } => match command {
            BastionCommand::Discover { json } => discover::run(socket, json).await,
            BastionCommand::Add {
                name,
                resource_id,
                config,
            } => bastion::add(socket, config, &name, &resource_id).await,
            BastionCommand::List { json, config } => bastion::list(socket, config, json).await,
            BastionCommand::Remove { name, config } => bastion::remove(socket, config, &name).await,
        },
        Command::Aks { command } => aks::run(socket, command).await,
    }
}

/// Prints the one-line reason and picks the exit status.
fn fail(err: &anyhow::Error) -> ExitCode {
    let _ = std::io::stdout().flush();
    eprintln!("bastionctl: {}", output::one_line(&format!("{err:#}")));
    exit::Exit::of(err).code()
}

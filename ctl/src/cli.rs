//! The command tree. Values users type (targets, ports) are validated here,
//! before anything talks to the daemon, so mistakes get a precise message.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::exit::{self, Exit};
use crate::output;

const EXAMPLES: &str = "Examples:
  bastionctl forward add 10.1.0.4:22 2222 --name dev-ssh   # then: ssh -p 2222 me@127.0.0.1
  bastionctl forward add myvm:22 2223                       # a VM by name (looked up through ARM)
  bastionctl forward list
  bastionctl aks add my-private-cluster                     # then: kubectl --context my-private-cluster get nodes
  bastionctl socks add 1080        # then: ssh -o 'ProxyCommand nc -X 5 -x 127.0.0.1:1080 %h %p' myvm
  bastionctl ssh-config --host '10.1.*' >> ~/.ssh/config     # ssh 10.1.0.4 goes through bastiond
  bastionctl service install                                  # run bastiond under systemd --user";

/// Drive bastiond, the per-user daemon that keeps Azure Bastion tunnels to
/// private IPs open.
#[derive(Debug, Parser)]
#[command(
    name = "bastionctl",
    version,
    propagate_version = true,
    // The examples, then the exit statuses scripts can branch on.
    after_help = format!("{EXAMPLES}\n\n{}", exit::HELP)
)]
pub struct Cli {
    /// Control socket of the daemon [default: $BASTIOND_SOCKET, else
    /// $XDG_RUNTIME_DIR/bastiond/bastiond.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Local ports forwarded to private targets.
    Forward {
        #[command(subcommand)]
        command: ForwardCommand,
    },
    /// SOCKS5 listeners: one local port to every VM the bastion reaches.
    Socks {
        #[command(subcommand)]
        command: SocksCommand,
    },
    /// The daemon's health: credential, token, bastions, forwards.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the settings file and print what changed.
    Reload,
    /// Connect stdin/stdout to a target (for ssh `ProxyCommand`).
    Connect(ConnectArgs),
    /// Print a `Host` block for ~/.ssh/config that uses `bastionctl connect`.
    SshConfig(SshConfigArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
    /// Print the manual page (roff) to stdout.
    Man,
    /// Run bastiond as a systemd user service.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Check the whole path to TARGET once (token, bastion, VM, session,
    /// WebSocket, first bytes, delete); exit 0 only if every step passes.
    Doctor(DoctorArgs),
    /// The bastions in the settings file.
    Bastion {
        #[command(subcommand)]
        command: BastionCommand,
    },
    /// Private AKS clusters: a forward to the API server and a kubeconfig context.
    Aks {
        #[command(subcommand)]
        command: AksCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AksCommand {
    /// Forward a local port to CLUSTER's API server and add a context for it to the kubeconfig.
    Add(AksAddArgs),
    /// The AKS forwards and their kubeconfig contexts.
    List {
        /// Print a JSON array (stable field names).
        #[arg(long)]
        json: bool,
        /// Kubeconfig [default: $KUBECONFIG's first file, else ~/.kube/config].
        #[arg(long, value_name = "PATH")]
        kubeconfig: Option<PathBuf>,
    },
    /// Remove CLUSTER's forward and the kubeconfig entries `aks add` wrote, nothing else.
    Remove {
        /// The cluster's name or resource id, or the forward's name.
        cluster: String,
        /// Kubeconfig [default: $KUBECONFIG's first file, else ~/.kube/config].
        #[arg(long, value_name = "PATH")]
        kubeconfig: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct AksAddArgs {
    /// The cluster's name (looked up in the bastion's subscription) or its resource id.
    pub cluster: String,
    /// Resource group to look the cluster's name up in [default: the bastion's whole subscription].
    #[arg(long, value_name = "RG")]
    pub resource_group: Option<String>,
    /// Bastion to go through (a key of [bastions] in config.toml).
    #[arg(long)]
    pub bastion: Option<String>,
    /// Use the cluster's admin credential (listClusterAdminCredential).
    #[arg(long)]
    pub admin: bool,
    /// Local port [default: a free one the system picks].
    #[arg(long, value_parser = parse_local_port)]
    pub port: Option<u16>,
    /// Name of the context, and of the cluster and user entries it uses [default: ARM's context name].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Kubeconfig to merge into [default: $KUBECONFIG's first file, else ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// Which bastion a target is reached through, and where its VM name is looked up.
#[derive(Debug, Args)]
pub struct Via {
    /// Bastion to go through (a key of [bastions] in config.toml).
    #[arg(long)]
    pub bastion: Option<String>,
    /// Resource group to look a VM-name target up in [default: the bastion's whole subscription].
    #[arg(long, value_name = "RG")]
    pub resource_group: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// What to check: `10.1.0.4:22`, `<VM resource id>:22` or `<VM name>:22`.
    #[arg(value_parser = parse_target)]
    pub target: Target,
    #[command(flatten)]
    pub via: Via,
    /// Print {"ok", "steps": [{"name", "ok", "ms", "detail"}]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BastionCommand {
    /// The Bastion hosts the daemon's credential can see, and what each can serve.
    Discover {
        /// Print a JSON array (stable field names).
        #[arg(long)]
        json: bool,
    },
    /// Add `[bastions.NAME]` to the settings file and reload the daemon.
    Add {
        /// The name forwards use (`--bastion NAME`).
        name: String,
        /// `/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/bastionHosts/<name>`.
        resource_id: String,
        /// Settings file [default: the running daemon's, else $XDG_CONFIG_HOME/bastiond/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// List the bastions of the settings file.
    List {
        /// Print a JSON array of {name, resource_id, default}.
        #[arg(long)]
        json: bool,
        /// Settings file [default: the running daemon's, else $XDG_CONFIG_HOME/bastiond/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Remove a bastion no forward uses from the settings file and reload the daemon.
    Remove {
        name: String,
        /// Settings file [default: the running daemon's, else $XDG_CONFIG_HOME/bastiond/config.toml].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Forward a local port to TARGET through a Bastion; kept across restarts.
    Add(AddArgs),
    /// List forwards with their state and counters.
    List {
        /// Print a JSON array (stable field names).
        #[arg(long)]
        json: bool,
    },
    /// Remove a forward, closing its listener and connections.
    Remove {
        /// The forward's name, id or local port.
        selector: String,
    },
    /// Stream forward and connection events until interrupted.
    Watch {
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Where to go: `10.1.0.4:22`, `[fd00::4]:22`, `<VM resource id>:22` or `<VM name>:22`.
    #[arg(value_parser = parse_target)]
    pub target: Target,
    #[command(flatten)]
    pub listen: Listen,
}

/// Where a new forward or SOCKS5 listener listens, and how it is shown.
#[derive(Debug, Args)]
pub struct Listen {
    /// Local port to listen on (1-65535).
    #[arg(value_parser = parse_local_port)]
    pub local_port: u16,
    #[command(flatten)]
    pub via: Via,
    /// Name [default: derived from the target; socks5-LOCAL_PORT for a SOCKS5 listener].
    #[arg(long)]
    pub name: Option<String>,
    /// Local address to listen on [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Serve every local user's connections, not only yours (required with
    /// a --bind address beyond loopback, whose peers cannot be checked).
    #[arg(long)]
    pub allow_other_users: bool,
    /// Print the new forward or listener as a JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SocksCommand {
    /// Listen for SOCKS5 clients (CONNECT, no authentication) on LOCAL_PORT:
    /// each names its target (an IP, or a VM name); kept across restarts,
    /// listed with forwards, removed with `forward remove`.
    Add(Listen),
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to go: `10.1.0.4:22` or `myvm:22` (ssh passes `%h:%p`).
    #[arg(value_parser = parse_target)]
    pub target: Target,
    #[command(flatten)]
    pub via: Via,
}

#[derive(Debug, Args)]
pub struct SshConfigArgs {
    /// ssh `Host` patterns the block applies to; a name (not an IP) that matches
    /// is looked up as a VM name (`--host 'web db'`, then `ssh web` reaches the VM web).
    #[arg(
        long = "host",
        alias = "host-pattern",
        value_name = "PATTERN",
        default_value = "10.*"
    )]
    pub host: String,
    #[command(flatten)]
    pub via: Via,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the user unit, reload systemd, enable and start bastiond.
    Install {
        /// Print the unit and the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop and disable bastiond, remove the user unit.
    Uninstall {
        /// Print the commands instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show systemd's view of the service.
    Status {
        /// Print the command instead of running it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the user unit with the real bastiond path (what `install`
    /// writes; packagers render theirs with it).
    Unit {
        /// Absolute path of bastiond [default: next to bastionctl, else on PATH].
        #[arg(long, value_name = "PATH", value_parser = parse_absolute_path)]
        bastiond: Option<PathBuf>,
    },
}

/// A validated target, as the daemon's own parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl From<Target> for bastion_proto::v1::Target {
    fn from(target: Target) -> Self {
        Self {
            host: target.host,
            port: u32::from(target.port),
        }
    }
}

fn parse_target(text: &str) -> Result<Target, String> {
    bastion_proto::target::parse_target(text)
        .map(|(host, port)| Target { host, port })
        .map_err(|err| err.to_string())
}

/// systemd runs only absolute paths.
fn parse_absolute_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("the path must be absolute, not {text:?}"))
    }
}

fn parse_local_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!(
            "local port must be a number from 1 to 65535, not {text:?}"
        )),
    }
}

/// Help and version go to stdout as usual; a usage mistake becomes the same
/// one-line `bastionctl: …` as every other error (exit status 2, as clap).
pub fn report_usage_error(err: clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(Exit::Usage as u8))
        }
        _ => {
            let rendered = err.render().to_string();
            let message = usage_message(&rendered);
            eprintln!("bastionctl: {message} (see `bastionctl --help`)");
            Exit::Usage.code()
        }
    }
}

/// The first paragraph of clap's rendering, without its `error:` prefix.
fn usage_message(rendered: &str) -> String {
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = paragraph.join(" ");
    output::one_line(joined.strip_prefix("error: ").unwrap_or(&joined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn local_port_bounds() {
        assert_eq!(parse_local_port("2222"), Ok(2222));
        assert_eq!(parse_local_port("65535"), Ok(65535));
        for bad in ["0", "65536", "-1", "ssh", ""] {
            let err = parse_local_port(bad).unwrap_err();
            assert!(err.contains("1 to 65535"), "{err}");
        }
    }

    #[test]
    fn usage_errors_become_one_line() {
        let err =
            Cli::try_parse_from(["bastionctl", "forward", "add", "10.1.0.4:22", "0"]).unwrap_err();
        let message = usage_message(&err.render().to_string());
        assert!(!message.contains('\n'));
        assert!(message.starts_with("invalid value '0'"), "{message}");
        assert!(message.contains("1 to 65535"), "{message}");

        let err = Cli::try_parse_from(["bastionctl", "forward", "add"]).unwrap_err();
        let message = usage_message(&err.render().to_string());
        assert!(message.contains("<TARGET>"), "{message}");
    }

    #[test]
    fn forward_add_parses() {
        let cli = Cli::try_parse_from([
            "bastionctl",
            "forward",
            "add",
            "10.1.0.4:22",
            "2222",
            "--name",
            "dev-ssh",
        ])
        .unwrap();
        let Command::Forward {
            command: ForwardCommand::Add(args),
        } = cli.command
        else {
            panic!("not forward add");
        };
        assert_eq!(
            args.target,
            Target {
                host: "10.1.0.4".into(),
                port: 22
            }
        );
        assert_eq!(args.listen.local_port, 2222);
        assert_eq!(args.listen.name.as_deref(), Some("dev-ssh"));
    }
}

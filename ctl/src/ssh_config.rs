//! `ssh-config`: a `Host` block that sends matching ssh connections through
//! `bastionctl connect`, ready to paste into ~/.ssh/config.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::SshConfigArgs;
use crate::output::out;

/// Keeps idle sessions alive through NATs and lets ssh notice a dead tunnel.
const SERVER_ALIVE_INTERVAL_SECS: u32 = 30;

pub fn run(socket: Option<PathBuf>, args: &SshConfigArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()
        .and_then(|exe| exe.canonicalize())
        .context("cannot tell where bastionctl is installed")?;
    out!("{}", host_block(&exe, socket.as_deref(), args))?;
    Ok(())
}

fn host_block(exe: &Path, socket: Option<&Path>, args: &SshConfigArgs) -> String {
    let mut command = quote(&exe.to_string_lossy());
    if let Some(socket) = socket {
        command.push_str(&format!(" --socket {}", quote(&socket.to_string_lossy())));
    }
    command.push_str(" connect");
    if let Some(bastion) = &args.via.bastion {
        command.push_str(&format!(" --bastion {}", quote(bastion)));
    }
    if let Some(rg) = &args.via.resource_group {
        command.push_str(&format!(" --resource-group {}", quote(rg)));
    }
    command.push_str(" %h:%p");
    format!(
        "# Reach private hosts through Azure Bastion via bastiond (`bastionctl ssh-config`).\n\
         Host {}\n    \
         ProxyCommand {command}\n    \
         ServerAliveInterval {SERVER_ALIVE_INTERVAL_SECS}\n",
        args.host
    )
}

/// ssh runs ProxyCommand through the shell after expanding `%` tokens:
/// quote anything unusual and double literal percent signs.
fn quote(word: &str) -> String {
    let word = word.replace('%', "%%");
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._+-,:@%=".contains(c));
    if plain && !word.is_empty() {
        word
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bastion: Option<&str>) -> SshConfigArgs {
        SshConfigArgs {
            host: "10.1.*".into(),
            via: crate::cli::Via {
                bastion: bastion.map(str::to_owned),
                resource_group: None,
            },
        }
    }

    #[test]
    fn vm_name_blocks_pass_the_resource_group() {
        let args = SshConfigArgs {
            host: "web db".into(),
            via: crate::cli::Via {
                bastion: None,
                resource_group: Some("rg-app".into()),
            },
        };
        let block = host_block(Path::new("/bin/bastionctl"), None, &args);
        assert!(block.contains("Host web db\n"), "{block}");
        assert!(
            block.contains("ProxyCommand /bin/bastionctl connect --resource-group rg-app %h:%p"),
            "{block}"
        );
    }

    #[test]
    fn block_is_ready_to_paste() {
        let block = host_block(Path::new("/usr/local/bin/bastionctl"), None, &args(None));
        assert_eq!(
            block,
            "# Reach private hosts through Azure Bastion via bastiond (`bastionctl ssh-config`).\n\
             Host 10.1.*\n    \
             ProxyCommand /usr/local/bin/bastionctl connect %h:%p\n    \
             ServerAliveInterval 30\n"
        );
    }

    #[test]
    fn odd_paths_are_quoted() {
        let block = host_block(
            Path::new("/home/me/My Tools/bastionctl"),
            Some(Path::new("/run/b 1.sock")),
            &args(Some("spoke")),
        );
        assert!(
            block.contains(
                "ProxyCommand '/home/me/My Tools/bastionctl' --socket '/run/b 1.sock' connect --bastion spoke %h:%p"
            ),
            "{block}"
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("/a%b"), "/a%%b");
    }
}

//! `bastion add|list|remove`: the `[bastions]` of the settings file, edited
//! in place (comments and layout kept), then the daemon asked to reload.
//! They work with no daemon running too: it reads the file when it starts.

use std::path::PathBuf;

use bastion_proto::client::ClientError;

use crate::daemon::{self, Client};
use crate::output::{self, outln};
use crate::settings_file::{SettingsFile, default_path};

/// The daemon if it runs; `None` when nothing listens on the socket.
async fn running_daemon(socket: Option<PathBuf>) -> anyhow::Result<Option<Client>> {
    let path = daemon::socket_path(socket);
    match bastion_proto::client::connect(&path).await {
        Ok(client) => Ok(Some(client)),
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `--config`, else the file the running daemon reads, else the default place.
async fn settings_path(
    config: Option<PathBuf>,
    client: Option<&mut Client>,
) -> anyhow::Result<PathBuf> {
    if let Some(config) = config {
        return Ok(config);
    }
    if let Some(client) = client {
        let status = daemon::status(client).await?;
        if !status.config_file.is_empty() {
            return Ok(PathBuf::from(status.config_file));
        }
    }
    default_path()
}

/// Asks the daemon (if any) to read the file again and prints what changed.
async fn reload(client: Option<Client>) -> anyhow::Result<()> {
    let Some(mut client) = client else {
        outln!("bastiond is not running; it reads the settings when it starts.")?;
        return Ok(());
    };
    let changes = daemon::reload(&mut client).await?;
    for change in changes {
        outln!("{}", output::one_line(&change))?;
    }
    Ok(())
}

pub async fn add(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    name: &str,
    resource_id: &str,
) -> anyhow::Result<()> {
    let mut client = running_daemon(socket).await?;
    let path = settings_path(config, client.as_mut()).await?;
    let mut file = SettingsFile::open(&path)?;
    file.add(name, resource_id)?;
    file.save()?;
    outln!("Added bastion {name} to {}.", path.display())?;
    reload(client).await
}

pub async fn list(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let mut client = running_daemon(socket).await?;
    let path = settings_path(config, client.as_mut()).await?;
    let bastions = SettingsFile::open(&path)?.bastions();
    if json {
        let text = serde_json::to_string_pretty(&bastions)?;
        outln!("{text}")?;
    } else if bastions.is_empty() {
        outln!(
            "No bastions in {}. Add one with `bastionctl bastion add NAME RESOURCE_ID` \
             (`bastionctl bastion discover` lists those you can use).",
            path.display()
        )?;
    } else {
        for b in bastions {
            let default = if b.default { " (default)" } else { "" };
            outln!("{}{default}\t{}", b.name, b.resource_id)?;
        }
    }
    Ok(())
}

pub async fn remove(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    name: &str,
) -> anyhow::Result<()> {
    let mut client = running_daemon(socket).await?;
    if let Some(client) = client.as_mut() {
        let forwards = daemon::forwards(client).await?;
        let users: Vec<String> = forwards
            .iter()
            .filter(|f| f.bastion == name)
            .map(|f| f.name.clone())
            .collect();
        if !users.is_empty() {
            anyhow::bail!(
                "bastion {name} is used by forward{} {}; remove {} first (`bastionctl forward remove NAME`)",
                if users.len() == 1 { "" } else { "s" },
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            );
        }
    }
    let path = settings_path(config, client.as_mut()).await?;
    let mut file = SettingsFile::open(&path)?;
    file.remove(name)?;
    file.save()?;
    outln!("Removed bastion {name} from {}.", path.display())?;
    reload(client).await
}

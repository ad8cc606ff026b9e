//! Reaching the daemon: which socket, the version check, and turning gRPC
//! statuses into the daemon's own words, classified for the exit status.

use std::path::PathBuf;

use anyhow::Context as _;
use bastion_proto::client::ClientError;
use bastion_proto::v1::control_client::ControlClient;
use bastion_proto::v1::{
    AddForwardRequest, Forward, ListForwardsRequest, StatusRequest, StatusResponse,
};
use tonic::transport::Channel;

use crate::exit::Exit;

pub type Client = ControlClient<Channel>;

/// Our version; the daemon reports its own in `Status.version`.
pub const CTL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The control socket: `--socket`, else the daemon's default resolution
/// (BASTIOND_SOCKET, then XDG_RUNTIME_DIR), so both binaries always agree.
pub fn socket_path(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(bastion_proto::socket::default_path)
}

/// Connects without the version check (used by `connect`, where every
/// round trip adds to ssh's connection setup). Nothing listening on the
/// socket (missing, or connection refused) is its own exit status.
pub async fn connect(socket: Option<PathBuf>) -> anyhow::Result<Client> {
    let socket = socket_path(socket);
    bastion_proto::client::connect(&socket)
        .await
        .map_err(|err| match err {
            ClientError::NotRunning { .. } => Exit::NotRunning.error(err.to_string()),
            other => other.into(),
        })
}

/// Connects and warns on stderr when the daemon runs another version.
pub async fn connect_checked(socket: Option<PathBuf>) -> anyhow::Result<Client> {
    let mut client = connect(socket).await?;
    status(&mut client).await?;
    Ok(client)
}

/// The daemon's forwards.
pub async fn forwards(client: &mut Client) -> anyhow::Result<Vec<Forward>> {
    Ok(client
        .list_forwards(ListForwardsRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .forwards)
}

/// Adds the forward `request` asks for; the daemon's answer is the new forward.
pub async fn add_forward(
    client: &mut Client,
    request: AddForwardRequest,
) -> anyhow::Result<Forward> {
    client
        .add_forward(request)
        .await
        .map_err(rpc_error)?
        .into_inner()
        .forward
        .context("the daemon's answer carries no forward")
}

/// Fetches the daemon's status, checking its version on the way.
pub async fn status(client: &mut Client) -> anyhow::Result<StatusResponse> {
    let status = client
        .status(StatusRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if let Some(warning) = version_warning(&status.version) {
        eprintln!("bastionctl: warning: {warning}");
    }
    Ok(status)
}

fn version_warning(daemon_version: &str) -> Option<String> {
    (daemon_version != CTL_VERSION).then(|| {
        format!(
            "bastiond is version {daemon_version} but bastionctl is {CTL_VERSION}; \
             restart the daemon (`systemctl --user restart bastiond`) to run the same version"
        )
    })
}

/// The daemon writes messages meant for people; show exactly those, not
/// tonic's debug dump of code, metadata and source. The code picks the
/// exit status.
pub fn rpc_error(status: tonic::Status) -> anyhow::Error {
    let message = status.message().trim();
    let exit = Exit::from_rpc(status.code());
    if message.is_empty() {
        exit.error(format!(
            "the daemon answered: {}",
            status.code().description()
        ))
    } else {
        exit.error(message)
    }
}

/// Asks the daemon to read its settings again; one line per change.
pub async fn reload(client: &mut Client) -> anyhow::Result<Vec<String>> {
    Ok(client
        .reload(bastion_proto::v1::ReloadRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_version_is_quiet() {
        assert_eq!(version_warning(CTL_VERSION), None);
        let warning = version_warning("0.0.1-old").unwrap();
        assert!(warning.contains("0.0.1-old") && warning.contains("restart"));
    }

    #[test]
    fn rpc_errors_keep_the_daemons_words() {
        let err = rpc_error(tonic::Status::already_exists(
            "port 2222 is taken by forward dev-ssh",
        ));
        assert_eq!(err.to_string(), "port 2222 is taken by forward dev-ssh");
        assert_eq!(Exit::of(&err), Exit::Failed);
        let err = rpc_error(tonic::Status::unavailable(""));
        assert!(err.to_string().contains("unavailable"), "{err}");
        let err = rpc_error(tonic::Status::not_found("no forward named x"));
        assert_eq!(Exit::of(&err), Exit::NotFound);
    }

    #[tokio::test]
    async fn an_empty_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect(Some(dir.path().join("none.sock")))
            .await
            .err()
            .unwrap();
        assert_eq!(Exit::of(&err), Exit::NotRunning);
    }
}

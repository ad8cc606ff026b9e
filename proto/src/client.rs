//! A gRPC client for the control socket, used by `bastionctl` and the tests.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::trust::{TrustError, check_directory, check_server};
use crate::v1::control_client::ControlClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Why the control socket could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "bastiond is not running (no daemon at {}). Start it with `systemctl --user start bastiond` or run `bastiond` in a terminal",
        socket.display()
    )]
    NotRunning { socket: PathBuf },
    #[error("cannot connect to bastiond at {}: {source}", socket.display())]
    Io { socket: PathBuf, source: io::Error },
    /// The socket is not this user's own daemon; nothing was sent.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    #[error("cannot talk to bastiond at {}: {source}", socket.display())]
    Transport {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
}

/// Connects to the daemon listening on `socket`, once it has checked that
/// the socket is the user's own daemon.
pub async fn connect(socket: &Path) -> Result<ControlClient<Channel>, ClientError> {
    check_directory(socket)?;
    // Connect here rather than in the connector so "nothing there" becomes a
    // clear NotRunning instead of a transport error buried in tonic's chain;
    // the connector hands this first stream to tonic and dials later ones.
    let first = UnixStream::connect(socket)
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
                socket: socket.to_path_buf(),
            },
            _ => ClientError::Io {
                socket: socket.to_path_buf(),
                source,
            },
        })?;
    check_server(socket, &first)?;
    let first = Arc::new(Mutex::new(Some(first)));
    let path = socket.to_path_buf();
    // The URI is a placeholder: every connection goes through the connector.
    let endpoint = Endpoint::from_static("http://[::]:50051");
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            let first = first.lock().unwrap_or_else(PoisonError::into_inner).take();
            async move {
                let stream = match first {
                    Some(stream) => stream,
                    None => {
                        // A reconnect could reach a socket swapped meanwhile.
                        check_directory(&path).map_err(io::Error::other)?;
                        let stream = UnixStream::connect(&path).await?;
                        check_server(&path, &stream).map_err(io::Error::other)?;
                        stream
                    }
                };
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| ClientError::Transport {
            socket: socket.to_path_buf(),
            source,
        })?;
    Ok(ControlClient::new(channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let err = connect(&socket).await.unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }));
        assert!(err.to_string().contains("systemctl --user start bastiond"));
    }
}

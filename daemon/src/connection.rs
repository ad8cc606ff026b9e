//! One client connection through a tunnel, forward or `Connect` alike: the
//! pump, and a fresh tunnel in place of one that failed before carrying
//! anything (within the connection's setup budget), so the client never
//! sees the Bastion's intermittent upgrade faults.

use bastion_proto::target::Target;
use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use crate::error::TunnelError;
use crate::pump::{self, ClientRead, PumpError, Traffic};
use crate::setup::Setup;
use crate::tunnel::{Connector, Tunnel};

/// Why a connection ended early; its text goes into the close event and,
/// for tunnel-side causes, the forward's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Open(#[from] TunnelError),
    #[error(transparent)]
    Pump(#[from] PumpError),
}

/// Where a connection goes.
pub struct Route<'a> {
    pub connector: &'a Connector,
    pub bastion: &'a str,
    pub target: &'a Target,
}

/// Carries `reader`/`writer` through `tunnel` until either side is done;
/// replaces the tunnel while it has carried nothing and `setup` allows.
pub async fn carry<R, W>(
    route: &Route<'_>,
    mut tunnel: Tunnel,
    setup: &mut Setup<'_>,
    mut reader: R,
    mut writer: W,
    meters: &[&Traffic],
    cancel: &CancellationToken,
) -> Result<(), ConnectionError>
where
    R: ClientRead,
    W: AsyncWrite + Unpin + Send,
{
    let mut replay = Bytes::new();
    loop {
        let options = route.connector.pump_options(setup);
        let Tunnel { socket, session } = tunnel;
        let result = pump::pump(
            &mut reader,
            &mut writer,
            socket,
            replay,
            &options,
            meters,
            cancel,
        )
        .await;
        drop(session);
        let error = match result {
            Err(PumpError::Unconfirmed {
                error,
                replay: held,
            }) => {
                replay = held;
                error
            }
            other => return Ok(other?),
        };
        tracing::info!(%error, attempt = setup.attempts(), replay = replay.len(), "tunnel failed before carrying anything");
        if !setup.retry().await {
            return Err(ConnectionError::Pump(*error));
        }
        tunnel = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            // Boxed: the open's state would otherwise sit in every live
            // connection's future for its whole life, unused.
            opened = Box::pin(route.connector.open(route.bastion, route.target, setup)) => opened?,
        };
    }
}

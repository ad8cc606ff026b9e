//! One client connection through a tunnel, forward or `Connect` alike: the
//! pump, and a fresh tunnel in place of one that failed before carrying
//! anything (within the connection's setup budget), so the client never
//! sees the Bastion's intermittent upgrade faults.

use std::time::Duration;

use bastion_proto::target::Target;
use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use crate::azure::vm_lookup::VmLookupError;
use crate::bastion::setup::Setup;
use crate::bastion::tunnel::{Connector, Tunnel};
use crate::error::AzureError;
use crate::relay::keepalive::Keepalive;
use crate::relay::pump::{self, ClientRead, PumpError, PumpOptions, Traffic};

/// A fresh tunnel that has neither sent a frame back nor been given client
/// bytes within this long is given up for another (the reported "101, then
/// nothing"): a healthy Bastion answers our first ping within a round trip,
/// and 5 s leaves room for a congested link without making ssh users wait long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection ended early; its text goes into the close event and,
/// for tunnel-side causes, the forward's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Open(#[from] AzureError),
    /// A declared forward's VM name could not be looked up.
    #[error(transparent)]
    Lookup(#[from] VmLookupError),
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
    setup: &mut Setup,
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
        let options = pump_options(route.connector, setup);
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

/// How tunnels behave, from `[tunnel]`; `setup` decides the probe.
fn pump_options(connector: &Connector, setup: &Setup) -> PumpOptions {
    let tunnel = &connector.settings().tunnel;
    let keepalive = Keepalive {
        interval: tunnel.keepalive_interval(),
        timeout: tunnel.keepalive_timeout(),
    };
    PumpOptions {
        keepalive,
        checks: Some(connector.tunnel_checks()),
        max_frame: tunnel.max_frame_bytes,
        eof_linger: tunnel.eof_linger(),
        // Pings off means the user does not trust them: no probe either.
        probe: (keepalive.interval.is_some() && !setup.is_last()).then_some(PROBE_TIMEOUT),
    }
}

//! WebSocket → client: data frames written through, control frames noted as
//! signs of life, the Bastion's Close turned into the client's EOF or an error.

use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{PumpError, Traffic};
use crate::error_body::printable;
use crate::relay::keepalive::Activity;

/// Returns when the Bastion closes the tunnel; wakes `confirmed` on its
/// first frame.
pub(super) async fn run<W, S>(
    mut writer: W,
    stream: &mut SplitStream<WebSocketStream<S>>,
    activity: &Activity,
    confirmed: &Notify,
    max_frame: usize,
    meters: &[&Traffic],
) -> Result<(), PumpError>
where
    W: AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = stream.next().await {
        let message = message.map_err(PumpError::Tunnel)?;
        let first = !activity.confirmed();
        activity.frame_received();
        if first {
            // Stored as a permit if upstream is not waiting yet.
            confirmed.notify_one();
        }
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(text) => text.into(),
            Message::Close(Some(frame)) if frame.code == CloseCode::Size => {
                return Err(PumpError::FrameTooBig(max_frame));
            }
            Message::Close(Some(frame)) if frame.code != CloseCode::Normal => {
                // The reason is the Bastion's text: made printable here,
                // where it enters, so every error built on it is.
                return Err(PumpError::Closed(format!(
                    "{} ({})",
                    printable(&frame.reason),
                    u16::from(frame.code)
                )));
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        if data.is_empty() {
            continue;
        }
        activity.data_received();
        activity.set_delivering(true);
        writer.write_all(&data).await.map_err(PumpError::Client)?;
        writer.flush().await.map_err(PumpError::Client)?;
        activity.set_delivering(false);
        for meter in meters {
            meter.down.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    if !activity.confirmed() {
        // Gone before a single frame: the reported "101, then nothing".
        return Err(PumpError::Vanished);
    }
    // The target finished: pass the EOF on (the client may be gone already).
    let _ = writer.shutdown().await;
    Ok(())
}

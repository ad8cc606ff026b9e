//! Opening a tunnel through a Bastion host: the [`tunnel::Connector`] (token →
//! bastion lookup → session → WebSocket, with retries within a [`setup`]
//! budget), the session token POST and DELETE, a Developer bastion's data pod
//! ([`data_pod`]), warm TLS connections and the
//! dial (TCP, TLS, HTTPS_PROXY). Uses `azure` and the leaves; never the bytes
//! of a connection (`relay`) or anything above it.

pub mod data_pod;
pub mod dial;
pub mod finish;
pub mod post;
pub mod proxy;
pub mod session;
pub mod setup;
pub mod spares;
pub mod tcp;
pub mod tunnel;
pub mod websocket;

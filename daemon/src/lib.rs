//! bastiond: a per-user daemon that keeps Azure Bastion tunnels to private IPs open.
//!
//! Module map, from the outside in:
//! - [`daemon`]: wiring, reload, shutdown; [`control`]: the gRPC service;
//!   [`notify`]: sd_notify; [`events`]: the `Watch` feed.
//! - [`forwards`]: the set of forwards; [`forward`]: one listener, its
//!   connections, state and counters; [`store`]: the state file.
//! - [`tunnel`]: opening a tunnel (token → bastion → session → WebSocket),
//!   built from [`auth`] (token cache), [`arm`] (bastion lookup), [`session`]
//!   (token POST / DELETE), [`proxy`] (HTTPS_PROXY for tunnels) and
//!   [`websocket`] (lenient upgrade).
//! - [`pump`]: bytes between a client and a tunnel, with keepalive.
//! - [`shared`]: state shared by forwards and the control service.
//! - [`config`]: the settings file; [`http`]: TLS and the HTTPS client;
//!   [`secret`]: redaction; [`paths`]: XDG locations; [`target`]: targets.
//! - [`client`]: the control-socket client used by bastionctl and tests.

pub mod arm;
pub mod auth;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod forward;
pub mod forwards;
pub mod http;
pub mod notify;
pub mod paths;
pub mod proxy;
pub mod pump;
pub mod secret;
pub mod session;
pub mod shared;
pub mod store;
pub mod target;
pub mod tunnel;
pub mod websocket;

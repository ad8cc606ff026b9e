//! bastiond: a per-user daemon that keeps Azure Bastion tunnels to private IPs open.
//!
//! Folders, from the outside in (each uses only those below it; the
//! `structure` test in `tests/` keeps it so):
//! - [`daemon`]: wiring, signals and shutdown; [`instance`]: the per-user
//!   lock and the control socket, at the [`paths`] of the user's files;
//!   [`notify`]: sd_notify.
//! - [`control`]: the gRPC API and what each call does (status, reload,
//!   connect, doctor, discover, VM names).
//! - [`forwards`]: local listeners, their counters and the state file.
//! - [`shared`]: what forwards and the control API share (the current
//!   connector, the event feed, the daemon's tasks); [`events`]: the feed.
//! - [`relay`]: bytes between a client and a tunnel, keepalive, the local socket.
//! - [`bastion`]: opening a tunnel (session, WebSocket, warm connections, dial).
//! - [`azure`]: Entra tokens and ARM (bastion and VM lookups), the HTTPS client.
//! - Leaves: [`config`] (the settings file), [`error`] (why Azure or a
//!   Bastion said no, with [`error_body`]: their answers as printable text),
//!   [`secret`] (redaction), [`wake`] (resumes from suspend and network
//!   changes, which `daemon` reacts to).
//!
//! Targets, the socket location, timestamps and the control client live in
//! `bastion_proto`, which `bastionctl` shares without this crate's stack.
//! `docs/DESIGN.md` ("Architecture") walks one connection through them.

pub mod azure;
pub mod bastion;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod error_body;
pub mod events;
pub mod forwards;
pub mod instance;
pub mod notify;
pub mod paths;
pub mod relay;
pub mod secret;
pub mod shared;
pub mod wake;

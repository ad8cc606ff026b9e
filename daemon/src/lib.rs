//! bastiond: a per-user daemon that keeps Azure Bastion tunnels to private IPs open.
//!
//! Module map, from the outside in (each module uses only those below it):
//! - [`daemon`]: wiring and shutdown; [`instance`]: the per-user lock and the
//!   control socket; [`control`]: the gRPC service; [`status`] and [`reload`]:
//!   what `Status` and `Reload` do; [`notify`]: sd_notify.
//! - [`doctor`] (with [`doctor_hints`], what to change): `Doctor`, the whole
//!   path run once with no cache; [`discover`]: `DiscoverBastions`.
//! - [`forwards`]: the set of forwards; [`forward`]: one listener, its
//!   connections, state and counters ([`client_socket`]: the local side); [`forward_name`]: names and ids;
//!   [`unrestored`]: saved forwards that
//!   could not be started, kept; [`peer_owner`]: whose socket a
//!   connection is (owner-only forwards); [`store`]: the state file;
//!   [`events`]: the `Watch` feed; [`shared`]: what forwards and the control
//!   service share.
//! - [`names`]: VM-name targets made resource ids, through [`vm_lookup`]
//!   (ARM VM listings, cached) and [`arm_list`] (paged ARM collections).
//! - [`connect`]: the `Connect` stream; [`connection`]: one client through a
//!   tunnel, replaced while it has carried nothing; [`pump`]: bytes between a
//!   client and a tunnel; [`keepalive`]: pings and the stall verdict.
//! - [`tunnel`]: opening a tunnel (token → bastion → session → WebSocket)
//!   with retries within a [`setup`] budget,
//!   built from [`auth`] (token cache, [`dev_tools`]), [`arm`] (bastion lookup, cached),
//!   [`session`] (token POST / DELETE, [`finish`] so none is lost half-way),
//!   [`spares`] (warm connections to recently used Bastion hosts, which carry
//!   the token POST through [`post`] and the upgrade through [`websocket`]:
//!   lenient upgrade, frame settings), [`dial`] (TCP and TLS to a Bastion,
//!   through [`proxy`]: HTTPS_PROXY).
//! - Leaves: [`bastion_host`] (what ARM says of a bastion and its checks),
//!   [`claims`] (who a token names, from its JWT payload),
//!   [`error`] (why a tunnel could not be opened), [`error_body`] (Azure's
//!   error answers as text), [`config`] (the settings file), [`http`] (TLS and
//!   the HTTPS client), [`secret`] (redaction), [`paths`] (XDG locations),
//!   [`lock`] (std locks).
//!
//! Targets, the socket location, timestamps and the control client live in
//! `bastion_proto`, which `bastionctl` shares without this crate's stack.

pub mod arm;
pub mod arm_list;
pub mod auth;
pub mod bastion_host;
pub mod claims;
pub mod client_socket;
pub mod config;
pub mod connect;
pub mod connection;
pub mod control;
pub mod daemon;
pub mod dev_tools;
pub mod dial;
pub mod discover;
pub mod doctor;
pub mod doctor_hints;
pub mod error;
pub mod error_body;
pub mod events;
pub mod finish;
pub mod forward;
pub mod forward_name;
pub mod forwards;
pub mod http;
pub mod instance;
pub mod keepalive;
pub mod lock;
pub mod names;
pub mod notify;
pub mod paths;
pub mod peer_owner;
pub mod post;
pub mod proxy;
pub mod pump;
pub mod reload;
pub mod secret;
pub mod session;
pub mod setup;
pub mod shared;
pub mod spares;
pub mod status;
pub mod store;
pub mod tunnel;
pub mod unrestored;
pub mod vm_lookup;
pub mod websocket;

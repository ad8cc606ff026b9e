//! bastiond: a per-user daemon that keeps Azure Bastion tunnels to private IPs open.
//!
//! Module map:
//! - [`paths`]: XDG locations of the config, state file and control socket.
//! - [`client`]: gRPC client for the control socket (bastionctl, tests).
//! - [`target`]: parsing and validation of targets (IP or VM id, port).

pub mod client;
pub mod paths;
pub mod target;

//! The control protocol of bastiond and what both ends of the socket share.
//!
//! Module map:
//! - [`v1`]: `bastion.v1.Control`, generated from `bastion/v1/control.proto`
//!   by tonic/prost.
//! - [`socket`]: where the control socket is (`BASTIOND_SOCKET`, XDG).
//! - [`client`]: connecting to it; [`trust`]: whether it is the user's own
//!   daemon (directory owner and mode, SO_PEERCRED).
//! - [`target`]: targets as users type them (`10.1.0.4:22`, a VM id).
//! - [`time`]: Unix milliseconds, the protocol's timestamps.
//!
//! `bastionctl` depends on this crate alone, which keeps it small and quick to
//! start (it runs once per ssh connection as a `ProxyCommand`).

pub mod client;
pub mod socket;
pub mod target;
pub mod time;
pub mod trust;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("bastion.v1");
}

/// Formats a target the way users type it: `10.1.0.4:22`, `[fd00::4]:22`.
impl std::fmt::Display for v1::Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') && !self.host.starts_with('/') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

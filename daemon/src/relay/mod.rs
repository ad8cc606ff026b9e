//! Bytes between a local client and a tunnel: one [`connection`] (a tunnel
//! replaced while it has carried nothing), the [`pump`] both ways, the
//! [`keepalive`] verdict, and the local socket's options and close. Uses
//! `bastion` to open tunnels; knows nothing of forwards or the control API.

pub mod client_socket;
pub mod connection;
pub mod keepalive;
pub mod pump;

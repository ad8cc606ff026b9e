//! Local listeners and what is saved of them: the [`set::Forwards`] (add,
//! remove, list, restore), one [`forward::Forward`] (listener, counters,
//! state; its [`destination`], and [`socks`] for SOCKS5 listeners), names, the owner-only rule ([`peer_owner`]) and the state file
//! ([`store`], with [`unrestored`] entries kept as they are). Uses `relay`
//! for each connection and `shared`; never the control API.

pub mod destination;
pub mod forward;
pub mod name;
pub mod peer_owner;
pub mod set;
pub mod socks;
pub mod store;
pub mod unrestored;

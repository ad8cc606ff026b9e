//! Local listeners and what is saved of them: the [`set::Forwards`] (add,
//! remove, list, restore, and the [`set::declared`] ones of the settings
//! file reconciled), their [`spec::ForwardSpec`] (whose [`destination`] is
//! one target or, for a SOCKS5 listener, each client's: [`socks`]) and
//! [`source::Source`], one [`forward::Forward`] (listener, counters,
//! state), names, the owner-only rule ([`peer_owner`]) and the state file
//! ([`store`], with [`unrestored`] entries kept as they are). Uses `relay`
//! for each connection and `shared`; never the control API.

pub mod destination;
pub mod forward;
pub mod name;
pub mod peer_owner;
pub mod set;
pub mod socks;
pub mod source;
pub mod spec;
pub mod store;
pub mod unrestored;

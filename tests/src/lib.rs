//! bastion-tests: the Bastion emulator and the end-to-end test support around it.
//!
//! - [`emulator`]: a stand-in for Entra ID, Azure Resource Manager and the Azure
//!   Bastion data plane over real TLS on 127.0.0.1 (library behind the
//!   `bastion-emulator` binary and every test).
//! - [`harness`]: runs the real `bastiond` and `bastionctl` against it (end-to-end tests).
//! - [`bench`]: the benchmark, (a) bastiond vs (b) a bare protocol client vs (c) direct TCP.

pub mod bench;
pub mod emulator;
pub mod harness;

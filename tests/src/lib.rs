//! bastion-tests: the Bastion emulator and the end-to-end test support around it.
//!
//! - [`emulator`]: a stand-in for Entra ID, Azure Resource Manager and the Azure
//!   Bastion data plane over real TLS on 127.0.0.1 (library behind the
//!   `bastion-emulator` binary and every test).
//! - [`harness`]: runs the real `bastiond` and `bastionctl` against it (end-to-end tests).
//! - [`bench`]: the benchmark, (a) bastiond vs (b) a bare protocol client vs (c) direct TCP.
//! - [`init_logging`]: the stderr logging of this crate's binaries.

pub mod bench;
pub mod emulator;
pub mod harness;

/// Logs to stderr, filtered by `RUST_LOG` or else `default_filter`; colours
/// only on a terminal (the binaries' stderr is usually a test's log file).
pub fn init_logging(default_filter: &str) {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
}

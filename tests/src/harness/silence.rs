//! A network path that goes silent, as when a laptop changes network or a
//! NAT forgets its state: the connections open at that moment get no more
//! packets through, no FIN, no RST, no acknowledgement, while new
//! connections pass. Packets are dropped where they arrive (the input
//! hook), so the sender's TCP counts them sent and unacknowledged, as across
//! a real network. A loopback proxy cannot play this (its kernel would
//! still acknowledge every byte), so the test runs in a network namespace
//! of its own ([`enter_private_network`]), where an nftables table drops
//! the packets of the connections to a port that exist when it is made
//! ([`Silence::existing`]) until it is dropped. Needs root (the namespace)
//! and `nft`, `ip` and `ss` (nftables and iproute2; `.ci/run` installs them).

use std::collections::BTreeSet;
use std::process::Stdio;

use anyhow::{Context as _, bail, ensure};
use nix::libc;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// The nftables table of the switch; the namespace is the test's own, so
/// the name cannot clash with anyone's.
const TABLE: &str = "silence";

/// Moves the calling thread into a new network namespace with its loopback
/// up. Call it first thing in a plain `#[test]`, before the runtime is
/// built: the runtime's threads, and every process they start (the daemon,
/// ssh), inherit it; other tests' threads do not.
pub fn enter_private_network() -> anyhow::Result<()> {
    // SAFETY: unshare takes flags only; it changes this thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let error = std::io::Error::last_os_error();
        bail!("cannot create a network namespace (the test needs root): {error}");
    }
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("cannot run `ip` (apt-get install iproute2)")?;
    ensure!(status.success(), "`ip link set lo up` failed: {status}");
    Ok(())
}

/// Drops every packet of the connections it silenced until it is lifted.
pub struct Silence {
    pub connections: usize,
}

impl Silence {
    /// Silences every established connection to `127.0.0.1:port`.
    pub async fn existing(port: u16) -> anyhow::Result<Silence> {
        let ports = client_ports(port).await?;
        ensure!(!ports.is_empty(), "no connection to port {port} to silence");
        let set = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let rules = format!(
            "table inet {TABLE} {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
             tcp sport {{ {set} }} drop\n  tcp dport {{ {set} }} drop\n }}\n}}\n"
        );
        nft(&["-f", "-"], Some(&rules)).await?;
        Ok(Silence {
            connections: ports.len(),
        })
    }

    /// The path comes back: the silenced connections' packets pass again.
    pub async fn lift(self) -> anyhow::Result<()> {
        nft(&["delete", "table", "inet", TABLE], None).await
    }
}

/// The local ports of the established connections to `127.0.0.1:port`.
async fn client_ports(port: u16) -> anyhow::Result<BTreeSet<u16>> {
    let output = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .output()
        .await
        .context("cannot run `ss` (apt-get install iproute2)")?;
    ensure!(output.status.success(), "ss failed: {:?}", output.status);
    let listed = String::from_utf8_lossy(&output.stdout);
    let peer = format!("127.0.0.1:{port}");
    Ok(listed
        .lines()
        .filter_map(|line| {
            let mut columns = line.split_whitespace().rev();
            let (remote, local) = (columns.next()?, columns.next()?);
            (remote == peer).then(|| local.rsplit_once(':')?.1.parse().ok())?
        })
        .collect())
}

async fn nft(args: &[&str], input: Option<&str>) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft` (apt-get install nftables)")?;
    let mut stdin = child.stdin.take().context("nft's stdin")?;
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).await?;
    }
    drop(stdin);
    let output = child.wait_with_output().await?;
    ensure!(
        output.status.success(),
        "nft {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

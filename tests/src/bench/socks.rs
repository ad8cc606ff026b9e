//! SOCKS5 cost: a SOCKS5 listener's connection is a forward's plus the
//! SOCKS handshake on the loopback (greeting and request), and should take
//! the same round trips to the Bastion. Timed from TCP connect to the first
//! echoed byte, in turns with the forward's (so the machine's drift hits
//! both alike); through the WAN delay line the figures are also in RTT.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::latency;
use super::metric::Better;
use super::stats::percentile_ms;
use super::suite::Run;
use super::world::Path;
use crate::emulator::ECHO_IP;
use crate::harness::net::local;
use crate::harness::socks::{self, Dest};
use crate::harness::within;

/// Bound for one setup: milliseconds on the LAN, a few round trips on a
/// WAN; this only catches a stuck path.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Untimed setups first: the listener's first connection looks up nothing
/// the forward's has not, but pays for the code's first run.
const WARM_UP: usize = 5;
/// The echo port the bench's forward uses too.
const ECHO_PORT: u16 = 7;

/// A connection through the SOCKS5 listener to the echo, up to its first echo.
async fn open(proxy: SocketAddr) -> anyhow::Result<()> {
    within("SOCKS5 setup", STEP_TIMEOUT, async {
        let dest = Dest::Ip(IpAddr::V4(ECHO_IP));
        let mut stream = socks::connect(proxy, &dest, ECHO_PORT).await?;
        latency::first_echo(&mut stream).await
    })
    .await
}

impl Run<'_> {
    /// Adds a SOCKS5 listener, then times `setup_conns` setups through it
    /// and as many through the echo forward, alternating.
    pub(super) async fn socks(&mut self) {
        let n = self.opts.setup_conns;
        let sampled = self.socks_samples(n).await;
        let sampled = self.note("SOCKS5 (a3) against a forward", sampled);
        // [socks, forward, extra][p50, p99], ms.
        let mut figures = [[None; 2]; 3];
        if let Some((forward, socks)) = sampled {
            for (j, p) in [50.0, 99.0].into_iter().enumerate() {
                let f = percentile_ms(&forward, p);
                let s = percentile_ms(&socks, p);
                figures[0][j] = s;
                figures[1][j] = f;
                figures[2][j] = s.zip(f).map(|(s, f)| s - f);
            }
        }
        self.progress("SOCKS5 extra p50", "(a3)", figures[2][0], "ms");
        self.settle("SOCKS5").await;
        let wan = self.opts.wan_rtt().is_some();
        let prefix = if wan { "wan.socks" } else { "socks" };
        let rows = [
            ("setup", format!("(a3) SOCKS5 listener setup ({n})")),
            ("forward", format!("(a) forward, alongside (a3) ({n})")),
            ("extra", "SOCKS5 extra, (a3) − (a)".to_owned()),
        ];
        let rtt_ms = self.opts.rtt_ms as f64;
        let sheet = &mut self.out.sheet;
        for ((key, label), values) in rows.iter().zip(figures) {
            for (p, value) in ["p50", "p99"].into_iter().zip(values) {
                let key = format!("{prefix}.{key}.{p}");
                let label = format!("{label} {p}");
                if wan {
                    let in_rtt = value.map(|ms| ms / rtt_ms);
                    sheet.daemon(&format!("{key}_rtt"), &label, "RTT", Better::Lower, in_rtt);
                }
                sheet.daemon(&format!("{key}_ms"), &label, "ms", Better::Lower, value);
            }
        }
    }

    /// `n` forward setups and `n` SOCKS5 setups, alternating.
    async fn socks_samples(&self, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let port = crate::harness::net::free_port()?;
        let port_text = port.to_string();
        self.world
            .env
            .ctl_ok(&["socks", "add", &port_text, "--name", "bench-socks"])
            .await?;
        let proxy = local(port);
        let echo = self.world.routes(Path::Daemon).echo;
        for _ in 0..WARM_UP {
            open(proxy).await?;
        }
        let (mut forward, mut socks) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let start = Instant::now();
            drop(latency::open(echo).await?);
            forward.push(start.elapsed());
            let start = Instant::now();
            open(proxy).await?;
            socks.push(start.elapsed());
        }
        Ok((forward, socks))
    }
}

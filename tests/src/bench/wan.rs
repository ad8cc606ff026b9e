//! WAN mode (`bench --rtt-ms N`): the emulator behind a delay line of N ms
//! round trip, and the setup and round-trip figures through it, setup in
//! round trips (RTT units) as well as ms: (a) a forward, (a2) `bastionctl
//! connect`, (b) the bare client, (c) direct TCP to an echo behind the same
//! delay line (its TCP handshake and the echo: 2 RTT). The floor for a
//! tunnel is 3: token POST, WebSocket upgrade, first byte there and back.

use std::time::Duration;

use super::latency;
use super::metric::{Better, Sheet};
use super::proxycommand;
use super::stats::percentile_ms;
use super::suite::Run;
use super::world::Path;

/// Untimed connections per path before the timed ones: the daemon's first
/// token, its bastion lookup and the pools each client keeps are set up by
/// them, as they would be for a user who has been working for a while.
const WARM_UP_CONNS: usize = 5;
/// The setup percentiles shown.
const PERCENTILES: [(f64, &str); 3] = [(50.0, "p50"), (90.0, "p90"), (99.0, "p99")];

impl Run<'_> {
    /// WAN mode: the forwards, a warm-up, setup and round trips; false if
    /// the daemon could not be set up. Idle resources, bulk and concurrency
    /// are LAN figures and are skipped.
    pub(super) async fn measure_wan(&mut self) -> bool {
        let added = self.world.add_forwards().await;
        if self.note("adding the forwards", added).is_none() {
            return false;
        }
        self.warm_up().await;
        self.wan_latency().await;
        self.socks().await;
        true
    }

    async fn wan_latency(&mut self) {
        let rtt_ms = self.opts.rtt_ms as f64;
        let (conns, count) = (self.opts.setup_conns, self.opts.rtt_count);
        // [percentile][path], ms.
        let mut setup = [[None; 3]; 3];
        let mut connect = [None; 3];
        let mut round_trip = [[None; 3]; 2];
        for (i, path) in Path::ALL.into_iter().enumerate() {
            let echo = self.world.routes(path).echo;
            let samples = async {
                for _ in 0..WARM_UP_CONNS {
                    drop(latency::open(echo).await?);
                }
                latency::setup_samples(echo, conns).await
            }
            .await;
            if let Some(s) = self.note(&format!("WAN setup {}", path.label()), samples) {
                setup_percentiles(&s, |j, v| setup[j][i] = v);
            }
            let in_rtt = setup[0][i].map(|ms| ms / rtt_ms);
            self.progress("WAN setup p50", path.label(), in_rtt, "RTT");
            self.settle("WAN setup").await;
            if path == Path::Daemon {
                let samples = proxycommand::connect_samples(&self.world.env, conns, self.log).await;
                if let Some(s) = self.note("WAN setup (a2) bastionctl connect", samples) {
                    setup_percentiles(&s, |j, v| connect[j] = v);
                }
                let in_rtt = connect[0].map(|ms| ms / rtt_ms);
                self.progress("WAN setup p50", "(a2) connect", in_rtt, "RTT");
                self.settle("WAN setup via connect").await;
            }
            let samples = latency::rtt_samples(echo, count).await;
            if let Some(s) = self.note(&format!("WAN round trip {}", path.label()), samples) {
                round_trip[0][i] = percentile_ms(&s, 50.0);
                round_trip[1][i] = percentile_ms(&s, 99.0);
            }
            self.progress("WAN round trip p50", path.label(), round_trip[0][i], "ms");
            self.settle("WAN round trips").await;
        }
        let sheet = &mut self.out.sheet;
        let setup_label = format!("setup, connect→first echo ({conns} conns)");
        let connect_label = format!("(a2) bastionctl connect ({conns})");
        // Setup in round trips first (the figures to read), then in ms.
        for (unit, key_unit, per_ms) in [("RTT", "rtt", 1.0 / rtt_ms), ("ms", "ms", 1.0)] {
            let scale = |v: Option<f64>| v.map(|ms| ms * per_ms);
            for (j, (_, p)) in PERCENTILES.iter().enumerate() {
                sheet.paths(
                    &format!("wan.setup.{p}_{key_unit}"),
                    &format!("{setup_label} {p}"),
                    unit,
                    Better::Lower,
                    setup[j].map(scale),
                );
            }
            for (j, (_, p)) in PERCENTILES.iter().enumerate() {
                sheet.daemon(
                    &format!("wan.connect.{p}_{key_unit}"),
                    &format!("{connect_label} {p}"),
                    unit,
                    Better::Lower,
                    scale(connect[j]),
                );
            }
        }
        push_round_trips(sheet, count, rtt_ms, round_trip);
    }
}

/// The percentiles of `samples` in ms, handed to `put(index, value)`.
fn setup_percentiles(samples: &[Duration], mut put: impl FnMut(usize, Option<f64>)) {
    for (j, (p, _)) in PERCENTILES.iter().enumerate() {
        put(j, percentile_ms(samples, *p));
    }
}

/// Round trips: p50 in RTT units (≈ 1 when nothing adds to the line), p50
/// and p99 in ms.
fn push_round_trips(sheet: &mut Sheet, count: usize, rtt_ms: f64, rtt: [[Option<f64>; 3]; 2]) {
    let label = format!("{}-byte round trip ({count})", latency::MESSAGE);
    sheet.paths(
        "wan.rtt.p50_rtt",
        &format!("{label} p50"),
        "RTT",
        Better::Lower,
        rtt[0].map(|v| v.map(|ms| ms / rtt_ms)),
    );
    sheet.paths(
        "wan.rtt.p50_ms",
        &format!("{label} p50"),
        "ms",
        Better::Lower,
        rtt[0],
    );
    sheet.paths(
        "wan.rtt.p99_ms",
        &format!("{label} p99"),
        "ms",
        Better::Lower,
        rtt[1],
    );
}

//! One run of the benchmark: a fresh world, every measurement on every path
//! in turn ((a), (b), (c) back to back, so drift in the machine's load hits
//! them alike), waiting for the emulator to be quiet between measurements.
//! Failures are recorded and the run goes on; nothing panics. Progress goes
//! to the bench log. WAN mode (`--rtt-ms`) measures only setup and round
//! trips ([`wan`](super::wan)); the LAN run adds the ProxyCommand figures
//! ([`proxycommand`](super::proxycommand)) and kubectl's through an AKS
//! forward ([`aks`](super::aks)) after its latency. Both time a SOCKS5
//! listener against a forward ([`socks`](super::socks)).

use std::time::Duration;

use super::bulk;
use super::concurrency;
use super::latency;
use super::log::BenchLog;
use super::metric::{Better, Sheet};
use super::options::Options;
use super::resources;
use super::stats::percentile_ms;
use super::world::{Path, Routes, World};

/// Bytes per gigabyte in the CPU-per-GB figure (decimal, like MB/s).
const GB: f64 = 1e9;

/// What one run produced.
#[derive(Default)]
pub struct RunOutput {
    pub sheet: Sheet,
    pub failures: Vec<String>,
}

/// Runs every measurement once; `tag` prefixes progress lines ("run 1/3").
pub async fn run(opts: &Options, tag: &str, upload_sha256: &str, log: &BenchLog) -> RunOutput {
    let mut out = RunOutput::default();
    let world = match World::start(opts, log).await {
        Ok(world) => world,
        Err(e) => {
            out.failures.push(format!("{tag}: cannot start: {e:#}"));
            return out;
        }
    };
    let mut run = Run {
        tag,
        opts,
        out,
        world,
        log,
    };
    let measured = if opts.wan_rtt().is_some() {
        run.measure_wan().await
    } else {
        run.measure(upload_sha256).await
    };
    if measured {
        let settled = run.world.settle().await;
        run.note("teardown", settled);
    }
    let Run { mut out, world, .. } = run;
    match world.stop(log, tag).await {
        Ok(0) => {}
        Ok(leaked) => out.failures.push(format!(
            "{tag}: {leaked} Bastion sessions left after shutdown"
        )),
        Err(e) => out.failures.push(format!("{tag}: shutdown: {e:#}")),
    }
    out
}

/// One run in progress; the measurements of other files add to it.
pub(super) struct Run<'a> {
    pub(super) tag: &'a str,
    pub(super) opts: &'a Options,
    pub(super) out: RunOutput,
    pub(super) world: World,
    pub(super) log: &'a BenchLog,
}

impl Run<'_> {
    /// Keeps a result's value, or records its failure.
    pub(super) fn note<T>(&mut self, what: &str, result: anyhow::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                let failure = format!("{}: {what}: {e:#}", self.tag);
                self.log.line(&format!("FAILED {failure}"));
                self.out.failures.push(failure);
                None
            }
        }
    }

    /// A progress line for the log: `what` on `path` came out at `value`.
    pub(super) fn progress(&self, what: &str, path: &str, value: Option<f64>, unit: &str) {
        self.log.line(&match value {
            Some(v) => format!("[{}] {what} {path}: {v:.3} {unit}", self.tag),
            None => format!("[{}] {what} {path}: failed", self.tag),
        });
    }

    /// Lets the emulator drain between measurements; a failure is recorded.
    pub(super) async fn settle(&mut self, after: &str) {
        let settled = self.world.settle().await;
        self.note(&format!("sessions after {after}"), settled);
    }

    /// Everything, in order; false if the daemon could not be set up.
    async fn measure(&mut self, upload_sha256: &str) -> bool {
        if !self.daemon_at_rest().await {
            return false;
        }
        // Latency first, on a fresh daemon: after the bursts of connections
        // below, pools of idle HTTPS connections linger for a while.
        self.warm_up().await;
        self.latency().await;
        self.proxycommand().await;
        self.socks().await;
        self.aks().await;
        self.idle_connections().await;
        self.bulk(upload_sha256).await;
        self.concurrency().await;
        true
    }

    /// RSS idle and per forward, CPU while idle.
    async fn daemon_at_rest(&mut self) -> bool {
        let process = self.world.process;
        let idle = process.rss_kib();
        let idle = self.note("daemon RSS", idle);
        let added = self.world.add_forwards().await;
        if self.note("adding the forwards", added).is_none() {
            return false;
        }
        let before = process.rss_kib();
        let extra = self.opts.extra_forwards;
        let added = self.world.add_idle_forwards(extra).await;
        let after = process.rss_kib();
        let per_forward = match (before, added, after) {
            (Ok(before), Ok(()), Ok(after)) => Ok(after as f64 - before as f64),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };
        let per_forward = self
            .note("RSS per forward", per_forward)
            .map(|d| d / extra.max(1) as f64);
        let cpu = process.cpu_percent_over(self.opts.idle_window()).await;
        let cpu = self.note("idle CPU", cpu);
        let sheet = &mut self.out.sheet;
        sheet.daemon(
            "daemon.rss_idle_kib",
            "daemon RSS, idle, no forwards",
            "KiB",
            Better::Lower,
            idle.map(|v| v as f64),
        );
        sheet.daemon(
            "daemon.rss_per_forward_kib",
            "daemon RSS per forward",
            "KiB",
            Better::Lower,
            per_forward,
        );
        sheet.daemon(
            "daemon.cpu_idle_pct",
            "daemon CPU, idle (forwards, no conns)",
            "%",
            Better::Lower,
            cpu,
        );
        true
    }

    /// One connection per path first: the daemon fetches its token (az) and
    /// looks the bastion up, and every path's TLS session gets cached.
    pub(super) async fn warm_up(&mut self) {
        for path in Path::ALL {
            let opened = latency::open(self.world.routes(path).echo).await;
            self.note(&format!("warm-up {}", path.label()), opened.map(drop));
        }
        self.settle("warm-up").await;
    }

    /// RSS per idle connection and CPU with them open, for the daemon and
    /// the bare client (when it has a process of its own).
    async fn idle_connections(&mut self) {
        let n = self.opts.idle_conns;
        if n == 0 {
            return;
        }
        let mut rss = [None; 3];
        let mut cpu = [None; 3];
        for (i, path) in Path::ALL.into_iter().enumerate() {
            let Some(process) = self.world.process_of(path) else {
                continue;
            };
            let before = process.rss_kib();
            let opened = resources::open_idle(self.world.routes(path).echo, n).await;
            let after = process.rss_kib();
            let busy = process.cpu_percent_over(self.opts.idle_window()).await;
            let per_conn = match (before, &opened, after) {
                (Ok(before), Ok(_), Ok(after)) => Ok((after as f64 - before as f64) / n as f64),
                (Err(e), _, _) | (_, _, Err(e)) => Err(e),
                (_, Err(e), _) => Err(anyhow::anyhow!("{e:#}")),
            };
            drop(opened);
            let what = format!("{n} idle connections {}", path.label());
            rss[i] = self.note(&format!("RSS with {what}"), per_conn);
            cpu[i] = self.note(&format!("CPU with {what}"), busy);
            self.progress("RSS per idle conn", path.label(), rss[i], "KiB");
            self.settle("idle connections").await;
        }
        let sheet = &mut self.out.sheet;
        sheet.paths(
            "rss_per_idle_conn_kib",
            &format!("RSS per idle conn ({n} open)"),
            "KiB",
            Better::Lower,
            rss,
        );
        sheet.paths(
            "cpu_idle_conns_pct",
            &format!("CPU with {n} idle conns"),
            "%",
            Better::Lower,
            cpu,
        );
    }

    /// Upload, download, both ways on every path; CPU per GB of the daemon
    /// and the bare client.
    async fn bulk(&mut self, upload_sha256: &str) {
        let bytes = self.opts.bulk_bytes;
        let mut cpu_total = [Some(Duration::ZERO); 3];
        let mut moved_total = 0u64;
        for kind in ["upload", "download", "both"] {
            let mut rate = [None; 3];
            let mut cpu = [None; 3];
            for (i, path) in Path::ALL.into_iter().enumerate() {
                let Routes { echo, source, sink } = self.world.routes(path);
                let process = self.world.process_of(path);
                let before = process.map(|p| p.cpu());
                let took = match kind {
                    "upload" => bulk::upload(sink, bytes, upload_sha256).await,
                    "download" => bulk::download(source, bytes).await,
                    _ => bulk::both_ways(echo, bytes).await,
                };
                let after = process.map(|p| p.cpu());
                let took = self.note(&format!("bulk {kind} {}", path.label()), took);
                rate[i] = took.map(|t| bulk::mb_per_sec(bytes, t));
                self.progress(&format!("bulk {kind}"), path.label(), rate[i], "MB/s");
                if let (Some(_), Some(Ok(before)), Some(Ok(after))) = (took, before, after) {
                    cpu[i] = Some(after.saturating_sub(before));
                }
                self.settle(&format!("bulk {kind}")).await;
            }
            // Bytes through the forwarder: both ways moves them twice.
            let moved = if kind == "both" { 2 * bytes } else { bytes };
            let per_gb = cpu.map(|c| c.map(|c| c.as_secs_f64() / (moved as f64 / GB)));
            for (total, c) in cpu_total.iter_mut().zip(cpu) {
                *total = total.zip(c).map(|(t, c)| t + c);
            }
            moved_total += moved;
            let label = if kind == "both" {
                "bulk both ways (each way)".to_owned()
            } else {
                format!("bulk {kind}")
            };
            let sheet = &mut self.out.sheet;
            sheet.paths(
                &format!("bulk.{kind}_mbs"),
                &label,
                "MB/s",
                Better::Higher,
                rate,
            );
            sheet.paths(
                &format!("cpu_s_per_gb.{kind}"),
                &format!("forwarder CPU per GB, {kind}"),
                "s/GB",
                Better::Lower,
                per_gb,
            );
        }
        let overall = cpu_total.map(|c| c.map(|c| c.as_secs_f64() / (moved_total as f64 / GB)));
        self.out.sheet.paths(
            "cpu_s_per_gb",
            "forwarder CPU per GB, all bulk",
            "s/GB",
            Better::Lower,
            overall,
        );
    }

    /// Setup p50/p99 and 64-byte round trip p50/p99 on every path.
    async fn latency(&mut self) {
        let (conns, count) = (self.opts.setup_conns, self.opts.rtt_count);
        let mut setup = [[None; 3]; 2];
        let mut rtt = [[None; 3]; 2];
        for (i, path) in Path::ALL.into_iter().enumerate() {
            let echo = self.world.routes(path).echo;
            let samples = latency::setup_samples(echo, conns).await;
            if let Some(s) = self.note(&format!("setup {}", path.label()), samples) {
                setup[0][i] = percentile_ms(&s, 50.0);
                setup[1][i] = percentile_ms(&s, 99.0);
            }
            self.progress("setup p50", path.label(), setup[0][i], "ms");
            self.settle("setup").await;
            let samples = latency::rtt_samples(echo, count).await;
            if let Some(s) = self.note(&format!("round trip {}", path.label()), samples) {
                rtt[0][i] = percentile_ms(&s, 50.0);
                rtt[1][i] = percentile_ms(&s, 99.0);
            }
            self.progress("round trip p50", path.label(), rtt[0][i], "ms");
            self.settle("round trips").await;
        }
        let sheet = &mut self.out.sheet;
        let setup_label = format!("setup, connect→first echo ({conns} conns)");
        sheet.paths(
            "setup.p50_ms",
            &format!("{setup_label} p50"),
            "ms",
            Better::Lower,
            setup[0],
        );
        sheet.paths(
            "setup.p99_ms",
            &format!("{setup_label} p99"),
            "ms",
            Better::Lower,
            setup[1],
        );
        let rtt_label = format!("{}-byte round trip ({count})", latency::MESSAGE);
        sheet.paths(
            "rtt.p50_ms",
            &format!("{rtt_label} p50"),
            "ms",
            Better::Lower,
            rtt[0],
        );
        sheet.paths(
            "rtt.p99_ms",
            &format!("{rtt_label} p99"),
            "ms",
            Better::Lower,
            rtt[1],
        );
    }

    /// Every concurrency level on every path.
    async fn concurrency(&mut self) {
        for conns in self.opts.conc_levels.clone() {
            let mut throughput = [None; 3];
            let mut errors = [None; 3];
            let mut setup = [None; 3];
            for (i, path) in Path::ALL.into_iter().enumerate() {
                let level =
                    concurrency::level(self.world.routes(path).echo, conns, self.opts.conc_bytes)
                        .await;
                throughput[i] = Some(level.throughput);
                errors[i] = Some(level.errors as f64);
                setup[i] = Some(level.setup_secs);
                self.progress(
                    &format!("{conns} conns"),
                    path.label(),
                    throughput[i],
                    "MB/s",
                );
                if let Some(first) = level.first_error {
                    let failure: anyhow::Result<()> = Err(anyhow::anyhow!(
                        "{} of {conns} failed; first: {first}",
                        level.errors
                    ));
                    self.note(&format!("{conns} concurrent {}", path.label()), failure);
                }
                self.settle(&format!("{conns} concurrent connections"))
                    .await;
            }
            let sheet = &mut self.out.sheet;
            sheet.paths(
                &format!("conc.{conns}.throughput_mbs"),
                &format!("{conns} conns: echo throughput"),
                "MB/s",
                Better::Higher,
                throughput,
            );
            sheet.paths(
                &format!("conc.{conns}.errors"),
                &format!("{conns} conns: errors"),
                "conns",
                Better::Lower,
                errors,
            );
            sheet.paths(
                &format!("conc.{conns}.open_s"),
                &format!("{conns} conns: time to open all"),
                "s",
                Better::Lower,
                setup,
            );
        }
    }
}

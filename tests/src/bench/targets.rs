//! The goals of issue 5 part 2 and issue 9, judged on a benchmark's figures:
//! (a) against the bare client (b) measured in the same run, and absolute
//! daemon limits. A goal whose figure the run did not set out to measure (a
//! WAN goal on the LAN, and the other way round) is left out.

use serde::Serialize;

use super::metric::Sheet;
use super::world::Path;

/// How a goal reads its metric.
#[derive(Clone, Copy)]
enum Measure {
    /// The median (a)/(b) ratio.
    AOverB,
    /// The daemon's median.
    Daemon,
    /// The daemon's worst run (a goal like "zero errors" holds in every run).
    DaemonWorst,
}

#[derive(Clone, Copy)]
enum Limit {
    AtLeast(f64),
    AtMost(f64),
}

const GOALS: [(&str, &str, Measure, Limit); 13] = [
    (
        "bulk upload ≥ 0.9× bare",
        "bulk.upload_mbs",
        Measure::AOverB,
        Limit::AtLeast(0.9),
    ),
    (
        "bulk download ≥ 0.9× bare",
        "bulk.download_mbs",
        Measure::AOverB,
        Limit::AtLeast(0.9),
    ),
    (
        "bulk both ways ≥ 0.9× bare",
        "bulk.both_mbs",
        Measure::AOverB,
        Limit::AtLeast(0.9),
    ),
    (
        "setup p50 ≤ 1.1× bare",
        "setup.p50_ms",
        Measure::AOverB,
        Limit::AtMost(1.1),
    ),
    (
        "round trip p50 ≤ 1.2× bare",
        "rtt.p50_ms",
        Measure::AOverB,
        Limit::AtMost(1.2),
    ),
    (
        "setup p99 ≤ 1.5× bare (issue 9)",
        "setup.p99_ms",
        Measure::AOverB,
        Limit::AtMost(1.5),
    ),
    (
        "round trip p99 ≤ 1.5× bare (issue 9)",
        "rtt.p99_ms",
        Measure::AOverB,
        Limit::AtMost(1.5),
    ),
    (
        "ProxyCommand extra p50 ≤ 2 ms (issue 9)",
        "proxycommand.extra.p50_ms",
        Measure::Daemon,
        Limit::AtMost(2.0),
    ),
    (
        "WAN setup p50 ≤ 3.2 RTT, forward (issue 9)",
        "wan.setup.p50_rtt",
        Measure::Daemon,
        Limit::AtMost(3.2),
    ),
    (
        "WAN setup p50 ≤ 3.2 RTT, connect (issue 9)",
        "wan.connect.p50_rtt",
        Measure::Daemon,
        Limit::AtMost(3.2),
    ),
    (
        "1000 concurrent conns, 0 errors",
        "conc.1000.errors",
        Measure::DaemonWorst,
        Limit::AtMost(0.0),
    ),
    (
        "≤ 64 KiB RSS per idle conn",
        "rss_per_idle_conn_kib",
        Measure::Daemon,
        Limit::AtMost(64.0),
    ),
    (
        "idle daemon 0% CPU",
        "daemon.cpu_idle_pct",
        Measure::Daemon,
        Limit::AtMost(0.0),
    ),
];

/// One goal, judged.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub goal: &'static str,
    pub key: &'static str,
    pub value: Option<f64>,
    /// None when the figure is missing (not measured or failed).
    pub met: Option<bool>,
}

/// Judges every goal on the medians (and the runs, for worst-run goals).
pub fn judge(median: &Sheet, runs: &[Sheet]) -> Vec<Verdict> {
    GOALS
        .iter()
        .filter(|(_, key, _, _)| runs.iter().any(|r| r.get(key).is_some()))
        .map(|&(goal, key, measure, limit)| {
            let value = match measure {
                Measure::AOverB => median.get(key).and_then(|m| m.a_over_b),
                Measure::Daemon => median.get(key).and_then(|m| m.value(Path::Daemon)),
                Measure::DaemonWorst => runs
                    .iter()
                    .filter_map(|r| r.get(key).and_then(|m| m.value(Path::Daemon)))
                    .reduce(f64::max),
            };
            let met = value.map(|v| match limit {
                Limit::AtLeast(l) => v >= l,
                Limit::AtMost(l) => v <= l,
            });
            Verdict {
                goal,
                key,
                value,
                met,
            }
        })
        .collect()
}

//! Figures as a flat list of named metrics, each with a value per path, so
//! medians across runs, ratios, the table and the JSON are written once.

use std::time::Duration;

use serde::Serialize;

use super::stats;
use super::world::Path;

/// Which way is better for a metric (and so how to read its ratios).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    /// Stable name in the JSON, e.g. "bulk.upload".
    pub key: String,
    /// What the table shows.
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    /// (a) bastiond, (b) bare client, (c) direct; None when not measured or failed.
    pub daemon: Option<f64>,
    pub bare: Option<f64>,
    pub direct: Option<f64>,
    /// (a)/(b) and (a)/(c).
    pub a_over_b: Option<f64>,
    pub a_over_c: Option<f64>,
}

impl Metric {
    fn new(
        key: &str,
        label: &str,
        unit: &'static str,
        better: Better,
        v: [Option<f64>; 3],
    ) -> Metric {
        let ratio = |den: Option<f64>| match (v[0], den) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        };
        Metric {
            key: key.to_owned(),
            label: label.to_owned(),
            unit,
            better,
            daemon: v[0],
            bare: v[1],
            direct: v[2],
            a_over_b: ratio(v[1]),
            a_over_c: ratio(v[2]),
        }
    }

    pub fn value(&self, path: Path) -> Option<f64> {
        match path {
            Path::Daemon => self.daemon,
            Path::Bare => self.bare,
            Path::Direct => self.direct,
        }
    }
}

/// The metrics of one run (or their medians), in measurement order.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Sheet(pub Vec<Metric>);

impl Sheet {
    /// A figure measured on every path.
    pub fn paths(
        &mut self,
        key: &str,
        label: &str,
        unit: &'static str,
        better: Better,
        v: [Option<f64>; 3],
    ) {
        self.0.push(Metric::new(key, label, unit, better, v));
    }

    /// A figure of the daemon alone.
    pub fn daemon(
        &mut self,
        key: &str,
        label: &str,
        unit: &'static str,
        better: Better,
        v: Option<f64>,
    ) {
        self.0
            .push(Metric::new(key, label, unit, better, [v, None, None]));
    }

    /// Two of the daemon's figures sampled in turns, and their difference
    /// (first − second): p50 and p99 rows for each of `rows` (key, label),
    /// empty when `samples` failed. Returns the difference at p50.
    pub fn daemon_pair(
        &mut self,
        rows: &[(&str, String); 3],
        samples: Option<&(Vec<Duration>, Vec<Duration>)>,
    ) -> Option<f64> {
        let mut figures = [[None; 2]; 3];
        if let Some((first, second)) = samples {
            for (j, p) in [50.0, 99.0].into_iter().enumerate() {
                let a = stats::percentile_ms(first, p);
                let b = stats::percentile_ms(second, p);
                figures[0][j] = a;
                figures[1][j] = b;
                figures[2][j] = a.zip(b).map(|(a, b)| a - b);
            }
        }
        for ((key, label), values) in rows.iter().zip(figures) {
            for (p, value) in ["p50", "p99"].into_iter().zip(values) {
                self.daemon(
                    &format!("{key}.{p}_ms"),
                    &format!("{label} {p}"),
                    "ms",
                    Better::Lower,
                    value,
                );
            }
        }
        figures[2][0]
    }

    pub fn get(&self, key: &str) -> Option<&Metric> {
        self.0.iter().find(|m| m.key == key)
    }

    /// Per metric and path, the median over `runs` (keys in first-seen
    /// order). Ratios are medians of each run's own ratio: (a), (b) and (c)
    /// run back to back within a run, so its ratio cancels the machine's
    /// drift between runs, which a ratio of medians would not.
    pub fn medians(runs: &[Sheet]) -> Sheet {
        let mut keys: Vec<&Metric> = Vec::new();
        for metric in runs.iter().flat_map(|r| &r.0) {
            if !keys.iter().any(|k| k.key == metric.key) {
                keys.push(metric);
            }
        }
        let mut out = Sheet::default();
        for first in keys {
            let of = |field: fn(&Metric) -> Option<f64>| {
                stats::median(runs.iter().map(|r| r.get(&first.key).and_then(field)))
            };
            let v = [of(|m| m.daemon), of(|m| m.bare), of(|m| m.direct)];
            let mut metric = Metric::new(&first.key, &first.label, first.unit, first.better, v);
            metric.a_over_b = of(|m| m.a_over_b);
            metric.a_over_c = of(|m| m.a_over_c);
            out.0.push(metric);
        }
        out
    }
}

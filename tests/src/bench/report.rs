//! The benchmark's output: a plain-text table (medians, ratios, goals) and a
//! JSON file with every run's figures, the options and the machine.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use super::machine::Machine;
use super::metric::Sheet;
use super::options::Options;
use super::targets::Verdict;

#[derive(Serialize)]
pub struct Report {
    /// How to reproduce this report.
    pub command: String,
    pub machine: Machine,
    pub options: Options,
    /// Median over runs per figure and path; ratios are medians of per-run ratios.
    pub median: Sheet,
    pub runs: Vec<Sheet>,
    pub targets: Vec<Verdict>,
    pub failures: Vec<String>,
}

impl Report {
    /// Writes the JSON report, creating its directory.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// The table, the goals and the failures, for a terminal or a Markdown file.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let load = |l: Option<[f64; 3]>| {
            l.map_or("?".to_owned(), |l| {
                format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
            })
        };
        let _ = writeln!(
            out,
            "machine: {} ({} cores), Linux {}; load before {}, after {}",
            m.cpu_model,
            m.cores,
            m.kernel,
            load(m.load_before),
            load(m.load_after)
        );
        let _ = writeln!(out, "command: {}", self.command);
        let _ = writeln!(
            out,
            "medians of {} run(s); MB = 10^6 bytes; a/b and a/c: medians of each run's ratio",
            self.runs.len()
        );
        let _ = writeln!(
            out,
            "(a2): `bastionctl connect` as ssh's ProxyCommand, spawn→first echo, in the (a) column; \
             \"alongside (a2)\": forward setups taken in turns with it"
        );
        if self.options.rtt_ms > 0 {
            let _ = writeln!(
                out,
                "WAN mode: {} ms round trip in front of the emulator and of (c)'s echo; RTT = ms / {}; \
                 bulk, concurrency, idle memory and CPU not measured",
                self.options.rtt_ms, self.options.rtt_ms
            );
        }
        out.push('\n');
        let rows: Vec<[String; 7]> = self
            .median
            .0
            .iter()
            .map(|metric| {
                [
                    metric.label.clone(),
                    metric.unit.to_owned(),
                    number(metric.daemon),
                    number(metric.bare),
                    number(metric.direct),
                    ratio(metric.a_over_b),
                    ratio(metric.a_over_c),
                ]
            })
            .collect();
        let header = [
            "figure",
            "unit",
            "(a) bastiond",
            "(b) bare",
            "(c) direct",
            "a/b",
            "a/c",
        ]
        .map(str::to_owned);
        render(&mut out, &header, &rows);
        let _ = writeln!(out, "\ngoals (issues 5 and 9):");
        for v in &self.targets {
            let verdict = match v.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let _ = writeln!(out, "  {:<42} {:>10}  {verdict}", v.goal, number(v.value));
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\nfailures:");
            for failure in &self.failures {
                let _ = writeln!(out, "  {failure}");
            }
        }
        out
    }
}

/// Columns padded to their widest cell; the first two left-aligned.
fn render(out: &mut String, header: &[String; 7], rows: &[[String; 7]]) {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, row: &[String; 7]| {
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i < 2 {
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(out, "{}{cell}  ", " ".repeat(pad));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(out, header);
    let rule = widths.map(|w| "-".repeat(w));
    line(out, &rule);
    for row in rows {
        line(out, row);
    }
}

/// Three significant digits or so, whatever the magnitude.
fn number(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(0.0) => "0".to_owned(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}×"))
}

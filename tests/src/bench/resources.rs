//! The daemon's resources, read from /proc: resident memory (VmRSS) and CPU
//! time (utime + stime), plus holding many idle connections open.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use tokio::net::TcpStream;

use super::latency;

/// /proc/<pid>/stat counts CPU time in USER_HZ ticks, which Linux fixes at
/// 100 for user space on every architecture we run on.
const USER_HZ: f64 = 100.0;
/// Idle connections are opened this many at a time: the figure is memory
/// at rest, not setup under a stampede (the concurrency figure does that).
const OPEN_PARALLELISM: usize = 64;

/// A process observed through /proc.
#[derive(Clone, Copy, Debug)]
pub struct Process {
    pid: u32,
}

impl Process {
    pub fn new(pid: u32) -> Process {
        Process { pid }
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        Ok(self.rss_kib_and_threads()?.0)
    }

    /// Resident set size in KiB and thread count, from one read of
    /// /proc/<pid>/status.
    pub fn rss_kib_and_threads(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok((field("VmRSS:")?, field("Threads:")?))
    }

    /// User plus system CPU time consumed so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .with_context(|| format!("malformed {path}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of the line, indices 11 and 12 after the name.
        let tick = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("no field {} in {path}", i + 3))
        };
        let ticks = tick(11)? + tick(12)?;
        Ok(Duration::from_secs_f64(ticks as f64 / USER_HZ))
    }

    /// Share of one core used over the next `window`, in percent.
    pub async fn cpu_percent_over(&self, window: Duration) -> anyhow::Result<f64> {
        let before = self.cpu()?;
        tokio::time::sleep(window).await;
        let used = self.cpu()?.saturating_sub(before);
        Ok(100.0 * used.as_secs_f64() / window.as_secs_f64())
    }
}

/// Opens `n` connections to an echo at `addr`, each proven by one echoed byte.
pub async fn open_idle(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    futures_util::stream::iter((0..n).map(|_| latency::open(addr)))
        .buffer_unordered(OPEN_PARALLELISM)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = Process::new(std::process::id());
        assert!(me.rss_kib().unwrap() > 0);
        me.cpu().unwrap();
    }
}

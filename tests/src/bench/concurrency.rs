//! Many concurrent connections: all of a level's connections are opened at
//! once and each gets a byte echoed; only when every one is up (or failed)
//! do they all echo their share of the level's bytes together. Aggregate
//! throughput is payload per direction over that transfer phase.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{bulk, latency};
use crate::harness::within;

/// Bound for a level's transfer phase: its whole payload moves in seconds.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Each connection echoes at least this much, so it is a transfer, not a ping.
const MIN_PER_CONN: u64 = 16 * 1024;

/// What one level measured.
pub struct Level {
    /// MB/s per direction over the transfer phase.
    pub throughput: f64,
    /// Connections that failed to open, transfer or verify.
    pub errors: u64,
    /// Opening every connection, in seconds.
    pub setup_secs: f64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

/// Runs `conns` concurrent connections echoing `total` bytes between them.
pub async fn level(addr: SocketAddr, conns: usize, total: u64) -> Level {
    let per_conn = (total / conns as u64).max(MIN_PER_CONN);
    let (go_tx, go_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(conns);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for _ in 0..conns {
        let (ready_tx, mut go_rx) = (ready_tx.clone(), go_rx.clone());
        tasks.spawn(async move {
            let opened = latency::open(addr).await;
            let _ = ready_tx.send(()).await;
            let stream = opened?;
            go_rx.wait_for(|go| *go).await?;
            within(
                "a concurrent transfer",
                TRANSFER_TIMEOUT,
                bulk::echo(stream, per_conn),
            )
            .await
        });
    }
    drop((ready_tx, go_rx));
    // Every task reports once, opened or not (opening is itself bounded).
    for _ in 0..conns {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    let setup_secs = start.elapsed().as_secs_f64();
    let transfer = Instant::now();
    let _ = go_tx.send(true);
    let mut errors = 0u64;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => format!("task failed: {e}"),
        };
        errors += 1;
        first_error.get_or_insert(failure);
    }
    let moved = (conns as u64).saturating_sub(errors) * per_conn;
    Level {
        throughput: bulk::mb_per_sec(moved, transfer.elapsed()),
        errors,
        setup_secs,
        first_error,
    }
}

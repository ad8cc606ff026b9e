//! Sleeps accurate to a fraction of a millisecond, for the delay lines of
//! WAN mode. tokio's timer ticks in whole milliseconds and rounds deadlines
//! up: a 20 ms sleep measured 1.3 ms late (median, 2-core VM), which over the
//! ten one-way hops of a 5-RTT setup at 40 ms would add 0.3 RTT, more than
//! the differences the benchmark looks for. One thread per process holds the
//! pending deadlines and wakes each sleeper at its instant (a futex wait with
//! a timeout, kept by the kernel to its 50 µs timer slack): 0.2 ms late,
//! wake-ups included, and never early.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::oneshot;

/// One sleeper: its deadline, then the order it came in (equal deadlines
/// wake in that order), and how to wake it.
struct Entry {
    due: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A sleeper as the timer thread receives it: its deadline and its waker.
type Request = (Instant, oneshot::Sender<()>);

/// The timer thread's inbox; None if the thread could not be started.
fn timer() -> Option<&'static mpsc::Sender<Request>> {
    static TIMER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();
    TIMER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("precise-sleep".to_owned())
                .spawn(move || run(rx))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Returns at `due` or within tens of microseconds after it (on a busy
/// machine, when the scheduler gets to it). Falls back to tokio's timer if
/// the timer thread is unavailable.
pub(crate) async fn sleep_until(due: Instant) {
    if due <= Instant::now() {
        return;
    }
    let (wake, woken) = oneshot::channel();
    match timer() {
        Some(inbox) if inbox.send((due, wake)).is_ok() => {
            // An error means the thread is gone: nothing left to wait for.
            let _ = woken.await;
        }
        _ => tokio::time::sleep_until(due.into()).await,
    }
}

/// The timer thread: wakes every sleeper whose deadline has passed, then
/// waits for the next deadline or a new sleeper.
fn run(inbox: mpsc::Receiver<Request>) {
    let mut pending = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while pending
            .peek()
            .is_some_and(|Reverse(first): &Reverse<Entry>| first.due <= now)
        {
            if let Some(Reverse(entry)) = pending.pop() {
                // The sleeper may have been cancelled: nobody to wake then.
                let _ = entry.wake.send(());
            }
        }
        let next = match pending.peek() {
            Some(Reverse(first)) => inbox.recv_timeout(first.due.saturating_duration_since(now)),
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((due, wake)) => {
                seq += 1;
                pending.push(Reverse(Entry { due, seq, wake }));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

//! The daemon's event feed for `Watch`: a broadcast of forward changes,
//! connection opens/closes and notices. Slow watchers lag rather than block
//! the daemon; `control` turns a lag into a notice.

use bastion_proto::time::now_ms;
use bastion_proto::v1::{ConnectionEvent, Event, Forward, event::Kind};
use tokio::sync::broadcast;

/// Events buffered per watcher before it is told it lagged; a burst of
/// connections produces two events each.
const CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn send(&self, kind: Kind) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(Event {
            at_ms: now_ms(),
            kind: Some(kind),
        });
    }

    pub fn forward_changed(&self, forward: Forward) {
        self.send(Kind::ForwardChanged(forward));
    }

    pub fn forward_removed(&self, id: String) {
        self.send(Kind::ForwardRemoved(id));
    }

    pub fn connection_opened(&self, event: ConnectionEvent) {
        self.send(Kind::ConnectionOpened(event));
    }

    pub fn connection_closed(&self, event: ConnectionEvent) {
        self.send(Kind::ConnectionClosed(event));
    }

    pub fn notice(&self, text: impl Into<String>) {
        self.send(Kind::Notice(text.into()));
    }
}

//! Saved forwards that could not be started (a target or address the file
//! holds but this daemon cannot parse, e.g. written by hand or by a newer
//! version). They are kept as they are: shown as `error` with the reason,
//! written back on every save, and removable, so nothing the user set up is
//! erased by the next save.

use bastion_proto::v1::{self as proto, ForwardState};

use crate::forwards::source::Source;
use crate::forwards::store::SavedForward;

#[derive(Debug, Clone)]
pub struct Unrestored {
    pub saved: SavedForward,
    pub reason: String,
    pub at_ms: i64,
}

impl Unrestored {
    pub fn new(saved: SavedForward, reason: String) -> Unrestored {
        Unrestored {
            saved,
            reason,
            at_ms: bastion_proto::time::now_ms(),
        }
    }

    /// The forward as `list` shows it: in error, with why it is not running.
    pub fn to_proto(&self) -> proto::Forward {
        let saved = &self.saved;
        proto::Forward {
            id: saved.id.clone(),
            name: saved.name.clone(),
            bastion: saved.bastion.clone(),
            // Shown as written, so the user recognises what to fix.
            target: Some(proto::Target {
                host: saved.target.clone(),
                port: 0,
            }),
            bind_address: saved.bind_address.clone(),
            local_port: u32::from(saved.local_port),
            state: ForwardState::Error.into(),
            last_error: format!(
                "not started: {}; fix it in the state file and restart, or remove the forward",
                self.reason
            ),
            last_error_at_ms: self.at_ms,
            created_at_ms: saved.created_at_ms,
            allow_other_users: saved.allow_other_users,
            // Only forwards added with bastionctl are saved.
            source: Source::Cli.as_str().to_owned(),
            ..Default::default()
        }
    }

    pub fn matches(&self, selector: &str) -> bool {
        self.saved.name == selector || self.saved.id == selector
    }
}

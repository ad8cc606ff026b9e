//! Saved forwards that could not be started: an entry this version cannot
//! read (written by a newer version, or by hand) or whose target or address
//! it cannot use. They are kept verbatim: shown as `error` with the reason,
//! written back on every save, and removable, so nothing the user set up is
//! erased by the next save.

use bastion_proto::v1::{self as proto, ForwardState};
use serde_json::Value;

use crate::forwards::source::Source;

#[derive(Debug, Clone)]
pub struct Unrestored {
    /// The state file's entry, as it was.
    pub entry: Value,
    pub reason: String,
    pub at_ms: i64,
}

impl Unrestored {
    pub fn new(entry: Value, reason: String) -> Unrestored {
        Unrestored {
            entry,
            reason,
            at_ms: bastion_proto::time::now_ms(),
        }
    }

    pub fn name(&self) -> &str {
        self.text("name")
    }

    pub fn id(&self) -> &str {
        self.text("id")
    }

    /// A text field of the entry, empty where it has none.
    fn text(&self, key: &str) -> &str {
        self.entry[key].as_str().unwrap_or_default()
    }

    /// A number field of the entry, 0 where it has none that fits.
    fn number<T: TryFrom<i64> + Default>(&self, key: &str) -> T {
        self.entry[key]
            .as_i64()
            .and_then(|n| T::try_from(n).ok())
            .unwrap_or_default()
    }

    /// The forward as `list` shows it: in error, with why it is not running.
    pub fn to_proto(&self) -> proto::Forward {
        // Shown as written, so the user recognises what to fix.
        let target = match &self.entry["target"] {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        proto::Forward {
            id: self.id().to_owned(),
            name: self.name().to_owned(),
            bastion: self.text("bastion").to_owned(),
            target: Some(proto::Target {
                host: target,
                port: 0,
            }),
            bind_address: self.text("bind_address").to_owned(),
            local_port: self.number("local_port"),
            state: ForwardState::Error.into(),
            last_error: format!(
                "not started: {}; fix it in the state file and restart, or remove the forward",
                self.reason
            ),
            last_error_at_ms: self.at_ms,
            created_at_ms: self.number("created_at_ms"),
            allow_other_users: self.entry["allow_other_users"]
                .as_bool()
                .unwrap_or_default(),
            // Only forwards added with bastionctl are saved.
            source: Source::Cli.as_str().to_owned(),
            ..Default::default()
        }
    }

    pub fn matches(&self, selector: &str) -> bool {
        !selector.is_empty() && (self.name() == selector || self.id() == selector)
    }
}

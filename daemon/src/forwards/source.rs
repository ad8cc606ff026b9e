//! Where a forward comes from, shown as `source` by `forward list`.

/// `bastionctl forward add` (kept in the state file) or `[forwards.NAME]` in
/// the settings file (never saved: the file is where it lives, and a reload
/// reconciles it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cli,
    Config,
}

impl Source {
    /// The name in `forward list` (`--json` and the table).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Config => "config",
        }
    }
}

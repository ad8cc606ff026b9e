//! Property tests of the settings parser: any text is accepted or refused
//! with a message naming what to fix, never a panic.

use std::path::Path;

use proptest::prelude::*;

use super::*;

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::parse(text, Path::new("config.toml"))
}

proptest! {
    /// Any settings text is accepted or refused; no panic.
    #[test]
    fn any_settings_text_is_accepted_or_refused(text in "\\PC{0,300}") {
        let _ = parse(&text);
    }

    /// Any value of a range-checked key is accepted or refused, naming the key.
    #[test]
    fn any_value_of_a_known_key_is_checked(
        key in proptest::sample::select(vec!["keepalive_interval_secs", "keepalive_timeout_secs",
            "max_frame_bytes", "eof_linger_secs", "setup_timeout_secs", "spare_connections"]),
        value in proptest::num::i64::ANY,
    ) {
        if let Err(e) = parse(&format!("[tunnel]\n{key} = {value}\n")) {
            prop_assert!(e.to_string().contains(key), "{e}");
        }
    }
}

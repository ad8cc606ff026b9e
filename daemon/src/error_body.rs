//! What a person should read of an error answer from Azure: the message of
//! its JSON body, the title of an HTML error page (the Bastion's Tomcat sends
//! those), or a short snippet of whatever came instead.

use serde::Deserialize;

/// Error bodies are shown to users; an HTML error page is cut to this.
const SNIPPET_CHARS: usize = 160;

/// A JSON error message longer than this is cut: it goes on one table row.
const MESSAGE_CHARS: usize = 400;

/// The message of an Azure error body (`{"message": …}` or
/// `{"error": {"message": …}}`), or a short snippet of whatever came instead;
/// cut short and without control characters, since it ends up on terminals.
pub fn error_message(status: u16, body: &[u8]) -> String {
    printable(&truncate(&raw_message(status, body), MESSAGE_CHARS))
}

/// Text from the network made safe for a terminal: every control character
/// (escape sequences, carriage returns, newlines that would fake table rows)
/// becomes a space.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn raw_message(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(body) = serde_json::from_slice::<Body>(body) {
        if let Some(message) = body.message.filter(|m| !m.is_empty()) {
            return message;
        }
        if let Some(Inner {
            code,
            message: Some(message),
        }) = body.error
        {
            return match code {
                Some(code) => format!("{code}: {message}"),
                None => message,
            };
        }
    }
    let text = html_text(&String::from_utf8_lossy(body));
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        format!(
            "{} (empty body)",
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
        )
    } else {
        truncate(&text, SNIPPET_CHARS)
    }
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// What a person should read of an error page: its `<title>` (a Tomcat page
/// opens with a `<style>` block), else the text between the tags. Non-HTML
/// passes through unchanged.
fn html_text(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>")) {
        let start = start + "<title>".len();
        if start < end {
            return body[start..end].to_owned();
        }
    }
    if !lower.trim_start().starts_with('<') {
        return body.to_owned();
    }
    let mut text = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_user() {
        let body = br#"{"message": "bad\u001b[2J\r\nthing\u0007"}"#;
        let message = error_message(400, body);
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(message.starts_with("bad [2J  thing"), "{message:?}");
        let long = format!(r#"{{"message": "{}"}}"#, "x".repeat(5000));
        assert!(error_message(400, long.as_bytes()).chars().count() <= MESSAGE_CHARS + 1);
    }

    #[test]
    fn error_bodies_become_messages() {
        assert_eq!(
            error_message(
                404,
                br#"{"message":"Target 10.1.0.7 is not reachable from this Bastion."}"#
            ),
            "Target 10.1.0.7 is not reachable from this Bastion."
        );
        assert_eq!(
            error_message(
                404,
                br#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#
            ),
            "ResourceNotFound: gone"
        );
        let html = format!(
            "<html><body><h1>HTTP Status 400 – Bad Request</h1>{}</body></html>",
            "x".repeat(500)
        );
        let m = error_message(400, html.as_bytes());
        assert!(m.starts_with("HTTP Status 400 – Bad Request x"), "{m}");
        assert!(m.chars().count() <= SNIPPET_CHARS + 1);
        let tomcat = "<!doctype html><html lang=\"en\"><head><title>HTTP Status 400 – Bad Request</title>\
            <style type=\"text/css\">body {font-family:Tahoma;}</style></head><body><h1>HTTP Status 400</h1></body></html>";
        assert_eq!(
            error_message(400, tomcat.as_bytes()),
            "HTTP Status 400 – Bad Request"
        );
        assert_eq!(error_message(502, b""), "Bad Gateway (empty body)");
        assert_eq!(error_message(500, &[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any body, of any status, becomes a short, printable message.
            #[test]
            fn any_body_becomes_a_short_printable_message(
                status in 0u16..600,
                body in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
            ) {
                let message = error_message(status, &body);
                proptest::prop_assert!(!message.chars().any(char::is_control), "{message:?}");
                proptest::prop_assert!(message.chars().count() <= MESSAGE_CHARS + 3, "{message:?}");
            }

            /// A JSON message of any text comes through printable.
            #[test]
            fn any_json_message_comes_through_printable(text in ".{0,600}") {
                let body = serde_json::json!({"message": text}).to_string();
                let message = error_message(400, body.as_bytes());
                proptest::prop_assert!(!message.chars().any(char::is_control), "{message:?}");
            }
        }
    }
}

//! Why Azure or a Bastion said no, or could not be reached: [`AzureError`],
//! the error of Entra (token cache), ARM (bastion and VM lookups, discover),
//! the session exchange, the proxy and the WebSocket. Its text is what the
//! user sees as a forward's `last_error` and in gRPC statuses (mapped in
//! `control::errors`), so every variant says what to change. Text quoted
//! from the network was made printable where it entered (`error_body`).

/// A token could not be obtained; the message says how to fix it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get an Azure access token ({credential}): {message}")]
pub struct AuthError {
    pub credential: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AzureError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The forward or connection names a bastion the settings do not have.
    #[error("{0}")]
    NotConfigured(String),
    /// The bastion cannot serve this target as it is set up in Azure (SKU,
    /// "Native client support", "IP-based connection", no dnsName yet), or
    /// ARM answered with what we will not follow (a `nextLink` elsewhere).
    #[error("{0}")]
    Precondition(String),
    /// The Bastion or ARM answered with an error status.
    #[error("{what}: HTTP {status}: {message}")]
    Rejected {
        what: &'static str,
        status: u16,
        message: String,
    },
    /// The Bastion or ARM could not be reached, or did not answer in time.
    #[error("{what}: {message}")]
    Unreachable { what: &'static str, message: String },
    /// The WebSocket could not be opened.
    #[error("tunnel: {0}")]
    WebSocket(String),
    /// An answer too large to be what we asked for (a proxy or the wrong
    /// endpoint answering): not read, and not worth a retry.
    #[error("{what}: {message}")]
    TooLarge { what: &'static str, message: String },
    /// No Bastion session could be had within the setup deadline (`max_sessions`).
    #[error("{0}")]
    Busy(String),
    /// Too many connections wait for a session already (`max_waiting`):
    /// turned away at once, without a try.
    #[error("{0}")]
    Crowded(String),
}

impl AzureError {
    pub fn unreachable(what: &'static str, error: &reqwest::Error) -> AzureError {
        // reqwest errors name the URL, and the DELETE URL carries the
        // session's authToken: never print the error itself, only its
        // cause chain (which names no URL), which is what helps.
        let mut message = if error.is_timeout() {
            "no answer in time".to_string()
        } else if error.is_connect() {
            "cannot connect".to_string()
        } else {
            "request failed".to_string()
        };
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        AzureError::Unreachable { what, message }
    }

    /// Whether a fresh try may succeed where this one failed: the Bastion's
    /// intermittent faults (5xx, 408, 429, resets, TLS and upgrade failures)
    /// are; refusals (401 after a fresh token, 403, 404, a precondition)
    /// and waits that already used up the deadline are not.
    pub fn is_transient(&self) -> bool {
        match self {
            AzureError::Rejected { status, .. } => matches!(status, 408 | 429 | 500..),
            AzureError::Unreachable { .. } | AzureError::WebSocket(_) => true,
            AzureError::Auth(_)
            | AzureError::NotConfigured(_)
            | AzureError::Precondition(_)
            | AzureError::TooLarge { .. }
            | AzureError::Busy(_)
            | AzureError::Crowded(_) => false,
        }
    }

    /// An answer read whole: a status outside 2xx is a refusal carrying the
    /// service's own message; a 2xx body is parsed as `T`, and one that does
    /// not parse is a refusal saying `unexpected: <why>`.
    pub fn parse_answer<T: serde::de::DeserializeOwned>(
        what: &'static str,
        status: u16,
        body: &[u8],
        unexpected: &str,
    ) -> Result<T, AzureError> {
        if !(200..300).contains(&status) {
            return Err(AzureError::Rejected {
                what,
                status,
                message: crate::error_body::error_message(status, body),
            });
        }
        serde_json::from_slice(body).map_err(|e| AzureError::Rejected {
            what,
            status,
            message: format!("{unexpected}: {e}"),
        })
    }
}

/// Errors that can say "the service refused the token we sent" (HTTP 401),
/// which one fresh token may fix.
pub trait RefusedToken {
    fn refused_token(&self) -> bool;
}

impl RefusedToken for AzureError {
    fn refused_token(&self) -> bool {
        matches!(self, AzureError::Rejected { status: 401, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_retry_can_fix_is_transient() {
        let rejected = |status| AzureError::Rejected {
            what: "x",
            status,
            message: String::new(),
        };
        for status in [408, 429, 500, 502, 503] {
            assert!(rejected(status).is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404] {
            assert!(!rejected(status).is_transient(), "{status}");
        }
        assert!(AzureError::WebSocket("HTTP text after 101".into()).is_transient());
        assert!(!AzureError::Precondition(String::new()).is_transient());
        assert!(!AzureError::Busy(String::new()).is_transient());
    }
}

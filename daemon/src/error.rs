//! Why a tunnel could not be opened: the error type shared by the token
//! cache, the ARM lookup, the session exchange and the WebSocket dial. Its
//! text is what the user sees as a forward's `last_error` and in gRPC
//! statuses, so every variant says what to change.

/// A token could not be obtained; the message says how to fix it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get an Azure access token ({credential}): {message}")]
pub struct AuthError {
    pub credential: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The forward or connection names a bastion the settings do not have.
    #[error("{0}")]
    NotConfigured(String),
    /// The bastion cannot serve this target as it is set up in Azure (SKU,
    /// "Native client support", "IP-based connection", no dnsName yet).
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
}

impl TunnelError {
    pub fn unreachable(what: &'static str, error: &reqwest::Error) -> TunnelError {
        // reqwest errors name the URL; ours carry no secret in the URL, but
        // strip it anyway and keep the cause chain, which is what helps.
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
        TunnelError::Unreachable { what, message }
    }

    /// Whether a fresh try may succeed where this one failed: the Bastion's
    /// intermittent faults (5xx, 408, 429, resets, TLS and upgrade failures)
    /// are; refusals (401 after a fresh token, 403, 404, a precondition)
    /// and waits that already used up the deadline are not.
    pub fn is_transient(&self) -> bool {
        match self {
            TunnelError::Rejected { status, .. } => matches!(status, 408 | 429 | 500..),
            TunnelError::Unreachable { .. } | TunnelError::WebSocket(_) => true,
            TunnelError::Auth(_)
            | TunnelError::NotConfigured(_)
            | TunnelError::Precondition(_)
            | TunnelError::TooLarge { .. }
            | TunnelError::Busy(_) => false,
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
    ) -> Result<T, TunnelError> {
        if !(200..300).contains(&status) {
            return Err(TunnelError::Rejected {
                what,
                status,
                message: crate::error_body::error_message(status, body),
            });
        }
        serde_json::from_slice(body).map_err(|e| TunnelError::Rejected {
            what,
            status,
            message: format!("{unexpected}: {e}"),
        })
    }

    /// An answer's body that could not be read, or was too large to.
    pub fn body(what: &'static str, error: crate::http::BodyError) -> TunnelError {
        match error {
            crate::http::BodyError::Read(e) => TunnelError::unreachable(what, &e),
            too_large @ crate::http::BodyError::TooLarge { .. } => TunnelError::TooLarge {
                what,
                message: too_large.to_string(),
            },
        }
    }

    /// The gRPC code a control client sees for this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            TunnelError::Auth(_) => tonic::Code::Unauthenticated,
            TunnelError::NotConfigured(_) => tonic::Code::NotFound,
            TunnelError::Precondition(_) => tonic::Code::FailedPrecondition,
            TunnelError::Rejected { status, .. } => match status {
                401 => tonic::Code::Unauthenticated,
                403 => tonic::Code::PermissionDenied,
                404 => tonic::Code::NotFound,
                408 | 429 | 500.. => tonic::Code::Unavailable,
                _ => tonic::Code::FailedPrecondition,
            },
            TunnelError::Unreachable { .. }
            | TunnelError::WebSocket(_)
            | TunnelError::TooLarge { .. } => tonic::Code::Unavailable,
            TunnelError::Busy(_) => tonic::Code::ResourceExhausted,
        }
    }
}

impl From<TunnelError> for tonic::Status {
    fn from(error: TunnelError) -> tonic::Status {
        // Messages may quote the Bastion or ARM: printable text only.
        tonic::Status::new(
            error.code(),
            crate::error_body::printable(&error.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        let rejected = |status| TunnelError::Rejected {
            what: "x",
            status,
            message: String::new(),
        };
        assert_eq!(rejected(401).code(), tonic::Code::Unauthenticated);
        assert_eq!(rejected(404).code(), tonic::Code::NotFound);
        assert_eq!(rejected(503).code(), tonic::Code::Unavailable);
        assert_eq!(
            TunnelError::Precondition(String::new()).code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            TunnelError::NotConfigured(String::new()).code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn only_what_a_retry_can_fix_is_transient() {
        let rejected = |status| TunnelError::Rejected {
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
        assert!(TunnelError::WebSocket("HTTP text after 101".into()).is_transient());
        assert!(!TunnelError::Precondition(String::new()).is_transient());
        assert!(!TunnelError::Busy(String::new()).is_transient());
    }
}

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

    /// An answer's body that could not be read, or was too large to.
    pub fn body(what: &'static str, error: crate::http::BodyError) -> TunnelError {
        match error {
            crate::http::BodyError::Read(e) => TunnelError::unreachable(what, &e),
            too_large @ crate::http::BodyError::TooLarge { .. } => TunnelError::Unreachable {
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
            TunnelError::Unreachable { .. } | TunnelError::WebSocket(_) => tonic::Code::Unavailable,
        }
    }
}

impl From<TunnelError> for tonic::Status {
    fn from(error: TunnelError) -> tonic::Status {
        tonic::Status::new(error.code(), error.to_string())
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
}

//! Exit statuses scripts can branch on. A failure is classified once, where
//! its kind is known (the daemon's gRPC code in `daemon::rpc_error`, an
//! empty socket in `daemon::connect`, a name missing from the settings
//! file), and `main` turns the class into the process's status.

use std::process::ExitCode;

/// The documented exit statuses (README, `bastionctl --help`); 0 is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The request failed for any reason not classified below.
    Failed = 1,
    /// The command line was wrong (clap's own status).
    Usage = 2,
    /// No daemon listens on the control socket.
    NotRunning = 3,
    /// The forward, bastion, VM or cluster named does not exist.
    NotFound = 4,
    /// Azure or the Bastion refused: a portal setting, RBAC, the SKU.
    Refused = 5,
}

/// The table shown at the end of `bastionctl --help` (and in the man page).
pub const HELP: &str = "Exit status:
  0  success (`doctor`: every step passed)
  1  the request failed
  2  usage error (a wrong command line)
  3  the daemon is not running
  4  not found (forward, bastion, VM, cluster)
  5  refused by Azure or the Bastion (a portal setting, RBAC, SKU)";

/// A failure whose kind is known; its text is the reason shown to the user.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Classified {
    pub exit: Exit,
    pub message: String,
}

impl Exit {
    /// A failure of this class, saying `message`.
    pub fn error(self, message: impl Into<String>) -> anyhow::Error {
        Classified {
            exit: self,
            message: message.into(),
        }
        .into()
    }

    /// The class of a daemon's answer. The daemon maps refusals by Azure
    /// or the Bastion (HTTP 403, an unsupported SKU, a portal setting) to
    /// PermissionDenied or FailedPrecondition, and unknown names to NotFound.
    pub fn from_rpc(code: tonic::Code) -> Exit {
        match code {
            tonic::Code::NotFound => Exit::NotFound,
            tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition => Exit::Refused,
            _ => Exit::Failed,
        }
    }

    /// The class of the first classified link of `err`'s chain, so context
    /// added on the way up does not hide it.
    pub fn of(err: &anyhow::Error) -> Exit {
        err.chain()
            .find_map(|cause| cause.downcast_ref::<Classified>())
            .map_or(Exit::Failed, |classified| classified.exit)
    }

    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn rpc_codes_become_documented_statuses() {
        assert_eq!(Exit::from_rpc(tonic::Code::NotFound), Exit::NotFound);
        assert_eq!(Exit::from_rpc(tonic::Code::PermissionDenied), Exit::Refused);
        assert_eq!(
            Exit::from_rpc(tonic::Code::FailedPrecondition),
            Exit::Refused
        );
        for other in [
            tonic::Code::InvalidArgument,
            tonic::Code::AlreadyExists,
            tonic::Code::Unavailable,
            tonic::Code::Unauthenticated,
            tonic::Code::Internal,
        ] {
            assert_eq!(Exit::from_rpc(other), Exit::Failed, "{other:?}");
        }
    }

    #[test]
    fn the_class_survives_added_context() {
        let err = Err::<(), _>(Exit::NotFound.error("no forward x"))
            .context("while removing")
            .unwrap_err();
        assert_eq!(Exit::of(&err), Exit::NotFound);
        assert_eq!(Exit::of(&anyhow::anyhow!("plain")), Exit::Failed);
    }

    #[test]
    fn help_lists_every_status() {
        for exit in [
            Exit::Failed,
            Exit::Usage,
            Exit::NotRunning,
            Exit::NotFound,
            Exit::Refused,
        ] {
            let line = format!("\n  {}  ", exit as u8);
            assert!(HELP.contains(&line), "{exit:?} missing from the help");
        }
    }
}

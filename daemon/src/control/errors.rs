//! Errors as a control client sees them: each error type of the layers below
//! mapped to the gRPC code a script can branch on (`bastionctl`'s exit
//! status follows it: NotFound is 4; PermissionDenied and FailedPrecondition
//! are 5, kept for refusals by Azure or the Bastion; the rest is 1). The text was made printable where it entered the
//! daemon (`error_body`), so it is passed on as it is.

use tonic::{Code, Status};

use crate::azure::vm_lookup::VmLookupError;
use crate::error::AzureError;
use crate::forwards::set::ForwardError;

/// The gRPC code for an error of Azure or a Bastion.
pub fn azure_code(error: &AzureError) -> Code {
    match error {
        AzureError::Auth(_) => Code::Unauthenticated,
        AzureError::NotConfigured(_) => Code::NotFound,
        AzureError::Precondition(_) => Code::FailedPrecondition,
        AzureError::Rejected { status, .. } => match status {
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            408 | 429 | 500.. => Code::Unavailable,
            _ => Code::FailedPrecondition,
        },
        AzureError::Unreachable { .. } | AzureError::WebSocket(_) | AzureError::TooLarge { .. } => {
            Code::Unavailable
        }
        AzureError::Busy(_) | AzureError::Crowded(_) => Code::ResourceExhausted,
    }
}

impl From<AzureError> for Status {
    fn from(error: AzureError) -> Status {
        Status::new(azure_code(&error), error.to_string())
    }
}

impl From<VmLookupError> for Status {
    fn from(error: VmLookupError) -> Status {
        match error {
            VmLookupError::NotFound(m) => Status::not_found(m),
            // The caller's to fix (--resource-group), not Azure's refusal.
            VmLookupError::Ambiguous(m) => Status::invalid_argument(m),
            VmLookupError::Arm(e) => e.into(),
        }
    }
}

impl From<ForwardError> for Status {
    fn from(e: ForwardError) -> Status {
        let code = match &e {
            ForwardError::InvalidArgument(_) => Code::InvalidArgument,
            ForwardError::AlreadyExists(_) => Code::AlreadyExists,
            ForwardError::NotFound(_) => Code::NotFound,
            ForwardError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        let rejected = |status| AzureError::Rejected {
            what: "x",
            status,
            message: String::new(),
        };
        assert_eq!(azure_code(&rejected(401)), Code::Unauthenticated);
        assert_eq!(azure_code(&rejected(404)), Code::NotFound);
        assert_eq!(azure_code(&rejected(503)), Code::Unavailable);
        assert_eq!(
            azure_code(&AzureError::Precondition(String::new())),
            Code::FailedPrecondition
        );
        assert_eq!(
            azure_code(&AzureError::NotConfigured(String::new())),
            Code::NotFound
        );
        // Not Azure's refusals: never the codes that mean one.
        let ambiguous = Status::from(VmLookupError::Ambiguous(String::new()));
        assert_eq!(ambiguous.code(), Code::InvalidArgument);
    }
}

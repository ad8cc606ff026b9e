//! What to change when a `doctor` step fails: the portal setting by its
//! portal name, the RBAC role, `az login`, the proxy or CA setting.

use crate::config::CredentialKind;
use crate::error::AzureError;

/// First bytes shown of what the target sent.
const SHOWN_BYTES: usize = 48;

/// Advice for `error` in `step` ("token", "bastion", "vm", "pod", "session",
/// "websocket", "delete"); empty when the error says it all.
pub fn hint(step: &str, error: &AzureError, kind: CredentialKind) -> String {
    match error {
        AzureError::Auth(_) => login_hint(kind),
        AzureError::Unreachable { .. } | AzureError::WebSocket(_) | AzureError::TooLarge { .. } => {
            "check the network path: HTTPS_PROXY / NO_PROXY for a proxy, \
             and [tls] ca_file (or SSL_CERT_FILE) when a proxy or firewall re-signs TLS"
                .into()
        }
        AzureError::Rejected { status: 401, .. } => {
            format!("the token was refused; {}", login_hint(kind))
        }
        AzureError::Rejected { status: 403, .. } => match step {
            "bastion" => "the signed-in identity needs the Reader role on the bastion \
                          (portal: Bastion → Access control (IAM) → Add role assignment → Reader)"
                .into(),
            "vm" => "the signed-in identity needs the Reader role on the VMs \
                     (or their resource group) to find them by name"
                .into(),
            _ => "the signed-in identity needs the Reader role on the bastion, on the target VM \
                  and on its network interface (IAM → Add role assignment → Reader); \
                  for IP targets, enable \"IP-based connection\" (portal: Bastion → Configuration)"
                .into(),
        },
        AzureError::Rejected { status: 404, .. } => match step {
            "bastion" => "check `resource_id` under [bastions] in config.toml \
                          (`bastionctl bastion discover` lists the bastions you can see)"
                .into(),
            "session" => "check the target: an IP must be in a VNet the bastion reaches \
                          (peered or its own), a VM id must exist"
                .into(),
            "pod" => "check the target: a Developer bastion serves the VMs of its own \
                      virtual network, by name or resource id"
                .into(),
            _ => String::new(),
        },
        AzureError::Rejected { status, .. } if *status >= 500 => {
            "the service failed; try again (intermittent Bastion faults clear on a fresh session)"
                .into()
        }
        AzureError::NotConfigured(_)
        | AzureError::Precondition(_)
        | AzureError::Rejected { .. }
        | AzureError::Busy(_)
        | AzureError::Crowded(_) => String::new(),
    }
}

fn login_hint(kind: CredentialKind) -> String {
    match kind {
        CredentialKind::AzureCli | CredentialKind::DeveloperTools => {
            "sign in with `az login` (and pick the subscription with `az account set`)".into()
        }
        CredentialKind::ClientSecret => {
            "check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET in the daemon's environment \
             (or [auth] tenant_id / client_id)"
                .into()
        }
        CredentialKind::ManagedIdentity => {
            "check that this machine has a managed identity (and [auth] client_id for a user-assigned one)"
                .into()
        }
        CredentialKind::WorkloadIdentity => {
            "check AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID and AZURE_CLIENT_ID".into()
        }
    }
}

/// The first bytes as text a person can read: `"SSH-2.0-OpenSSH_9.6"`, with
/// anything unprintable escaped.
pub fn print_bytes(data: &[u8]) -> String {
    let shown = &data[..data.len().min(SHOWN_BYTES)];
    let text: String = shown.escape_ascii().to_string();
    let more = if data.len() > SHOWN_BYTES { "…" } else { "" };
    format!("\"{text}{more}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_what_to_change() {
        let rejected = |status| AzureError::Rejected {
            what: "x",
            status,
            message: String::new(),
        };
        assert!(hint("bastion", &rejected(403), CredentialKind::AzureCli).contains("Reader"));
        assert!(hint("token", &rejected(401), CredentialKind::AzureCli).contains("az login"));
        assert!(
            hint("bastion", &rejected(404), CredentialKind::AzureCli).contains("bastion discover")
        );
        let unreachable = AzureError::Unreachable {
            what: "x",
            message: String::new(),
        };
        assert!(hint("session", &unreachable, CredentialKind::AzureCli).contains("HTTPS_PROXY"));
        assert_eq!(print_bytes(b"SSH-2.0-x\r\n"), "\"SSH-2.0-x\\r\\n\"");
    }
}

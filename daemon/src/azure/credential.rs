//! The credential named in the settings, built for one [`TokenScope`]: the
//! credential's own tenant, a tenant a bastion names (`tenant_id` under
//! `[bastions.NAME]`), or, for the Azure CLI and developer tools, a bastion's
//! subscription (`az account get-access-token --subscription`), so az finds
//! the tenant that subscription lives in without any setting.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};

use crate::config::{BastionSettings, CredentialKind, Settings, parse_bastion_resource_id};

/// Whose token a request needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenScope {
    /// The credential as configured (`[auth]`).
    Home,
    /// A tenant a bastion names.
    Tenant(String),
    /// The tenant of a bastion's subscription, as the Azure CLI finds it.
    Subscription(String),
}

impl TokenScope {
    /// The scope of bastion `b`: its `tenant_id` if set; else, for the
    /// Azure CLI and developer tools without `auth.tenant_id`, its
    /// subscription; else the credential's own.
    pub fn for_bastion(settings: &Settings, b: &BastionSettings) -> TokenScope {
        if let Some(tenant) = &b.tenant_id {
            return TokenScope::Tenant(tenant.clone());
        }
        let asks_az = matches!(
            settings.auth.credential,
            CredentialKind::AzureCli | CredentialKind::DeveloperTools
        );
        match parse_bastion_resource_id(&b.resource_id) {
            Some((subscription, _, _)) if asks_az && settings.auth.tenant_id.is_none() => {
                TokenScope::Subscription(subscription.to_string())
            }
            _ => TokenScope::Home,
        }
    }
}

/// Builds the credential named in the settings for `scope`. Credentials that
/// talk HTTP use the daemon's client, so `tls.ca_file` and the proxy apply to
/// them too. A managed identity has no tenant to choose: it serves every scope.
pub fn credential(
    settings: &Settings,
    http: &reqwest::Client,
    scope: &TokenScope,
) -> anyhow::Result<Arc<dyn TokenCredential>> {
    use azure_identity::*;
    let auth = &settings.auth;
    let (tenant_id, subscription) = match scope {
        TokenScope::Home => (auth.tenant_id.clone(), None),
        TokenScope::Tenant(tenant) => (Some(tenant.clone()), None),
        TokenScope::Subscription(sub) => (None, Some(sub.clone())),
    };
    let client_options = || {
        let mut cloud = azure_core::cloud::CustomConfiguration::default();
        cloud.authority_host = settings.cloud.authority_host.clone();
        ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            cloud: Some(Arc::new(cloud.into())),
            ..Default::default()
        }
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let credential: Arc<dyn TokenCredential> = match auth.credential {
        CredentialKind::AzureCli => AzureCliCredential::new(Some(AzureCliCredentialOptions {
            tenant_id,
            subscription,
            ..Default::default()
        }))?,
        CredentialKind::DeveloperTools => match (tenant_id, subscription) {
            (None, None) => DeveloperToolsCredential::new(None)?,
            (tenant, subscription) => {
                crate::azure::dev_tools::DeveloperTools::new(tenant, subscription)?
            }
        },
        CredentialKind::ClientSecret => {
            let tenant = tenant_id
                .or_else(|| env("AZURE_TENANT_ID"))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "credential \"client-secret\" needs `auth.tenant_id` or AZURE_TENANT_ID"
                    )
                })?;
            let client_id = auth
                .client_id
                .clone()
                .or_else(|| env("AZURE_CLIENT_ID"))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "credential \"client-secret\" needs `auth.client_id` or AZURE_CLIENT_ID"
                    )
                })?;
            let secret = env("AZURE_CLIENT_SECRET").ok_or_else(|| {
                anyhow::anyhow!("credential \"client-secret\" needs AZURE_CLIENT_SECRET in the daemon's environment")
            })?;
            ClientSecretCredential::new(
                &tenant,
                client_id,
                secret.into(),
                Some(ClientSecretCredentialOptions {
                    client_options: client_options(),
                }),
            )?
        }
        CredentialKind::ManagedIdentity => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: auth.client_id.clone().map(UserAssignedId::ClientId),
                client_options: client_options(),
            }))?
        }
        CredentialKind::WorkloadIdentity => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: auth.client_id.clone(),
                tenant_id,
                ..Default::default()
            }))?
        }
    };
    Ok(credential)
}

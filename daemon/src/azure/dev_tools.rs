//! The `developer-tools` credential with a tenant or a subscription:
//! azure_identity's `DeveloperToolsCredential` takes neither, so a tenant
//! would be ignored. This is the same chain (Azure CLI, then Azure Developer
//! CLI), each asked for a token of that tenant (the Azure CLI also for that
//! subscription, whose tenant it knows; azd has no such option).

use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, AzureDeveloperCliCredential,
    AzureDeveloperCliCredentialOptions,
};

#[derive(Debug)]
pub struct DeveloperTools {
    sources: Vec<Arc<dyn TokenCredential>>,
}

impl DeveloperTools {
    pub fn new(
        tenant_id: Option<String>,
        subscription: Option<String>,
    ) -> azure_core::Result<Arc<DeveloperTools>> {
        let sources: Vec<Arc<dyn TokenCredential>> = vec![
            AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: tenant_id.clone(),
                subscription,
                ..Default::default()
            }))?,
            AzureDeveloperCliCredential::new(Some(AzureDeveloperCliCredentialOptions {
                tenant_id,
                ..Default::default()
            }))?,
        ];
        Ok(Arc::new(DeveloperTools { sources }))
    }
}

#[async_trait::async_trait]
impl TokenCredential for DeveloperTools {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let mut errors = Vec::new();
        for source in &self.sources {
            match source.get_token(scopes, options.clone()).await {
                Ok(token) => return Ok(token),
                Err(error) => errors.push(error.to_string()),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!("no developer tool gave a token: {}", errors.join("; ")),
        ))
    }
}

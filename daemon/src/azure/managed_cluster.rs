//! Managed (AKS) clusters through ARM, for `bastionctl aks add`: one found by
//! name (the listing of the bastion's subscription, or of one resource group
//! of it, names compared case-insensitively as ARM's are) or by resource id,
//! and its kubeconfig from `listClusterUserCredential` (kubelogin's `exec`
//! form for an Entra ID cluster, which kubectl 1.26+ needs) or
//! `listClusterAdminCredential`. No cache: this runs once per `aks add`.

use base64::Engine as _;
use serde::Deserialize;

use crate::azure::arm_list;
use crate::azure::http::read_capped;
use crate::azure::vm_lookup::{VmLookupError, describe_scope, pick_named};
use crate::error::AzureError;
use crate::secret::Secret;

/// The Microsoft.ContainerService API version we read and post with.
const API_VERSION: &str = "2024-09-01";
/// A kubeconfig with its certificates is about 10 KiB, base64 in JSON a
/// third more; anything past this is not ARM answering.
const MAX_CREDENTIAL_BYTES: usize = 256 * 1024;
/// A managed cluster's read, with its agent pools and profiles, is a few KiB.
const MAX_CLUSTER_BYTES: usize = 256 * 1024;

/// A managed cluster as ARM describes it (the fields `aks add` uses).
#[derive(Debug, Clone, Deserialize)]
pub struct ManagedCluster {
    pub id: String,
    pub name: String,
    #[serde(default)]
    properties: Properties,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Properties {
    #[serde(rename = "privateFQDN")]
    private_fqdn: Option<String>,
    api_server_access_profile: Option<AccessProfile>,
    aad_profile: Option<AadProfile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessProfile {
    enable_private_cluster: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
struct AadProfile {
    managed: Option<bool>,
}

impl ManagedCluster {
    pub fn private_fqdn(&self) -> &str {
        self.properties.private_fqdn.as_deref().unwrap_or_default()
    }

    pub fn is_private(&self) -> bool {
        self.properties
            .api_server_access_profile
            .as_ref()
            .and_then(|p| p.enable_private_cluster)
            .unwrap_or(false)
    }

    /// AKS-managed Entra ID: its users sign in through kubelogin.
    pub fn entra(&self) -> bool {
        self.properties
            .aad_profile
            .as_ref()
            .and_then(|p| p.managed)
            .unwrap_or(false)
    }

    pub fn resource_group(&self) -> &str {
        arm_list::resource_group_of(&self.id).unwrap_or_default()
    }
}

/// Whether `cluster` is a resource id rather than a name.
pub fn is_resource_id(cluster: &str) -> bool {
    cluster.starts_with('/')
}

/// The cluster `cluster` names: a resource id read as it is, or a name
/// looked up in `subscription` (or in its `resource_group`).
pub async fn find(
    http: &reqwest::Client,
    resource_manager: &str,
    token: &Secret,
    subscription: &str,
    resource_group: Option<&str>,
    cluster: &str,
) -> Result<ManagedCluster, VmLookupError> {
    let base = resource_manager.trim_end_matches('/');
    if is_resource_id(cluster) {
        let url = format!("{base}{cluster}?api-version={API_VERSION}");
        let what = "reading the managed cluster in Azure Resource Manager";
        return Ok(arm_list::get(http, &url, token, what, MAX_CLUSTER_BYTES).await?);
    }
    let scope = match resource_group {
        Some(rg) => format!("/subscriptions/{subscription}/resourceGroups/{rg}"),
        None => format!("/subscriptions/{subscription}"),
    };
    let url = format!(
        "{base}{scope}/providers/Microsoft.ContainerService/managedClusters?api-version={API_VERSION}"
    );
    let what = "listing managed clusters in Azure Resource Manager";
    let clusters: Vec<ManagedCluster> = arm_list::list(http, url, token, what).await?;
    let place = describe_scope(subscription, resource_group);
    pick_named(
        &clusters,
        |c| (&c.id, &c.name),
        cluster,
        "managed cluster",
        &place,
        "pass its resource id",
    )
    .cloned()
}

/// The kubeconfig (YAML) ARM hands out for the cluster `id`.
pub async fn kubeconfig(
    http: &reqwest::Client,
    resource_manager: &str,
    token: &Secret,
    id: &str,
    admin: bool,
) -> Result<Vec<u8>, AzureError> {
    #[derive(Deserialize)]
    struct Credentials {
        kubeconfigs: Vec<Credential>,
    }
    #[derive(Deserialize)]
    struct Credential {
        value: String,
    }
    let base = resource_manager.trim_end_matches('/');
    let (action, what) = if admin {
        (
            "listClusterAdminCredential",
            "ARM refused the cluster's admin credential",
        )
    } else {
        // `exec`: Entra ID clusters get kubelogin; for the others it changes nothing.
        (
            "listClusterUserCredential",
            "ARM refused the cluster's user credential",
        )
    };
    let format = if admin { "" } else { "&format=exec" };
    let url = format!("{base}{id}/{action}?api-version={API_VERSION}{format}");
    let response = http
        .post(&url)
        .bearer_auth(token.expose())
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .await
        .map_err(|e| AzureError::unreachable(what, &e))?;
    let status = response.status().as_u16();
    let body = read_capped(response, MAX_CREDENTIAL_BYTES)
        .await
        .map_err(|e| e.into_azure(what))?;
    let answer: Credentials =
        AzureError::parse_answer(what, status, &body, "unexpected answer from ARM")?;
    let first =
        answer.kubeconfigs.into_iter().next().ok_or_else(|| {
            AzureError::Precondition(format!("{what}: ARM returned no kubeconfig"))
        })?;
    base64::engine::general_purpose::STANDARD
        .decode(first.value.trim())
        .map_err(|_| AzureError::Precondition(format!("{what}: its kubeconfig is not base64")))
}

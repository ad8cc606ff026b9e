//! ARM for managed clusters (`Microsoft.ContainerService/managedClusters`): the
//! listings of a subscription or resource group, one cluster's GET, and the
//! `listClusterUserCredential` / `listClusterAdminCredential` POSTs that
//! return `{"kubeconfigs": [{"name", "value": <base64 kubeconfig>}]}`.

use std::sync::Arc;

use http::{Method, StatusCode, Uri};
use serde_json::{Value, json};

use super::aks::{Cluster, Credential, Format};
use super::clusters::{CLUSTERS, ClusterSpec};
use super::http::{Resp, arm_error, json, query_param};
use super::{DEFAULT_SUBSCRIPTION, Shared, TENANT_ID};

/// Where the emulated clusters run; only cosmetic.
const LOCATION: &str = "westeurope";

/// The answer for `method path` if it is about managed clusters, else `None`.
pub(crate) fn route(shared: &Shared, method: &Method, uri: &Uri, path: &str) -> Option<Resp> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let clusters = |providers: &str, ns: &str, kind: &str| {
        is(providers, "providers")
            && is(ns, "Microsoft.ContainerService")
            && is(kind, "managedClusters")
    };
    Some(match (method, segs.as_slice()) {
        (&Method::GET, [_, sub, p, ns, kind]) if clusters(p, ns, kind) => list(shared, sub, None),
        (&Method::GET, [_, sub, rgs, rg, p, ns, kind])
            if is(rgs, "resourceGroups") && clusters(p, ns, kind) =>
        {
            list(shared, sub, Some(rg))
        }
        (&Method::GET, [_, sub, rgs, rg, p, ns, kind, name])
            if is(rgs, "resourceGroups") && clusters(p, ns, kind) =>
        {
            find(shared, sub, rg, name)
                .map(|c| json(StatusCode::OK, &cluster_json(c.spec, sub)))
                .unwrap_or_else(|refused| *refused)
        }
        (&Method::POST, [_, sub, rgs, rg, p, ns, kind, name, action])
            if is(rgs, "resourceGroups") && clusters(p, ns, kind) =>
        {
            let credential = if is(action, "listClusterUserCredential") {
                Credential::User
            } else if is(action, "listClusterAdminCredential") {
                Credential::Admin
            } else {
                return None;
            };
            credentials(shared, uri, sub, rg, name, credential)
        }
        _ => return None,
    })
}

/// The cluster, or ARM's 404 (boxed: a response is large next to a reference).
fn find<'a>(
    shared: &'a Shared,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<&'a Arc<Cluster>, Box<Resp>> {
    shared
        .clusters
        .find(rg, name)
        .filter(|_| sub.eq_ignore_ascii_case(DEFAULT_SUBSCRIPTION))
        .ok_or_else(|| {
            shared.ledger.reject("arm_cluster_not_found");
            Box::new(arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!(
                    "The Resource 'Microsoft.ContainerService/managedClusters/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            ))
        })
}

fn list(shared: &Shared, sub: &str, rg: Option<&str>) -> Resp {
    let in_sub = sub.eq_ignore_ascii_case(DEFAULT_SUBSCRIPTION);
    let value: Vec<Value> = CLUSTERS
        .iter()
        .filter(|c| in_sub && rg.is_none_or(|rg| c.resource_group.eq_ignore_ascii_case(rg)))
        .map(|c| cluster_json(c, sub))
        .collect();
    shared.ledger.update(|l| l.arm_cluster_lists += 1);
    json(StatusCode::OK, &json!({ "value": value }))
}

fn credentials(
    shared: &Shared,
    uri: &Uri,
    sub: &str,
    rg: &str,
    name: &str,
    credential: Credential,
) -> Resp {
    let cluster = match find(shared, sub, rg, name) {
        Ok(cluster) => cluster,
        Err(refused) => return *refused,
    };
    if credential == Credential::Admin && cluster.spec.entra {
        shared.ledger.reject("arm_local_accounts_disabled");
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Getting static credential is not allowed because this cluster is set to disable local accounts.",
        );
    }
    let format = match query_param(uri, "format").as_deref() {
        None | Some("azure") => Format::Azure,
        Some("exec") => Format::Exec,
        Some(other) => {
            shared.ledger.reject("arm_bad_credential_format");
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                &format!(
                    "The value of parameter format is invalid: {other:?}. Allowed values: azure, exec."
                ),
            );
        }
    };
    shared.ledger.update(|l| l.arm_cluster_credentials += 1);
    tracing::info!(
        cluster = cluster.spec.name,
        ?credential,
        ?format,
        "arm cluster credentials"
    );
    let entry = match credential {
        Credential::User => "clusterUser",
        Credential::Admin => "clusterAdmin",
    };
    use base64::Engine as _;
    let value =
        base64::engine::general_purpose::STANDARD.encode(cluster.kubeconfig(credential, format));
    json(
        StatusCode::OK,
        &json!({ "kubeconfigs": [{ "name": entry, "value": value }] }),
    )
}

/// The managed cluster as ARM shows it (the fields a client reads, and the
/// ones that tell a private cluster apart).
fn cluster_json(c: &ClusterSpec, sub: &str) -> Value {
    let node_rg = format!("MC_{}_{}_{LOCATION}", c.resource_group, c.name);
    let portal = c.private_fqdn.replace(".privatelink.", ".portal.hcp.");
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "powerState": { "code": "Running" },
        "kubernetesVersion": c.kubernetes_version,
        "currentKubernetesVersion": c.kubernetes_version,
        "dnsPrefix": c.dns_prefix(),
        "azurePortalFQDN": portal,
        "privateFQDN": c.private_fqdn,
        "agentPoolProfiles": [{
            "name": "nodepool1", "count": 2, "vmSize": "Standard_D4ds_v5",
            "osType": "Linux", "mode": "System", "provisioningState": "Succeeded",
            "orchestratorVersion": c.kubernetes_version,
        }],
        "nodeResourceGroup": node_rg,
        "enableRBAC": true,
        "networkProfile": {
            "networkPlugin": "azure", "networkPluginMode": "overlay",
            "podCidr": "10.244.0.0/16", "serviceCidr": "10.0.0.0/16",
            "dnsServiceIP": "10.0.0.10", "outboundType": "loadBalancer",
        },
        "apiServerAccessProfile": {
            "enablePrivateCluster": true,
            "privateDNSZone": "system",
            "enablePrivateClusterPublicFQDN": false,
        },
        "disableLocalAccounts": c.entra,
    });
    if c.entra {
        properties["aadProfile"] =
            json!({ "managed": true, "enableAzureRBAC": true, "tenantID": TENANT_ID });
    }
    json!({
        "id": c.resource_id(sub),
        "location": LOCATION,
        "name": c.name,
        "type": "Microsoft.ContainerService/ManagedClusters",
        "sku": { "name": "Base", "tier": "Standard" },
        "identity": { "type": "SystemAssigned", "tenantId": TENANT_ID },
        "properties": properties,
    })
}

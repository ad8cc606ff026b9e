//! `ClusterCredentials` (`bastionctl aks add`): the managed cluster found
//! through ARM in the bastion's subscription (or by resource id), and the
//! kubeconfig ARM hands out for it, passed on unchanged. The forward to its
//! API server is an ordinary `AddForward` to the cluster's resource id.

use bastion_proto::v1 as proto;
use tonic::Status;

use crate::azure::managed_cluster;
use crate::azure::vm_lookup::VmLookupError;
use crate::config::parse_bastion_resource_id;
use crate::error::AzureError;
use crate::forwards::set::Forwards;
use crate::shared::Shared;
use bastion_proto::target::{Target, TargetHost};

/// Where AKS API servers listen behind their private endpoints (`az aks bastion`'s port).
const API_SERVER_PORT: u16 = 443;

pub async fn credentials(
    shared: &Shared,
    forwards: &Forwards,
    request: proto::ClusterCredentialsRequest,
) -> Result<proto::ClusterCredentialsResponse, Status> {
    let cluster = request.cluster.trim();
    if cluster.is_empty() {
        return Err(Status::invalid_argument(
            "name the cluster (its name or resource id)",
        ));
    }
    let bastion = forwards.bastion_for(&request.bastion)?;
    let connector = shared.connector();
    let entry = connector.bastion(&bastion)?;
    let (subscription, _, _) = parse_bastion_resource_id(entry.resource_id()).ok_or_else(|| {
        AzureError::Precondition(format!(
            "bastion {bastion}'s resource id {:?} names no subscription",
            entry.resource_id()
        ))
    })?;
    let resource_group = Some(request.resource_group.trim()).filter(|rg| !rg.is_empty());
    let (http, resource_manager) = (
        connector.http(),
        connector.settings().cloud.resource_manager.as_str(),
    );
    let auth = connector.auth_of(entry);
    let found = auth
        .with_fresh_token(|token| async move {
            managed_cluster::find(
                http,
                resource_manager,
                &token,
                subscription,
                resource_group,
                cluster,
            )
            .await
        })
        .await?;
    // The bastion must be able to reach it (a Developer one cannot), so
    // `aks add` stops before any credential is fetched or anything written.
    let target = Target {
        host: TargetHost::Cluster(found.id.clone()),
        port: API_SERVER_PORT,
    };
    let mut token = auth.token().await.map_err(AzureError::from)?;
    connector
        .lookup(entry, &mut token)
        .await?
        .check(&bastion, &target)?;
    let id = found.id.as_str();
    let kubeconfig = auth
        .with_fresh_token(|token| async move {
            managed_cluster::kubeconfig(http, resource_manager, &token, id, request.admin)
                .await
                .map_err(VmLookupError::from)
        })
        .await?;
    tracing::info!(cluster = %found.name, admin = request.admin, "managed cluster credentials fetched");
    Ok(proto::ClusterCredentialsResponse {
        resource_id: found.id.clone(),
        name: found.name.clone(),
        resource_group: found.resource_group().to_owned(),
        bastion,
        private_fqdn: found.private_fqdn().to_owned(),
        private_cluster: found.is_private(),
        entra: found.entra(),
        kubeconfig,
    })
}

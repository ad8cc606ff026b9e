//! VM-name targets (`myvm:22`) made resource-id targets before anything
//! else sees them: looked up in the bastion's subscription (or in the
//! resource group the caller names) through the cached
//! [`VmNames`](crate::vm_lookup::VmNames).

use bastion_proto::target::{Target, TargetHost};

use crate::config::parse_bastion_resource_id;
use crate::error::TunnelError;
use crate::shared::Shared;
use crate::vm_lookup::VmLookupError;

/// `target` as a tunnel can use it: a VM name becomes that VM's resource id;
/// IP and resource-id targets are returned as they are.
pub async fn resolve(
    shared: &Shared,
    bastion: &str,
    target: Target,
    resource_group: &str,
) -> Result<Target, VmLookupError> {
    let TargetHost::Name(name) = &target.host else {
        return Ok(target);
    };
    let connector = shared.connector();
    let entry = connector.bastions.get(bastion).ok_or_else(|| {
        TunnelError::NotConfigured(format!("bastion {bastion:?} is not configured"))
    })?;
    let (subscription, _, _) = parse_bastion_resource_id(entry.resource_id()).ok_or_else(|| {
        TunnelError::Precondition(format!(
            "bastion {bastion}'s resource id {:?} names no subscription",
            entry.resource_id()
        ))
    })?;
    let resource_group = Some(resource_group.trim()).filter(|rg| !rg.is_empty());
    let lookup = |token| {
        shared.vm_names.resolve(
            &connector.http,
            &connector.settings.cloud.resource_manager,
            token,
            subscription,
            resource_group,
            name,
        )
    };
    let token = connector.auth.token().await.map_err(TunnelError::from)?;
    let id = match lookup(&token).await {
        // A token revoked or from a clock that jumped: one fresh token, as for bastions.
        Err(VmLookupError::Arm(TunnelError::Rejected { status: 401, .. })) => {
            tracing::info!("ARM refused the token for a VM lookup; retrying once with a fresh one");
            connector.auth.invalidate();
            let token = connector.auth.token().await.map_err(TunnelError::from)?;
            lookup(&token).await?
        }
        other => other?,
    };
    tracing::debug!(%name, %id, "VM name resolved");
    Ok(Target {
        host: TargetHost::Vm(id),
        port: target.port,
    })
}

//! VM-name targets (`myvm:22`) made resource-id targets before anything
//! else sees them: looked up in the bastion's subscription (or in the
//! resource group the caller names) through the daemon's cached
//! [`VmNames`](crate::azure::vm_lookup::VmNames).

use bastion_proto::target::{Target, TargetHost};

use crate::azure::vm_lookup::VmLookupError;
use crate::shared::Shared;

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
    let resource_group = Some(resource_group.trim()).filter(|rg| !rg.is_empty());
    let id = shared
        .connector()
        .vm_id(&shared.vm_names, bastion, name, resource_group)
        .await?;
    tracing::debug!(%name, %id, "VM name resolved");
    Ok(Target {
        host: TargetHost::Vm(id),
        port: target.port,
    })
}

//! The VMs of the emulated subscriptions, by resource group: what ARM lists
//! for VM-name targets and what the data plane reaches for VM targets.
//! `twin` exists in two resource groups (on different services) so a test
//! can tell which one a lookup picked; `web-ss` is a scale set whose
//! instances are targets by their own resource ids; `vmb1` lives in the
//! second tenant's subscription.

use std::net::Ipv4Addr;

use super::vnet::{ECHO_IP, SINK_IP, SOURCE_IP};
use super::{DEFAULT_SUBSCRIPTION, SECOND_SUBSCRIPTION};

/// One emulated VM, or one instance of a VM scale set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSpec {
    pub subscription: &'static str,
    pub resource_group: &'static str,
    /// The ARM name, as created (lookups ignore case); a scale-set
    /// instance's is `<scale set>_<instance id>`, as ARM names them.
    pub name: &'static str,
    /// A scale-set instance: its scale set and instance id.
    pub scale_set: Option<(&'static str, &'static str)>,
    pub private_ip: Ipv4Addr,
}

const fn vm(resource_group: &'static str, name: &'static str, private_ip: Ipv4Addr) -> VmSpec {
    VmSpec {
        subscription: DEFAULT_SUBSCRIPTION,
        resource_group,
        name,
        scale_set: None,
        private_ip,
    }
}

/// Every VM and scale-set instance.
pub const VMS: &[VmSpec] = &[
    vm("rg-vms", "vm1", ECHO_IP),
    vm("rg-app", "Web01", ECHO_IP),
    vm("rg-app", "twin", ECHO_IP),
    vm("rg-data", "twin", SOURCE_IP),
    vm("rg-data", "db01", SINK_IP),
    VmSpec {
        name: "web-ss_0",
        scale_set: Some(("web-ss", "0")),
        ..vm("rg-app", "", ECHO_IP)
    },
    VmSpec {
        name: "web-ss_1",
        scale_set: Some(("web-ss", "1")),
        ..vm("rg-app", "", SINK_IP)
    },
    VmSpec {
        subscription: SECOND_SUBSCRIPTION,
        ..vm("rg-b", "vmb1", ECHO_IP)
    },
];

impl VmSpec {
    pub fn resource_id(&self) -> String {
        let rg_scope = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute",
            self.subscription, self.resource_group
        );
        match self.scale_set {
            Some((set, id)) => {
                format!("{rg_scope}/virtualMachineScaleSets/{set}/virtualMachines/{id}")
            }
            None => format!("{rg_scope}/virtualMachines/{}", self.name),
        }
    }
}

/// The VM (not a scale-set instance) `name` in `subscription`/`resource_group`
/// (all case-insensitive).
pub fn find(subscription: &str, resource_group: &str, name: &str) -> Option<&'static VmSpec> {
    VMS.iter().find(|vm| {
        vm.scale_set.is_none()
            && vm.subscription.eq_ignore_ascii_case(subscription)
            && vm.resource_group.eq_ignore_ascii_case(resource_group)
            && vm.name.eq_ignore_ascii_case(name)
    })
}

/// The VM or scale-set instance with this resource id (case-insensitive, as ARM).
pub fn by_resource_id(resource_id: &str) -> Option<&'static VmSpec> {
    VMS.iter()
        .find(|vm| vm.resource_id().eq_ignore_ascii_case(resource_id))
}

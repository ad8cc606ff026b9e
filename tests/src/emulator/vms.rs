//! The VMs of the emulated subscription, by resource group: what ARM lists
//! for VM-name targets and what the data plane reaches for VM targets.
//! `twin` exists in two resource groups (on different services) so a test
//! can tell which one a lookup picked.

use std::net::Ipv4Addr;

use super::vnet::{ECHO_IP, SINK_IP, SOURCE_IP};

/// One emulated VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmSpec {
    pub resource_group: &'static str,
    /// The ARM name, as created (lookups ignore case).
    pub name: &'static str,
    pub private_ip: Ipv4Addr,
}

/// Every VM; all live in [`super::DEFAULT_SUBSCRIPTION`].
pub const VMS: [VmSpec; 5] = [
    VmSpec {
        resource_group: "rg-vms",
        name: "vm1",
        private_ip: ECHO_IP,
    },
    VmSpec {
        resource_group: "rg-app",
        name: "Web01",
        private_ip: ECHO_IP,
    },
    VmSpec {
        resource_group: "rg-app",
        name: "twin",
        private_ip: ECHO_IP,
    },
    VmSpec {
        resource_group: "rg-data",
        name: "twin",
        private_ip: SOURCE_IP,
    },
    VmSpec {
        resource_group: "rg-data",
        name: "db01",
        private_ip: SINK_IP,
    },
];

impl VmSpec {
    pub fn resource_id(&self, subscription: &str) -> String {
        format!(
            "/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.resource_group, self.name
        )
    }
}

/// The VM `name` in `resource_group` (both case-insensitive).
pub fn find(resource_group: &str, name: &str) -> Option<&'static VmSpec> {
    VMS.iter().find(|vm| {
        vm.resource_group.eq_ignore_ascii_case(resource_group) && vm.name.eq_ignore_ascii_case(name)
    })
}

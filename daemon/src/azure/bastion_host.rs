//! What Azure Resource Manager says about a bastion host, and whether that
//! lets it tunnel to a target: each refusal names the portal setting to change.

use bastion_proto::target::{Target, TargetHost};
use serde::Deserialize;

use crate::error::AzureError;

/// A bastion host as ARM's JSON describes it, in a GET and in a listing alike.
#[derive(Deserialize)]
pub struct ArmBastion {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub sku: Option<ArmSku>,
    #[serde(default)]
    pub properties: ArmProperties,
}

#[derive(Deserialize)]
pub struct ArmSku {
    pub name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArmProperties {
    pub dns_name: Option<String>,
    #[serde(default)]
    pub enable_tunneling: bool,
    #[serde(default)]
    pub enable_ip_connect: bool,
}

impl ArmBastion {
    /// ARM omits the SKU for bastions created before SKUs existed: Basic.
    pub fn sku_name(&self) -> String {
        self.sku
            .as_ref()
            .map_or_else(|| "Basic".to_string(), |s| s.name.clone())
    }
}

/// What the daemon needs to know about a bastion host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BastionHost {
    /// The data-plane host ("bst-….bastion.azure.com", or "host:port").
    pub dns_name: String,
    pub sku: String,
    pub tunneling: bool,
    pub ip_connect: bool,
    pub subscription: String,
    pub resource_group: String,
}

impl BastionHost {
    /// Developer and QuickConnect bastions serve through a data pod that
    /// `POST /api/connection` names (the Azure CLI treats both alike).
    pub fn uses_data_pod(&self) -> bool {
        matches!(self.sku.as_str(), "Developer" | "QuickConnect")
    }

    /// This bastion, with its data plane on `pod` (what `/api/connection` named).
    pub fn on_pod(&self, pod: String) -> BastionHost {
        BastionHost {
            dns_name: pod,
            ..self.clone()
        }
    }

    /// Refuses targets this bastion cannot tunnel to, naming the setting to change.
    pub fn check(&self, name: &str, target: &Target) -> Result<(), AzureError> {
        let refuse = |message: String| Err(AzureError::Precondition(message));
        match self.sku.as_str() {
            "Standard" | "Premium" => {}
            // No "Native client support" or "IP-based connection" flags to check:
            // the SKU has neither, and serves VMs only.
            "Developer" | "QuickConnect" => {
                return match target.host {
                    TargetHost::Ip(_) => refuse(format!(
                        "bastion {name} uses the {} SKU, which has no IP-based connection: \
                         target the VM by name (VMNAME:{}) or by resource id, \
                         or use a Standard or Premium bastion with \"IP-based connection\"",
                        self.sku, target.port
                    )),
                    // `az aks bastion` needs Standard or Premium with native client support.
                    TargetHost::Cluster(_) => refuse(format!(
                        "bastion {name} uses the {} SKU, which serves VMs only: reaching a managed \
                         cluster's API server needs a Standard or Premium bastion with \
                         \"Native client support\"",
                        self.sku
                    )),
                    TargetHost::Vm(_) | TargetHost::Name(_) => Ok(()),
                };
            }
            sku => {
                return refuse(format!(
                    "bastion {name} uses the {sku} SKU; native client tunnels need Standard or Premium \
                     (portal: Bastion → Configuration → Tier)"
                ));
            }
        }
        if !self.tunneling {
            return refuse(format!(
                "bastion {name} has tunnelling disabled; enable \"Native client support\" \
                 (portal: Bastion → Configuration)"
            ));
        }
        if matches!(target.host, TargetHost::Ip(_)) && !self.ip_connect {
            return refuse(format!(
                "bastion {name} cannot connect to IP addresses; enable \"IP-based connection\" \
                 (portal: Bastion → Configuration), or target the VM by its resource id"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(sku: &str, tunneling: bool, ip_connect: bool) -> BastionHost {
        BastionHost {
            dns_name: "bst.example".into(),
            sku: sku.into(),
            tunneling,
            ip_connect,
            subscription: "s".into(),
            resource_group: "rg".into(),
        }
    }

    #[test]
    fn checks_name_the_portal_setting() {
        let ip = Target::parse("10.1.0.4:22").unwrap();
        let vm = Target::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1:22",
        )
        .unwrap();
        assert!(host("Standard", true, true).check("hub", &ip).is_ok());
        let e = host("Basic", true, true)
            .check("hub", &ip)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Basic") && e.contains("Standard or Premium"),
            "{e}"
        );
        let e = host("Developer", false, false)
            .check("hub", &ip)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Developer") && e.contains("VMNAME:22"), "{e}");
        assert!(host("Developer", false, false).check("hub", &vm).is_ok());
        assert!(host("QuickConnect", false, false).check("hub", &vm).is_ok());
        let aks = Target::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/aks1:443",
        )
        .unwrap();
        let e = host("Developer", false, false)
            .check("hub", &aks)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Developer") && e.contains("Standard or Premium"),
            "{e}"
        );
        assert!(host("Standard", true, false).check("hub", &aks).is_ok());
        let e = host("Premium", false, true)
            .check("hub", &ip)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Native client support"), "{e}");
        let e = host("Standard", true, false)
            .check("hub", &ip)
            .unwrap_err()
            .to_string();
        assert!(e.contains("IP-based connection"), "{e}");
        assert!(host("Standard", true, false).check("hub", &vm).is_ok());
    }
}

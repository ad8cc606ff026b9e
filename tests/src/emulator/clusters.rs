//! The private AKS clusters of the emulated subscription: what ARM's
//! `Microsoft.ContainerService/managedClusters` answers and where each
//! cluster's API server sits in the VNet (its private endpoint, port 443),
//! reached through the Bastion by the cluster's resource id.

use std::net::Ipv4Addr;

/// Where the API servers listen behind their private endpoints, as in AKS.
pub const API_SERVER_PORT: u16 = 443;

/// One emulated managed cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    pub resource_group: &'static str,
    /// The ARM name, as created (lookups ignore case).
    pub name: &'static str,
    /// AKS-managed Entra ID: user credentials are a `kubelogin` exec entry.
    pub entra: bool,
    /// The API server's private endpoint in the VNet.
    pub private_ip: Ipv4Addr,
    /// `properties.privateFQDN`: the only name on the API server's certificate.
    pub private_fqdn: &'static str,
    pub kubernetes_version: &'static str,
}

/// Every cluster; all live in [`super::DEFAULT_SUBSCRIPTION`].
pub const CLUSTERS: [ClusterSpec; 2] = [
    ClusterSpec {
        resource_group: "rg-aks",
        name: "aks-private",
        entra: false,
        private_ip: Ipv4Addr::new(10, 1, 0, 20),
        private_fqdn: "aks-private-dns-4c1f7b2e.0f3a9d52-8c0e-4b6f-9a7e-2d5b1c3e8f40.privatelink.westeurope.azmk8s.io",
        kubernetes_version: "1.31.2",
    },
    ClusterSpec {
        resource_group: "rg-aks",
        name: "aks-entra",
        entra: true,
        private_ip: Ipv4Addr::new(10, 1, 0, 21),
        private_fqdn: "aks-entra-dns-9b2d6e41.5e7c1a30-2f4d-4c8b-b1e6-7a9d3c0f2e58.privatelink.westeurope.azmk8s.io",
        kubernetes_version: "1.31.2",
    },
];

impl ClusterSpec {
    pub fn resource_id(&self, subscription: &str) -> String {
        format!(
            "/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters/{}",
            self.resource_group, self.name
        )
    }

    /// `properties.dnsPrefix`, as the portal derives it.
    pub fn dns_prefix(&self) -> String {
        format!("{}-dns", self.name)
    }

    /// The kubeconfig's `server` as ARM writes it for a private cluster.
    pub fn server_url(&self) -> String {
        format!("https://{}:{API_SERVER_PORT}", self.private_fqdn)
    }
}

/// The cluster `name` in `resource_group` (both case-insensitive).
pub fn find(resource_group: &str, name: &str) -> Option<&'static ClusterSpec> {
    CLUSTERS.iter().find(|c| {
        c.resource_group.eq_ignore_ascii_case(resource_group) && c.name.eq_ignore_ascii_case(name)
    })
}

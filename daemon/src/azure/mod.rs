//! Azure's control plane: Entra ID tokens and Azure Resource Manager (what a
//! bastion is, which VMs a subscription has, managed clusters and their
//! kubeconfigs), over the pooled HTTPS client.
//! Uses only the leaves (`config`, `error`, `secret`); knows nothing of
//! tunnels, forwards or the control socket.

pub mod arm;
pub mod arm_list;
pub mod auth;
pub mod bastion_host;
pub mod claims;
pub mod credential;
pub mod dev_tools;
pub mod http;
pub mod managed_cluster;
pub mod session_slots;
pub mod tenants;
pub mod vm_lookup;

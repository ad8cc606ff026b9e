//! Each managed cluster at run time: its PKI (a cluster CA, the API server's
//! certificate for the private FQDN only, the client certificates of its
//! credentials), its static token, its API server in the VNet, and the
//! kubeconfigs ARM's `listClusterUserCredential` / `listClusterAdminCredential`
//! return (built as data and serialised by a YAML library, as AKS does).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::clusters::{API_SERVER_PORT, CLUSTERS, ClusterSpec};
use super::ledger::LedgerHandle;
use super::tls::{Ca, Issued, Usage};
use super::vnet::Vnet;
use super::{TENANT_ID, kube_api};

/// The Kubernetes group AKS puts its local-account certificates in.
const MASTERS_GROUP: &str = "system:masters";
/// The common name AKS gives its local-account client certificates.
const LOCAL_ACCOUNT_CN: &str = "masterclient";
/// The AKS Entra server application kubelogin asks tokens for (the same in every tenant).
const AKS_SERVER_APP: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
/// The Azure CLI's public client application, which kubelogin signs in as.
const AZURE_CLI_APP: &str = "80faf920-1908-4b52-b5ef-a8e7bedfc67a";

/// Which credential a POST asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Credential {
    User,
    Admin,
}

/// `?format=` of the user credential of an Entra cluster: `azure` (the
/// default, a legacy auth-provider entry) or `exec` (kubelogin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Azure,
    Exec,
}

/// One cluster's live state.
pub(crate) struct Cluster {
    pub(crate) spec: &'static ClusterSpec,
    pub(crate) ca: Ca,
    /// The local account's client certificate (user and admin share it, as in AKS).
    local_account: Issued,
    /// The local account's bearer token, sent beside the certificate.
    token: String,
}

impl Cluster {
    fn new(spec: &'static ClusterSpec) -> anyhow::Result<Cluster> {
        let ca = Ca::new("ca")?;
        let local_account = ca.issue(
            LOCAL_ACCOUNT_CN,
            Usage::Client {
                organization: MASTERS_GROUP,
            },
        )?;
        Ok(Cluster {
            spec,
            ca,
            local_account,
            token: hex::encode(rand::random::<[u8; 32]>()),
        })
    }

    /// The API server's certificate: the private FQDN and nothing else, so a
    /// client reaching it as 127.0.0.1 must name the host (`tls-server-name`).
    pub(crate) fn server_certificate(&self) -> anyhow::Result<Issued> {
        self.ca.issue(
            "apiserver",
            Usage::Server(vec![self.spec.private_fqdn.to_owned()]),
        )
    }

    /// Whether `bearer` is this cluster's local-account token.
    pub(crate) fn accepts_token(&self, bearer: &str) -> bool {
        bearer == self.token
    }

    /// The kubeconfig ARM returns (YAML text, before its base64).
    pub(crate) fn kubeconfig(&self, credential: Credential, format: Format) -> String {
        let spec = self.spec;
        let (kind, context) = match credential {
            Credential::User => ("clusterUser", spec.name.to_owned()),
            Credential::Admin => ("clusterAdmin", format!("{}-admin", spec.name)),
        };
        let user_name = format!("{kind}_{}_{}", spec.resource_group, spec.name);
        let user = match (credential, spec.entra, format) {
            (Credential::User, true, Format::Exec) => kubelogin_exec(),
            (Credential::User, true, Format::Azure) => legacy_auth_provider(),
            _ => self.local_account_user(),
        };
        let config = json!({
            "apiVersion": "v1",
            "clusters": [{
                "cluster": {
                    "certificate-authority-data": b64(self.ca.cert.pem()),
                    "server": spec.server_url(),
                },
                "name": spec.name,
            }],
            "contexts": [{
                "context": { "cluster": spec.name, "user": user_name },
                "name": context,
            }],
            "current-context": context,
            "kind": "Config",
            "preferences": {},
            "users": [{ "name": user_name, "user": user }],
        });
        // A json! value always serialises.
        serde_norway::to_string(&config).unwrap_or_default()
    }

    fn local_account_user(&self) -> Value {
        json!({
            "client-certificate-data": b64(self.local_account.cert.pem()),
            "client-key-data": b64(self.local_account.key.serialize_pem()),
            "token": self.token,
        })
    }
}

/// What AKS writes for an Entra cluster with `format=exec`.
fn kubelogin_exec() -> Value {
    json!({
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "args": [
                "get-token", "--environment", "AzurePublicCloud",
                "--server-id", AKS_SERVER_APP, "--client-id", AZURE_CLI_APP,
                "--tenant-id", TENANT_ID, "--login", "devicecode",
            ],
            "command": "kubelogin",
            "env": null,
            "installHint": "\nkubelogin is not installed which is required to connect to AAD enabled cluster.\n\nTo learn more, please go to https://aka.ms/aks/kubelogin\n",
            "provideClusterInfo": false,
        }
    })
}

/// What AKS writes for an Entra cluster without `format` (kubectl 1.26+ refuses it).
fn legacy_auth_provider() -> Value {
    json!({
        "auth-provider": {
            "config": {
                "apiserver-id": AKS_SERVER_APP,
                "client-id": AZURE_CLI_APP,
                "config-mode": "1",
                "environment": "AzurePublicCloud",
                "tenant-id": TENANT_ID,
            },
            "name": "azure",
        }
    })
}

fn b64(text: String) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Every cluster, with its API server serving.
pub(crate) struct Clusters(Vec<Arc<Cluster>>);

impl Clusters {
    /// Generates each cluster's PKI, starts its API server and makes its
    /// private endpoint (`private_ip:443`) in `vnet` lead there.
    pub(crate) async fn start(
        vnet: &Vnet,
        ledger: &LedgerHandle,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Clusters> {
        let mut clusters = Vec::with_capacity(CLUSTERS.len());
        for spec in &CLUSTERS {
            let cluster = Arc::new(
                Cluster::new(spec).with_context(|| format!("generating {}'s PKI", spec.name))?,
            );
            let addr: SocketAddr = kube_api::serve(cluster.clone(), ledger, tracker, cancel)
                .await
                .with_context(|| format!("starting {}'s API server", spec.name))?;
            vnet.map(IpAddr::V4(spec.private_ip), API_SERVER_PORT, addr);
            clusters.push(cluster);
        }
        Ok(Clusters(clusters))
    }

    /// The cluster `name` in `resource_group` (case-insensitive).
    pub(crate) fn find(&self, resource_group: &str, name: &str) -> Option<&Arc<Cluster>> {
        let spec = super::clusters::find(resource_group, name)?;
        self.0.iter().find(|c| c.spec == spec)
    }
}

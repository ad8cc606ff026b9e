//! `aks list`: the daemon's forwards to managed clusters, with the
//! kubeconfig contexts `aks add` wrote for each.

use std::path::PathBuf;

use serde::Serialize;

use crate::daemon;
use crate::forward::print_json;
use crate::kubeconfig::{self, Kubeconfig};
use crate::output::{self, out, outln};

/// An AKS forward as `aks list --json` prints it. Only ever add fields.
#[derive(Debug, Serialize)]
struct AksJson {
    name: String,
    cluster: String,
    resource_group: String,
    resource_id: String,
    bastion: String,
    local: String,
    state: &'static str,
    /// The contexts `aks add` wrote for it in `kubeconfig`.
    contexts: Vec<String>,
    kubeconfig: String,
}

pub async fn list(
    socket: Option<PathBuf>,
    path: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let path = match path {
        Some(path) => path,
        None => kubeconfig::default_path()?,
    };
    let kube = Kubeconfig::open(&path)?;
    let rows: Vec<AksJson> = daemon::forwards(&mut client)
        .await?
        .iter()
        .filter_map(|f| {
            let id = output::cluster_id(f)?;
            let (rg, name) = output::cluster_parts(&id);
            Some(AksJson {
                name: f.name.clone(),
                cluster: name.to_owned(),
                resource_group: rg.to_owned(),
                bastion: f.bastion.clone(),
                local: output::local_text(&f.bind_address, f.local_port),
                state: output::state_name(f.state),
                contexts: kube.contexts_of(&f.name),
                kubeconfig: path.display().to_string(),
                resource_id: id,
            })
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        return outln!("No AKS forwards. Add one with `bastionctl aks add CLUSTER`.");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let contexts = if r.contexts.is_empty() {
                "-".to_owned()
            } else {
                r.contexts.join(",")
            };
            vec![
                r.name.clone(),
                r.cluster.clone(),
                r.resource_group.clone(),
                r.local.clone(),
                r.bastion.clone(),
                r.state.to_owned(),
                contexts,
            ]
        })
        .collect();
    out!(
        "{}",
        output::table(
            &[
                "NAME",
                "CLUSTER",
                "RESOURCE GROUP",
                "LOCAL",
                "BASTION",
                "STATE",
                "CONTEXT"
            ],
            &table
        )
    )
}

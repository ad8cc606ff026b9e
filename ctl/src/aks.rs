//! `aks add|list|remove`: private AKS clusters through the Bastion. `add`
//! has the daemon find the cluster and fetch its kubeconfig from ARM, adds a
//! forward to the cluster's resource id on 443, and merges one context into
//! the user's kubeconfig whose cluster points at the forward
//! (`server: https://127.0.0.1:PORT`) while TLS still checks the API
//! server's own name (`tls-server-name`). The cluster's CA and the user entry
//! stay as ARM gave them (an Entra cluster's kubelogin `exec` included).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bastion_proto::v1::{
    AddForwardRequest, ClusterCredentialsRequest, ClusterCredentialsResponse, Forward,
    RemoveForwardRequest,
};
use serde_norway::{Mapping, Value};

use crate::cli::{AksAddArgs, AksCommand};
use crate::daemon::{self, Client, rpc_error};
use crate::exit::Exit;
use crate::kubeconfig::{self, Kubeconfig, Mark, Section};
use crate::output::{self, outln};

/// Where AKS API servers listen, behind their private endpoints.
const API_SERVER_PORT: u16 = 443;
/// Where to get kubelogin, which an Entra ID cluster's user entry runs.
const KUBELOGIN_HINT: &str = "install it with `az aks install-cli`, or from \
    https://github.com/Azure/kubelogin/releases (one static binary, put it on PATH)";

pub async fn run(socket: Option<PathBuf>, command: AksCommand) -> anyhow::Result<()> {
    match command {
        AksCommand::Add(args) => add(socket, args).await,
        AksCommand::List { json, kubeconfig } => {
            crate::aks_list::list(socket, kubeconfig, json).await
        }
        AksCommand::Remove {
            cluster,
            kubeconfig,
        } => remove(socket, kubeconfig, &cluster).await,
    }
}

async fn add(socket: Option<PathBuf>, args: AksAddArgs) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let found = client
        .cluster_credentials(ClusterCredentialsRequest {
            cluster: args.cluster.clone(),
            resource_group: args.resource_group.clone().unwrap_or_default(),
            bastion: args.bastion.clone().unwrap_or_default(),
            admin: args.admin,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let from_arm = FromArm::parse(&found)?;
    let context = args
        .context
        .clone()
        .unwrap_or_else(|| from_arm.context.clone());
    let path = match args.kubeconfig {
        Some(path) => path,
        None => kubeconfig::default_path()?,
    };
    let mut kube = Kubeconfig::open(&path)?;
    let existing = daemon::forwards(&mut client).await?.into_iter().find(|f| {
        output::cluster_id(f).is_some_and(|id| id.eq_ignore_ascii_case(&found.resource_id))
    });
    let forward_name = existing
        .as_ref()
        .map_or(context.as_str(), |f| f.name.as_str());
    check_free(&kube, &context, forward_name)?;
    let (forward, added) = match existing {
        Some(forward) if args.port.is_none_or(|p| u32::from(p) == forward.local_port) => {
            (forward, false)
        }
        Some(forward) => bail!(
            "{} is already forwarded on port {} (forward {}); `bastionctl aks remove {}` first to move it",
            found.name,
            forward.local_port,
            forward.name,
            found.name
        ),
        None => (
            add_forward(&mut client, &found, &context, args.port).await?,
            true,
        ),
    };
    let mark = Mark {
        forward: forward.name.clone(),
        managed_cluster: found.resource_id.clone(),
    };
    let mut cluster = from_arm.cluster.clone();
    cluster.insert(
        "server".into(),
        format!("https://127.0.0.1:{}", forward.local_port).into(),
    );
    cluster.insert(
        "tls-server-name".into(),
        from_arm.server_host.clone().into(),
    );
    let mut context_body = Mapping::new();
    context_body.insert("cluster".into(), context.clone().into());
    context_body.insert("user".into(), context.clone().into());
    kube.put(Section::Clusters, &context, cluster, &mark);
    kube.put(Section::Users, &context, from_arm.user.clone(), &mark);
    kube.put(Section::Contexts, &context, context_body, &mark);
    if kube.current_context().is_none() {
        kube.set_current_context(&context);
    }
    if let Err(e) = kube.save() {
        if added {
            // Nothing points at the new forward: take it away again.
            let _ = client
                .remove_forward(RemoveForwardRequest {
                    selector: forward.id.clone(),
                })
                .await;
        }
        return Err(e);
    }
    outln!(
        "Forwarding {} → {} (API server {}) via {}; context {context} in {}",
        output::local_text(&forward.bind_address, forward.local_port),
        found.name,
        from_arm.server_host,
        forward.bastion,
        path.display()
    )?;
    outln!("Try: kubectl --context {context} get --raw /healthz")?;
    if let Some(command) = from_arm.exec_command().filter(|c| !on_path(c)) {
        eprintln!(
            "bastionctl: warning: this context signs in with {command:?} (Entra ID), which is not on PATH; {KUBELOGIN_HINT}"
        );
    }
    Ok(())
}

/// What `aks add` takes from ARM's kubeconfig: its current context's
/// cluster and user entries, and the API server's host name.
struct FromArm {
    context: String,
    cluster: Mapping,
    user: Mapping,
    server_host: String,
}

impl FromArm {
    fn parse(found: &ClusterCredentialsResponse) -> anyhow::Result<FromArm> {
        let what = format!("the kubeconfig ARM returned for {}", found.name);
        let arm = Kubeconfig::parse(&found.kubeconfig, &what)?;
        let context = arm
            .current_context()
            .with_context(|| format!("{what} names no current context"))?
            .to_owned();
        let names = arm
            .body(Section::Contexts, &context)
            .with_context(|| format!("{what} has no context {context:?}"))?;
        let entry = |section: Section| -> anyhow::Result<Mapping> {
            let name = names
                .get(section.body_key())
                .and_then(Value::as_str)
                .with_context(|| {
                    format!(
                        "context {context:?} of {what} names no {}",
                        section.body_key()
                    )
                })?;
            arm.body(section, name)
                .cloned()
                .with_context(|| format!("{what} has no {} {name:?}", section.body_key()))
        };
        let (cluster, user) = (entry(Section::Clusters)?, entry(Section::Users)?);
        let server = cluster
            .get("server")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let server_host = server_host(server)
            .with_context(|| format!("{what} has a server URL bastionctl cannot read: {server:?}"))?
            .to_owned();
        Ok(FromArm {
            context,
            cluster,
            user,
            server_host,
        })
    }

    /// The program an `exec` user entry runs (kubelogin for Entra ID clusters).
    fn exec_command(&self) -> Option<&str> {
        self.user.get("exec")?.get("command")?.as_str()
    }
}

/// `https://HOST[:PORT][/…]` → `HOST`.
fn server_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty() && !host.contains(['[', '@'])).then_some(host)
}

/// Refuses to overwrite entries bastionctl did not write for this forward.
fn check_free(kube: &Kubeconfig, name: &str, forward: &str) -> anyhow::Result<()> {
    for section in [Section::Contexts, Section::Clusters, Section::Users] {
        if kube.body(section, name).is_none() {
            continue;
        }
        match kube.mark(section, name) {
            Some(mark) if mark.forward == forward => {}
            Some(mark) => bail!(
                "{} already has a {} named {name:?}, written by bastionctl for forward {}; pick another name with --context NAME",
                kube.path().display(),
                section.body_key(),
                mark.forward
            ),
            None => bail!(
                "{} already has a {} named {name:?} that bastionctl did not write (az aks get-credentials?); \
                 pick another name with --context NAME",
                kube.path().display(),
                section.body_key()
            ),
        }
    }
    Ok(())
}

async fn add_forward(
    client: &mut Client,
    found: &ClusterCredentialsResponse,
    name: &str,
    port: Option<u16>,
) -> anyhow::Result<Forward> {
    let request = AddForwardRequest {
        target: Some(bastion_proto::v1::Target {
            host: found.resource_id.clone(),
            port: u32::from(API_SERVER_PORT),
        }),
        local_port: port.map_or(0, u32::from),
        bastion: found.bastion.clone(),
        name: name.to_owned(),
        ..AddForwardRequest::default()
    };
    daemon::add_forward(client, request).await
}

/// Whether `command` is an executable file in one of PATH's directories.
fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        return executable(Path::new(command));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(command))))
}

async fn remove(
    socket: Option<PathBuf>,
    path: Option<PathBuf>,
    cluster: &str,
) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let path = match path {
        Some(path) => path,
        None => kubeconfig::default_path()?,
    };
    let matching: Vec<Forward> = daemon::forwards(&mut client)
        .await?
        .into_iter()
        .filter(|f| {
            f.name == cluster
                || output::cluster_id(f).is_some_and(|id| {
                    id.eq_ignore_ascii_case(cluster)
                        || output::cluster_parts(&id).1.eq_ignore_ascii_case(cluster)
                })
        })
        .collect();
    let forward = match matching.as_slice() {
        [forward] => forward,
        [] => {
            return Err(Exit::NotFound.error(format!(
                "no AKS forward for {cluster:?}; `bastionctl aks list` shows them"
            )));
        }
        several => bail!(
            "{} AKS forwards match {cluster:?} ({}); name one of them",
            several.len(),
            several
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    client
        .remove_forward(RemoveForwardRequest {
            selector: forward.id.clone(),
        })
        .await
        .map_err(rpc_error)?;
    outln!(
        "Removed forward {} ({})",
        forward.name,
        output::local_text(&forward.bind_address, forward.local_port)
    )?;
    let mut kube = Kubeconfig::open(&path)?;
    let contexts = kube.contexts_of(&forward.name);
    for context in &contexts {
        let uses = |section: Section| {
            kube.body(Section::Contexts, context)
                .and_then(|c| c.get(section.body_key()))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (cluster_entry, user_entry) = (uses(Section::Clusters), uses(Section::Users));
        kube.remove_marked(Section::Contexts, context, &forward.name);
        if let Some(name) = cluster_entry {
            kube.remove_marked(Section::Clusters, &name, &forward.name);
        }
        if let Some(name) = user_entry {
            kube.remove_marked(Section::Users, &name, &forward.name);
        }
    }
    if contexts.is_empty() {
        return outln!("No context of it in {}", path.display());
    }
    kube.save()?;
    outln!(
        "Removed context {} from {}",
        contexts.join(", "),
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hosts() {
        assert_eq!(
            server_host("https://aks-1.privatelink.westeurope.azmk8s.io:443"),
            Some("aks-1.privatelink.westeurope.azmk8s.io")
        );
        assert_eq!(server_host("https://host/"), Some("host"));
        assert_eq!(server_host("http://host:443"), None);
        assert_eq!(server_host("https://:443"), None);
    }
}

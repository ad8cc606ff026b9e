//! What the AKS forward costs kubectl: `kubectl get --raw /healthz` (the real
//! kubectl, a process per call as a user runs it) through the forward
//! `bastionctl aks add` made, against the same call through a plain forward
//! to the same API server (`forward add 10.1.0.20:443`, reached with
//! `--server` and `--tls-server-name`, as a user of a plain forward would:
//! kubectl drops the context's server name when `--server` overrides it).
//! Taken in turns, so the machine's drift hits both alike; the difference is
//! what the cluster target kind costs on top of a forward.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use super::suite::Run;
use crate::emulator::{API_SERVER_PORT, CLUSTERS};
use crate::harness::TestEnv;

/// kubectl calls per path and run: each is a process start (~100 ms), so
/// 20 give a steady median in a few seconds.
const KUBECTL_CALLS: usize = 20;
/// Untimed calls first: the first ones page kubectl in and open the tunnels' pools.
const WARM_UP: usize = 2;

/// The forwards kubectl goes through, and the kubeconfig `aks add` wrote.
struct Forwards {
    kubeconfig: std::path::PathBuf,
    context: &'static str,
    /// `--server` and `--tls-server-name` for the plain forward.
    plain: [String; 2],
}

impl Forwards {
    /// `aks add` for the emulator's first cluster, and a plain forward to
    /// its API server's private IP.
    async fn add(env: &TestEnv) -> anyhow::Result<Forwards> {
        let cluster = &CLUSTERS[0];
        let kubeconfig = env.root().join("bench-kubeconfig");
        let path = kubeconfig.to_string_lossy().into_owned();
        env.ctl_ok(&["aks", "add", cluster.name, "--kubeconfig", &path])
            .await?;
        let target = format!("{}:{API_SERVER_PORT}", cluster.private_ip);
        let port = env
            .add_forward(&target, &["--name", "bench-kube-plain"])
            .await?;
        Ok(Forwards {
            kubeconfig,
            context: cluster.name,
            plain: [
                format!("https://127.0.0.1:{port}"),
                cluster.private_fqdn.to_owned(),
            ],
        })
    }

    /// Takes both forwards and the kubeconfig away again.
    async fn remove(&self, env: &TestEnv) -> anyhow::Result<()> {
        let path = self.kubeconfig.to_string_lossy().into_owned();
        env.ctl_ok(&["aks", "remove", self.context, "--kubeconfig", &path])
            .await?;
        env.ctl_ok(&["forward", "remove", "bench-kube-plain"])
            .await?;
        Ok(())
    }
}

/// One `kubectl get --raw /healthz` with the written context (through the
/// plain forward when `plain` names it), timed from spawn to exit.
async fn healthz(
    env: &TestEnv,
    kubeconfig: &Path,
    context: &str,
    plain: Option<&[String; 2]>,
) -> anyhow::Result<Duration> {
    let mut args = vec!["--context", context];
    if let Some([server, name]) = plain {
        args.extend(["--server", server, "--tls-server-name", name]);
    }
    args.extend(["get", "--raw", "/healthz"]);
    let start = Instant::now();
    let out = env.kubectl_ok(kubeconfig, &args).await?;
    let took = start.elapsed();
    ensure!(out.trim() == "ok", "/healthz answered {out:?}");
    Ok(took)
}

impl Run<'_> {
    /// LAN: kubectl through the AKS forward and through a plain forward, in
    /// turns; their p50 and p99 and the AKS forward's extra.
    pub(super) async fn aks(&mut self) {
        let sampled = self.kubectl_samples().await;
        let sampled = self.note("kubectl through the AKS forward", sampled);
        let n = KUBECTL_CALLS;
        let rows = [
            (
                "aks.kubectl",
                format!("(a) kubectl /healthz, AKS forward ({n})"),
            ),
            (
                "aks.plain",
                format!("(a) kubectl /healthz, plain forward ({n})"),
            ),
            ("aks.extra", "AKS forward extra, aks − plain".to_owned()),
        ];
        let extra = self.out.sheet.daemon_pair(&rows, sampled.as_ref());
        self.progress("AKS forward extra p50", "(a)", extra, "ms");
        self.settle("kubectl").await;
    }

    /// [`KUBECTL_CALLS`] through each forward, alternating; the forwards
    /// are taken away again whatever the samples gave.
    async fn kubectl_samples(&self) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let env = &self.world.env;
        let forwards = Forwards::add(env).await.context("adding the forwards")?;
        let sampled = alternate(env, &forwards).await;
        let removed = forwards.remove(env).await.context("removing the forwards");
        let sampled = sampled?;
        removed?;
        Ok(sampled)
    }
}

async fn alternate(
    env: &TestEnv,
    forwards: &Forwards,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (config, context) = (&forwards.kubeconfig, forwards.context);
    let plain = Some(&forwards.plain);
    for _ in 0..WARM_UP {
        healthz(env, config, context, None).await?;
        healthz(env, config, context, plain).await?;
    }
    let (mut through_aks, mut through_plain) = (Vec::new(), Vec::new());
    for _ in 0..KUBECTL_CALLS {
        through_aks.push(healthz(env, config, context, None).await?);
        through_plain.push(healthz(env, config, context, plain).await?);
    }
    Ok((through_aks, through_plain))
}

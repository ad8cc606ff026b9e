//! Running the real `kubectl` (Debian's `kubernetes-client`) with a given
//! kubeconfig, in a [`TestEnv`]'s environment (its HOME, so kubectl's cache
//! stays in the test's temp dir), bounded in time.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::harness::{CtlOutput, STEP_TIMEOUT, TestEnv, within};

/// Where `.ci/run` installs kubectl (Debian's package); PATH is the fallback.
const KUBECTL: &str = "kubectl";

impl TestEnv {
    /// `kubectl --kubeconfig KUBECONFIG ARGS`, run to completion.
    pub async fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<CtlOutput> {
        let mut cmd = Command::new(KUBECTL);
        self.apply(&mut cmd);
        cmd.env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("kubectl {}", args.join(" "));
        let output = within(&what, STEP_TIMEOUT, async {
            cmd.output()
                .await
                .context("cannot run kubectl (apt-get install kubernetes-client)")
        })
        .await?;
        Ok(output.into())
    }

    /// Like [`kubectl`](Self::kubectl), failing with its stderr unless it succeeds.
    pub async fn kubectl_ok(&self, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(kubeconfig, args).await?;
        if !out.success {
            bail!("kubectl {} failed: {}", args.join(" "), out.stderr.trim());
        }
        Ok(out.stdout)
    }
}

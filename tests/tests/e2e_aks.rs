//! Private AKS clusters end to end with the real kubectl: `bastionctl aks add`
//! finds the emulator's cluster through ARM, adds a forward to its resource
//! id on 443 and merges a context into the kubeconfig, which kubectl then
//! uses with no insecure flag (the API server's certificate names only its
//! private FQDN: `tls-server-name` makes it pass). `aks remove` takes away
//! exactly what `add` wrote.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use bastion_tests::emulator::{BastionSpec, CLUSTERS, DEFAULT_SUBSCRIPTION};
use bastion_tests::harness::{Daemon, TestEnv};
use serde_json::Value;

type Result = anyhow::Result<()>;

/// Kubectl runs in a row through one daemon.
const KUBECTL_RUNS: usize = 20;

fn kubeconfig_path(env: &TestEnv) -> PathBuf {
    env.root().join("home/.kube/config")
}

/// A kubeconfig with the user's own cluster, user and context, written by
/// kubectl itself (so its formatting is kubectl's).
async fn users_own_kubeconfig(env: &TestEnv, path: &Path) -> anyhow::Result<Vec<u8>> {
    for args in [
        &[
            "config",
            "set-cluster",
            "prod",
            "--server=https://10.9.9.9:6443",
        ][..],
        &[
            "config",
            "set-credentials",
            "prod-admin",
            "--token=not-a-real-token",
        ],
        &[
            "config",
            "set-context",
            "prod",
            "--cluster=prod",
            "--user=prod-admin",
            "--namespace=web",
        ],
        &["config", "use-context", "prod"],
    ] {
        env.kubectl_ok(path, args).await?;
    }
    Ok(std::fs::read(path)?)
}

fn yaml(path: &Path) -> anyhow::Result<serde_norway::Value> {
    Ok(serde_norway::from_slice(&std::fs::read(path)?)?)
}

/// The entry `name` of `section` in a parsed kubeconfig.
fn entry<'a>(
    config: &'a serde_norway::Value,
    section: &str,
    name: &str,
) -> &'a serde_norway::Value {
    config[section]
        .as_sequence()
        .and_then(|list| list.iter().find(|e| e["name"].as_str() == Some(name)))
        .unwrap_or(&serde_norway::Value::Null)
}

#[tokio::test]
async fn kubectl_reaches_the_private_cluster_and_remove_leaves_the_rest_byte_identical() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let path = kubeconfig_path(&env);
    let before = users_own_kubeconfig(&env, &path).await?;
    let path_text = path.to_string_lossy().into_owned();

    let out = env
        .ctl_ok(&["aks", "add", "aks-private", "--kubeconfig", &path_text])
        .await?;
    let cluster = &CLUSTERS[0];
    assert!(out.contains(cluster.private_fqdn), "{out}");
    let config = yaml(&path)?;
    assert_eq!(
        config["current-context"].as_str(),
        Some("prod"),
        "the user's current context stays"
    );
    let written = &entry(&config, "clusters", "aks-private")["cluster"];
    let server = written["server"].as_str().unwrap_or_default();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");
    assert_eq!(
        written["tls-server-name"].as_str(),
        Some(cluster.private_fqdn)
    );
    assert!(
        written["certificate-authority-data"]
            .as_str()
            .is_some_and(|ca| !ca.is_empty())
    );
    let context = &entry(&config, "contexts", "aks-private")["context"];
    assert_eq!(
        (context["cluster"].as_str(), context["user"].as_str()),
        (Some("aks-private"), Some("aks-private"))
    );
    assert!(entry(&config, "users", "aks-private")["user"]["client-certificate-data"].is_string());

    // The forward is of its own kind, to the cluster's resource id on 443.
    let forward = env.forward("aks-private").await?;
    assert_eq!(forward["kind"], "aks");
    assert_eq!(
        forward["target"],
        format!("{}:443", cluster.resource_id(DEFAULT_SUBSCRIPTION))
    );
    assert_eq!(
        format!("https://{}", forward["local"].as_str().unwrap_or_default()),
        server
    );
    let listed = env
        .ctl_json(&["aks", "list", "--json", "--kubeconfig", &path_text])
        .await?;
    assert_eq!(listed[0]["cluster"], "aks-private");
    assert_eq!(listed[0]["contexts"], serde_json::json!(["aks-private"]));

    let version = env
        .kubectl_ok(
            &path,
            &["--context", "aks-private", "version", "-o", "json"],
        )
        .await?;
    let version: Value = serde_json::from_str(&version)?;
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.31.2",
        "{version}"
    );
    let healthz = env
        .kubectl_ok(
            &path,
            &["--context", "aks-private", "get", "--raw", "/healthz"],
        )
        .await?;
    assert_eq!(healthz.trim(), "ok");
    let apis = env
        .kubectl_ok(
            &path,
            &["--context", "aks-private", "get", "--raw", "/apis"],
        )
        .await?;
    assert!(apis.contains("APIGroupList"), "{apis}");
    // The certificate names the private FQDN only: checked, not skipped.
    let by_ip = env
        .kubectl(
            &path,
            &[
                "--context",
                "aks-private",
                "--tls-server-name",
                "127.0.0.1",
                "get",
                "--raw",
                "/healthz",
            ],
        )
        .await?;
    assert!(!by_ip.success && by_ip.stderr.contains("x509"), "{by_ip:?}");

    let out = env
        .ctl_ok(&["aks", "remove", "aks-private", "--kubeconfig", &path_text])
        .await?;
    assert!(out.contains("Removed context aks-private"), "{out}");
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&path)?),
        String::from_utf8_lossy(&before),
        "aks remove leaves the user's file as it was"
    );
    assert!(env.forwards().await?.is_empty());
    env.wait_no_live_sessions().await?;
    Ok(())
}

#[tokio::test]
async fn twenty_kubectl_runs_in_a_row_through_one_daemon() -> Result {
    let env = TestEnv::start().await?;
    let daemon = Daemon::start(&env).await?;
    // Found by resource id, into $KUBECONFIG's first file (created 0600).
    let path = env.root().join("kube/first");
    let list = std::env::join_paths([path.clone(), env.root().join("kube/second")])?;
    let id = CLUSTERS[0].resource_id(DEFAULT_SUBSCRIPTION);
    let mut cmd = env.ctl_command(&["aks", "add", &id, "--context", "private"])?;
    let out = cmd.env("KUBECONFIG", &list).output().await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        yaml(&path)?["current-context"].as_str(),
        Some("private"),
        "a new file's context is current"
    );
    assert!(!env.root().join("kube/second").exists());

    let sessions_before = env.emulator.ledger().sessions_created;
    for run in 0..KUBECTL_RUNS {
        let healthz = env.kubectl_ok(&path, &["get", "--raw", "/healthz"]).await?;
        assert_eq!(healthz.trim(), "ok", "run {run}");
    }
    let ledger = env.emulator.ledger();
    assert!(
        ledger.sessions_created - sessions_before >= KUBECTL_RUNS as u64,
        "{ledger:?}"
    );
    assert!(ledger.kube_requests >= KUBECTL_RUNS as u64, "{ledger:?}");
    assert_eq!(
        daemon.pid(),
        env.ctl_json(&["status", "--json"]).await?["pid"]
            .as_u64()
            .unwrap_or_default() as u32
    );
    env.wait_no_live_sessions().await?;
    Ok(())
}

#[tokio::test]
async fn an_entra_cluster_keeps_its_kubelogin_entry_and_names_what_is_missing() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let path = kubeconfig_path(&env);
    let path_text = path.to_string_lossy().into_owned();
    users_own_kubeconfig(&env, &path).await?;

    let out = env
        .ctl(&[
            "aks",
            "add",
            "aks-entra",
            "--resource-group",
            "rg-aks",
            "--kubeconfig",
            &path_text,
        ])
        .await?;
    assert!(out.success, "{out:?}");
    assert!(
        out.stderr.contains("kubelogin") && out.stderr.contains("not on PATH"),
        "{out:?}"
    );
    let config = yaml(&path)?;
    let exec = &entry(&config, "users", "aks-entra")["user"]["exec"];
    assert_eq!(exec["command"].as_str(), Some("kubelogin"));
    assert_eq!(exec["args"][0].as_str(), Some("get-token"));

    // Refusals: no local accounts on it, and names the user already has.
    let reason = env
        .ctl(&[
            "aks",
            "add",
            "aks-entra",
            "--admin",
            "--context",
            "x",
            "--kubeconfig",
            &path_text,
        ])
        .await?
        .one_line_error()?;
    assert!(reason.contains("disable local accounts"), "{reason}");
    let reason = env
        .ctl(&[
            "aks",
            "add",
            "aks-private",
            "--context",
            "prod",
            "--kubeconfig",
            &path_text,
        ])
        .await?
        .one_line_error()?;
    assert!(
        reason.contains("\"prod\"") && reason.contains("--context"),
        "{reason}"
    );
    let reason = env
        .ctl(&["aks", "add", "no-such-cluster", "--kubeconfig", &path_text])
        .await?
        .one_line_error()?;
    assert!(reason.contains("no-such-cluster"), "{reason}");
    assert_eq!(
        env.forwards().await?.len(),
        1,
        "a refused add leaves no forward"
    );
    Ok(())
}

#[tokio::test]
async fn an_aks_forward_survives_a_restart_with_its_port_and_kind() -> Result {
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let path = kubeconfig_path(&env);
    let path_text = path.to_string_lossy().into_owned();
    env.ctl_ok(&["aks", "add", "aks-private", "--kubeconfig", &path_text])
        .await?;
    let table = env.ctl_ok(&["forward", "list"]).await?;
    assert!(table.contains("aks:rg-aks/aks-private:443"), "{table}");
    let before = env.forward("aks-private").await?;
    let kubeconfig = std::fs::read(&path)?;

    // The state file keeps it as its own entry; a new daemon listens on the
    // same port, so the kubeconfig `aks add` wrote still points at it.
    daemon.stop().await?;
    let _daemon = Daemon::start(&env).await?;
    let after = env.forward("aks-private").await?;
    for field in ["kind", "target", "local", "bastion", "id", "source"] {
        assert_eq!(after[field], before[field], "{field}: {after}");
    }
    assert_eq!(after["kind"], "aks");
    let table = env.ctl_ok(&["forward", "list"]).await?;
    assert!(table.contains("aks:rg-aks/aks-private:443"), "{table}");
    let healthz = env
        .kubectl_ok(
            &path,
            &["--context", "aks-private", "get", "--raw", "/healthz"],
        )
        .await?;
    assert_eq!(healthz.trim(), "ok");
    assert_eq!(
        std::fs::read(&path)?,
        kubeconfig,
        "the kubeconfig is untouched"
    );

    // A cluster it has no forward for is "not found" (exit 4), and nothing changes.
    let out = env
        .ctl(&["aks", "remove", "aks-entra", "--kubeconfig", &path_text])
        .await?;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert_eq!(env.forwards().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_developer_bastion_is_refused_before_anything_is_written() -> Result {
    let env = TestEnv::start_with(|cfg| {
        cfg.bastions = vec![BastionSpec::standard("hub"), BastionSpec::developer("dev")];
    })
    .await?;
    let _daemon = Daemon::start(&env).await?;
    let path = kubeconfig_path(&env);
    let path_text = path.to_string_lossy().into_owned();
    let out = env
        .ctl(&[
            "aks",
            "add",
            "aks-private",
            "--bastion",
            "dev",
            "--kubeconfig",
            &path_text,
        ])
        .await?;
    assert_eq!(out.code, Some(5), "refused by the SKU: {out:?}");
    let reason = out.one_line_error()?;
    assert!(
        reason.contains("Developer") && reason.contains("Standard or Premium"),
        "{reason}"
    );
    assert!(env.forwards().await?.is_empty());
    assert!(!path.exists(), "no kubeconfig written");
    assert_eq!(env.emulator.ledger().arm_cluster_credentials, 0);
    Ok(())
}

//! `bastionctl bastion discover`: the bastions across the credential's
//! subscriptions, with what each can serve; and IP targets on ports Azure
//! does not document for IP-based connection (a warning, then a hint in
//! `last_error`).

use bastion_tests::emulator::BastionSpec;
use bastion_tests::harness::net::{free_port, local};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

type Result = anyhow::Result<()>;

#[tokio::test]
async fn discover_lists_bastions_across_subscriptions() -> Result {
    let env = TestEnv::start_with(|c| {
        let mut basic = BastionSpec::standard("old");
        basic.sku = "Basic".into();
        basic.enable_tunneling = false;
        basic.enable_ip_connect = false;
        let mut no_ip = BastionSpec::standard("vmonly");
        no_ip.enable_ip_connect = false;
        no_ip.subscription = "11111111-0000-0000-0000-000000000002".into();
        c.bastions.push(basic);
        c.bastions.push(no_ip);
    })
    .await?;
    let _daemon = Daemon::start(&env).await?;
    let listed = env.ctl_json(&["bastion", "discover", "--json"]).await?;
    let items = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3, "{listed}");
    let by_name = |name: &str| -> Value {
        items
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let hub = by_name("bastion-hub");
    for key in [
        "name",
        "resource_id",
        "subscription",
        "resource_group",
        "sku",
        "tunneling",
        "ip_connect",
    ] {
        assert!(hub.get(key).is_some(), "{key} missing: {hub}");
    }
    assert_eq!(
        hub["resource_id"],
        env.emulator.info().bastion_resource_id.as_str()
    );
    assert_eq!(hub["resource_group"], "rg-hub");
    assert_eq!(hub["sku"], "Standard");
    assert_eq!(hub["serves"], "ip+vm");
    assert_eq!(hub["why"], Value::Null);
    let old = by_name("bastion-old");
    assert_eq!(old["serves"], "none");
    assert!(
        old["why"]
            .as_str()
            .unwrap_or_default()
            .contains("Basic SKU"),
        "{old}"
    );
    let vm_only = by_name("bastion-vmonly");
    assert_eq!(
        vm_only["subscription"],
        "11111111-0000-0000-0000-000000000002"
    );
    assert_eq!(vm_only["serves"], "vm");
    assert!(
        vm_only["why"]
            .as_str()
            .unwrap_or_default()
            .contains("IP-based connection"),
        "{vm_only}"
    );
    let text = env.ctl_ok(&["bastion", "discover"]).await?;
    assert!(text.contains("bastion-vmonly"), "{text}");
    Ok(())
}

#[tokio::test]
async fn unusual_ip_ports_warn_and_explain_failures() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = free_port()?;
    let port_text = port.to_string();
    let out = env
        .ctl(&[
            "forward",
            "add",
            "10.2.3.4:5432",
            &port_text,
            "--name",
            "db",
        ])
        .await?;
    assert!(out.success, "{out:?}");
    let warning: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warning.len(), 1, "{}", out.stderr);
    assert!(
        warning[0].contains("SSH (22) and RDP (3389) only"),
        "{}",
        out.stderr
    );
    assert!(warning[0].contains("VMNAME:5432"), "{}", out.stderr);
    let quiet = env
        .ctl(&["forward", "add", "10.1.0.4:22", &free_port()?.to_string()])
        .await?;
    assert!(quiet.success && quiet.stderr.is_empty(), "{quiet:?}");

    // 10.2.3.4 is not reachable: the connection is refused, and the port is named.
    let mut client = tokio::net::TcpStream::connect(local(port)).await?;
    let mut sink = Vec::new();
    let _ = client.read_to_end(&mut sink).await;
    let forward = env
        .wait_for_forward("db", "the failure recorded", STEP_TIMEOUT, |f| {
            f["last_error"].is_string()
        })
        .await?;
    let error = forward["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("the port is the likely cause"), "{error}");
    Ok(())
}

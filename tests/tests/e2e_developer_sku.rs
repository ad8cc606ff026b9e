//! A Developer-SKU bastion end to end through the real binaries: VMs by name
//! and by resource id through the data pod `/api/connection` names (bytes
//! verified, no session left), the pod lookup cached per target and done
//! again when the pod forgets it, an IP target refused before any request,
//! and what `doctor`, `status` and `bastion discover` say of it. A Standard
//! bastion beside it never meets the pod lookup.

use bastion_tests::emulator::{BastionSpec, DEFAULT_SUBSCRIPTION};
use bastion_tests::harness::net::{echo_roundtrip, local, payload};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv};

type Result = anyhow::Result<()>;

const VM1_ID: &str = "/subscriptions/00000000-0000-0000-0000-00000000a1b2/resourceGroups/rg-vms/providers/Microsoft.Compute/virtualMachines/vm1";

/// A Standard "hub" (the default) and a Developer "dev".
async fn start() -> anyhow::Result<TestEnv> {
    TestEnv::start_with(|cfg| {
        cfg.bastions = vec![BastionSpec::standard("hub"), BastionSpec::developer("dev")];
    })
    .await
}

#[tokio::test]
async fn a_developer_bastion_serves_vms_by_name_and_by_id() -> Result {
    assert!(VM1_ID.contains(DEFAULT_SUBSCRIPTION));
    let env = start().await?;
    let _daemon = Daemon::start(&env).await?;

    // By name, through a forward: two connections, one pod lookup.
    let port = env
        .add_forward("web01:7", &["--name", "dev-web", "--bastion", "dev"])
        .await?;
    echo_roundtrip(local(port), &payload(256 * 1024, 1)).await?;
    echo_roundtrip(local(port), &payload(64 * 1024, 2)).await?;
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.pod_lookups, 1, "{ledger:?}");
    assert_eq!(ledger.sessions_created, 2, "{ledger:?}");

    // By resource id, through `connect`: its own pod lookup.
    let id_target = format!("{VM1_ID}:7");
    let echoed = env
        .connect_stdio(&["--bastion", "dev", &id_target], b"by id\n")
        .await?;
    assert_eq!(echoed, b"by id\n");

    // A Standard bastion's connection never meets the pod lookup.
    let echoed = env.connect_stdio(&["vm1:7"], b"standard\n").await?;
    assert_eq!(echoed, b"standard\n");

    let ledger = env.wait_all_ended("every session deleted").await?;
    assert_eq!(ledger.pod_lookups, 2, "{ledger:?}");
    assert_eq!(ledger.sessions_created, 4, "{ledger:?}");
    assert_eq!(ledger.deletes, 4, "{ledger:?}");
    assert!(ledger.rejects.is_empty(), "{ledger:?}");

    // status names the SKU.
    let status = env.ctl_json(&["status", "--json"]).await?;
    let dev = status["bastions"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "dev"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dev["sku"], "Developer", "{status}");
    Ok(())
}

#[tokio::test]
async fn an_ip_target_is_refused_up_front_naming_the_sku() -> Result {
    let env = start().await?;
    let _daemon = Daemon::start(&env).await?;
    let reason = env
        .ctl(&["connect", "--bastion", "dev", "10.1.0.4:22"])
        .await?
        .one_line_error()?;
    assert!(
        reason.contains("Developer") && reason.contains("VMNAME:22"),
        "{reason}"
    );
    assert!(reason.contains("Standard"), "{reason}");
    let ledger = env.emulator.ledger();
    assert_eq!(
        (ledger.pod_lookups, ledger.sessions_created),
        (0, 0),
        "{ledger:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_pod_that_forgot_the_target_is_looked_up_again() -> Result {
    let env = start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env
        .add_forward("vm1:7", &["--name", "dev-vm1", "--bastion", "dev"])
        .await?;
    echo_roundtrip(local(port), &payload(4096, 1)).await?;
    env.emulator.recycle_data_pods();
    echo_roundtrip(local(port), &payload(4096, 2)).await?;
    let ledger = env
        .emulator
        .wait_for("sessions deleted", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    assert_eq!(ledger.pod_lookups, 2, "{ledger:?}");
    assert_eq!(ledger.rejected("pod_not_assigned"), 1, "{ledger:?}");
    assert_eq!(env.forward("dev-vm1").await?["state"], "listening");
    Ok(())
}

#[tokio::test]
async fn doctor_and_discover_explain_a_developer_bastion() -> Result {
    let env = start().await?;
    let _daemon = Daemon::start(&env).await?;
    let report = env
        .ctl_json(&["doctor", "web01:7", "--bastion", "dev", "--json"])
        .await?;
    assert_eq!(report["ok"], true, "{report}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    let pod = steps.iter().position(|s| *s == "pod");
    let session = steps.iter().position(|s| *s == "session");
    assert!(pod.is_some() && pod < session, "{steps:?}");

    let found = env.ctl_json(&["bastion", "discover", "--json"]).await?;
    let dev = found
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "bastion-dev"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dev["sku"], "Developer", "{found}");
    assert_eq!(dev["serves"], "vm", "{found}");
    let why = dev["why"].as_str().unwrap_or_default();
    assert!(why.contains("Developer"), "{why}");
    Ok(())
}

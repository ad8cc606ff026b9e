//! `bastionctl doctor` (each step, its advice, the exit status, `--json`)
//! and `status` saying who the daemon is signed in as.

use std::net::{IpAddr, Ipv4Addr};

use bastion_tests::emulator::{AZ_USER, TENANT_ID};
use bastion_tests::harness::{Daemon, TestEnv};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

type Result = anyhow::Result<()>;

/// A VNet address the test maps to a listener of its own.
const BANNER_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 8);

/// Every step of a doctor run to an IP target, in order.
const IP_TARGET_STEPS: [&str; 6] = [
    "token",
    "bastion",
    "session",
    "websocket",
    "first bytes",
    "delete",
];

fn step_names(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn doctor_runs_every_step_and_reads_the_banner() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    // A target that speaks first, as an ssh server does.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    env.emulator
        .map_target(IpAddr::V4(BANNER_HOST), 22, listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"SSH-2.0-Banner_1.0\r\n").await;
        }
    });

    let out = env.ctl(&["doctor", "10.1.0.8:22", "--json"]).await?;
    assert!(out.success, "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(step_names(&report), IP_TARGET_STEPS);
    for step in report["steps"].as_array().into_iter().flatten() {
        let keys: Vec<&str> = step
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, ["detail", "ms", "name", "ok"], "{step}");
    }
    let token = report["steps"][0]["detail"].as_str().unwrap_or_default();
    assert!(token.contains(AZ_USER), "{token}");
    assert!(token.contains(TENANT_ID), "{token}");
    assert!(!token.contains("eyJ"), "a token in the report: {token}");
    let bastion = report["steps"][1]["detail"].as_str().unwrap_or_default();
    assert!(bastion.contains("SKU Standard"), "{bastion}");
    let first = report["steps"][4]["detail"].as_str().unwrap_or_default();
    assert!(first.contains("SSH-2.0-Banner_1.0"), "{first}");
    env.emulator
        .wait_for(
            "the doctor's session deleted",
            |l| l.live_sessions == 0 && l.deletes == 1,
            bastion_tests::harness::STEP_TIMEOUT,
        )
        .await?;

    // An echo target waits for the client: still a pass, said so.
    let text = env.ctl_ok(&["doctor", "10.1.0.4:22"]).await?;
    assert!(text.contains("ok   first bytes"), "{text}");
    assert!(text.contains("nothing within"), "{text}");
    assert!(text.trim_end().ends_with("All 6 steps passed."), "{text}");
    Ok(())
}

#[tokio::test]
async fn doctor_names_the_portal_setting_and_fails() -> Result {
    let env = TestEnv::start_with(|c| c.bastions[0].enable_ip_connect = false).await?;
    let _daemon = Daemon::start(&env).await?;
    let out = env.ctl(&["doctor", "10.1.0.4:22"]).await?;
    assert!(!out.success, "{out:?}");
    assert!(out.stdout.contains("FAIL bastion"), "{}", out.stdout);
    assert!(out.stdout.contains("IP-based connection"), "{}", out.stdout);
    assert!(
        out.stderr.contains("failed at step `bastion`"),
        "{}",
        out.stderr
    );
    assert_eq!(env.emulator.ledger().sessions_created, 0);
    Ok(())
}

#[tokio::test]
async fn doctor_looks_vm_names_up() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let out = env.ctl(&["doctor", "twin:22", "--json"]).await?;
    assert!(!out.success);
    let report: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(report["ok"], false);
    assert_eq!(step_names(&report), ["token", "bastion", "vm"]);
    let vm = report["steps"][2]["detail"].as_str().unwrap_or_default();
    assert!(vm.contains("rg-app, rg-data"), "{vm}");

    let out = env
        .ctl(&["doctor", "twin:22", "--resource-group", "rg-data", "--json"])
        .await?;
    assert!(out.success, "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout)?;
    let vm = report["steps"][2]["detail"].as_str().unwrap_or_default();
    assert!(
        vm.ends_with("/resourceGroups/rg-data/providers/Microsoft.Compute/virtualMachines/twin"),
        "{vm}"
    );
    Ok(())
}

#[tokio::test]
async fn status_says_who_the_daemon_is_signed_in_as() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["signed_in"], Value::Null, "no token yet: {status}");
    // Any connection fetches the token (how it ends does not matter here).
    env.ctl(&["connect", "10.1.0.4:22"]).await?;
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["signed_in"]["tenant"], TENANT_ID, "{status}");
    assert_eq!(status["signed_in"]["account"], AZ_USER, "{status}");
    assert_eq!(status["signed_in"]["app_id"], "az-cli-user", "{status}");
    assert!(status["signed_in"]["token_expires_at_ms"].as_i64() > Some(0));
    let text = env.ctl_ok(&["status"]).await?;
    assert!(
        text.contains(&format!(
            "signed in:   account {AZ_USER} (tenant {TENANT_ID})"
        )),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn doctor_reports_a_target_that_closes_and_still_deletes() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    // 10.1.0.9 is known to the VNet but nothing listens: the tunnel closes at once.
    let out = env.ctl(&["doctor", "10.1.0.9:22", "--json"]).await?;
    assert!(!out.success, "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(step_names(&report), IP_TARGET_STEPS);
    assert_eq!(report["steps"][4]["ok"], false, "{report}");
    let first = report["steps"][4]["detail"].as_str().unwrap_or_default();
    assert!(
        first.contains("nothing accepts connections on port 22"),
        "{first}"
    );
    assert_eq!(report["steps"][5]["ok"], true, "{report}");
    assert_eq!(env.emulator.ledger().live_sessions, 0);
    Ok(())
}

//! VM-name targets end to end: `forward add web01:7 PORT` and
//! `connect twin:7 --resource-group rg-data` looked up through the
//! emulator's ARM (two resource groups, one name in both), refusals that say
//! where the daemon looked, and the cache that keeps ARM off the hot path.

use std::net::IpAddr;

use bastion_tests::emulator::{DEFAULT_SUBSCRIPTION, ECHO_IP, source_byte};
use bastion_tests::harness::net::{echo_roundtrip, free_port, local, payload};
use bastion_tests::harness::sshd::{SSHD, Sshd};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, within};

type Result = anyhow::Result<()>;

#[tokio::test]
async fn forward_by_vm_name_reaches_the_vm_case_insensitively() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = free_port()?;
    let port_text = port.to_string();
    let out = env
        .ctl_ok(&["forward", "add", "WEB01:7", &port_text, "--name", "web"])
        .await?;
    let id = format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/Web01:7"
    );
    assert!(out.contains(&id), "{out}");
    echo_roundtrip(local(port), &payload(64 * 1024, 3)).await?;
    let forward = env.forward("web").await?;
    assert_eq!(forward["target"], id.as_str());
    Ok(())
}

#[tokio::test]
async fn a_name_in_two_groups_is_refused_until_a_group_is_named() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let out = env.ctl(&["connect", "twin:7"]).await?;
    let reason = out.one_line_error()?;
    assert!(reason.contains("rg-app, rg-data"), "{reason}");
    assert!(reason.contains("--resource-group"), "{reason}");
    let port = free_port()?.to_string();
    let out = env.ctl(&["forward", "add", "twin:7", &port]).await?;
    assert!(out.one_line_error()?.contains("rg-app, rg-data"), "{out:?}");

    // rg-app's twin is the echo service, rg-data's the source.
    let echoed = env
        .connect_stdio(&["twin:7", "--resource-group", "rg-app"], b"hello\n")
        .await?;
    assert_eq!(echoed, b"hello\n");
    let sourced = env
        .connect_stdio(&["twin:9", "--resource-group", "RG-DATA"], b"5\n")
        .await?;
    let expected: Vec<u8> = (0..5).map(source_byte).collect();
    assert_eq!(sourced, expected);
    Ok(())
}

#[tokio::test]
async fn an_unknown_name_says_where_it_was_looked_for() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let reason = env.ctl(&["connect", "nope:22"]).await?.one_line_error()?;
    assert!(reason.contains("no VM named \"nope\""), "{reason}");
    assert!(
        reason.contains(&format!("subscription {DEFAULT_SUBSCRIPTION}")),
        "{reason}"
    );
    let reason = env
        .ctl(&["connect", "web01:22", "--resource-group", "rg-data"])
        .await?
        .one_line_error()?;
    assert!(reason.contains("resource group rg-data"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn connect_by_name_is_served_from_the_cache() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    assert_eq!(env.connect_stdio(&["web01:7"], b"one\n").await?, b"one\n");
    let after_first = env.emulator.ledger();
    assert_eq!(after_first.arm_vm_lists, 1);
    assert_eq!(env.connect_stdio(&["Web01:7"], b"two\n").await?, b"two\n");
    let after_second = env.emulator.ledger();
    assert_eq!(after_second.arm_vm_lists, 1, "a second VM listing");
    assert_eq!(after_second.arm_calls, after_first.arm_calls, "an ARM call");
    Ok(())
}

#[tokio::test]
async fn an_arm_401_gets_one_fresh_token_for_the_vm_lookup() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    assert_eq!(env.connect_stdio(&["web01:7"], b"one\n").await?, b"one\n");
    let before = env.emulator.ledger();
    // Another scope (a resource group) is not cached: ARM is asked, refuses
    // the token once (revoked, or from a clock that jumped), and answers the
    // fresh one.
    env.emulator.faults().fail_arm_auth(1);
    let echoed = env
        .connect_stdio(&["vm1:7", "--resource-group", "rg-vms"], b"two\n")
        .await?;
    assert_eq!(echoed, b"two\n");
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.rejected("injected_arm_401"), 1, "{ledger:?}");
    assert_eq!(ledger.arm_vm_lists, before.arm_vm_lists + 1, "{ledger:?}");
    assert_eq!(
        ledger.az_calls,
        before.az_calls + 1,
        "one fresh token: {ledger:?}"
    );
    Ok(())
}

/// `ssh web01` with the block `ssh-config` writes for VM names: ssh's
/// `%h:%p` is `web01:22`, looked up in the resource group the block names.
#[tokio::test]
async fn ssh_reaches_a_vm_by_name_through_the_ssh_config_block() -> Result {
    let env = TestEnv::start().await?;
    let Some(sshd) = Sshd::start(&env.root().join("sshd")).await? else {
        eprintln!("SKIPPED: {SSHD} is not installed (apt-get install openssh-server)");
        return Ok(());
    };
    // Web01 (rg-app) is 10.1.0.4; its port 22 goes to our sshd.
    env.emulator.map_target(IpAddr::V4(ECHO_IP), 22, sshd.addr);
    let _daemon = Daemon::start(&env).await?;
    let block = env
        .ctl_ok(&[
            "ssh-config",
            "--host",
            "web01",
            "--resource-group",
            "rg-app",
        ])
        .await?;
    assert!(block.contains("Host web01\n"), "{block}");
    let proxy = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("ProxyCommand "))
        .ok_or_else(|| anyhow::anyhow!("no ProxyCommand in {block}"))?;
    let option = format!("ProxyCommand={proxy}");
    let mut ssh = sshd.ssh(&env, &["-o", &option, "web01", "echo hello"]);
    let output = within("ssh to finish", STEP_TIMEOUT, async {
        Ok(ssh.output().await?)
    })
    .await?;
    anyhow::ensure!(
        output.status.success(),
        "ssh failed ({}): {}\n--- sshd ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        sshd.logs()
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    Ok(())
}

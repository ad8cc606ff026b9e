//! Bastions in another tenant than the signed-in default, through the real
//! binaries: the Azure CLI asked for the bastion's subscription (so az finds
//! the tenant), a `tenant_id` set under `[bastions.NAME]`, one token fetch
//! per tenant however many connections, `status` showing each tenant, and the
//! refusal for a token of the wrong tenant saying which tenant to sign in to.

use bastion_tests::emulator::{BastionSpec, SECOND_TENANT_ID, TENANT_ID};
use bastion_tests::harness::{Daemon, TestEnv};

type Result = anyhow::Result<()>;

/// The default "hub" and "far", a bastion in the second tenant's subscription.
async fn start() -> anyhow::Result<TestEnv> {
    TestEnv::start_with(|cfg| {
        cfg.bastions = vec![
            BastionSpec::standard("hub"),
            BastionSpec::standard("far").in_second_tenant(),
        ];
    })
    .await
}

/// Adds `line` to the `[bastions.far]` table of the env's settings file.
fn set_far(env: &TestEnv, line: &str) -> anyhow::Result<()> {
    let path = env.config_file();
    let text = std::fs::read_to_string(&path)?;
    let Some((head, tail)) = text.split_once("[bastions.far]\n") else {
        anyhow::bail!("no [bastions.far] in {text}");
    };
    std::fs::write(&path, format!("{head}[bastions.far]\n{line}\n{tail}"))?;
    Ok(())
}

/// Echoes through both bastions, `rounds` times each.
async fn use_both(env: &TestEnv, rounds: usize) -> Result {
    for round in 0..rounds {
        let text = format!("round {round}\n");
        let far = env
            .connect_stdio(&["--bastion", "far", "vmb1:7"], text.as_bytes())
            .await?;
        assert_eq!(far, text.as_bytes());
        let hub = env.connect_stdio(&["vm1:7"], text.as_bytes()).await?;
        assert_eq!(hub, text.as_bytes());
    }
    Ok(())
}

#[tokio::test]
async fn the_cli_is_asked_for_each_bastions_subscription_once() -> Result {
    let env = start().await?;
    let _daemon = Daemon::start(&env).await?;
    use_both(&env, 3).await?;
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.tokens_by_tenant[TENANT_ID], 1, "{ledger:?}");
    assert_eq!(ledger.tokens_by_tenant[SECOND_TENANT_ID], 1, "{ledger:?}");
    assert_eq!(ledger.az_asked_by["subscription"], 2, "{ledger:?}");
    assert_eq!(ledger.rejected("arm_wrong_tenant"), 0, "{ledger:?}");

    // status shows each tenant's identity and expiry.
    let status = env.ctl_json(&["status", "--json"]).await?;
    let tenants = status["tenants"].as_array().cloned().unwrap_or_default();
    for tenant in [TENANT_ID, SECOND_TENANT_ID] {
        let entry = tenants
            .iter()
            .find(|t| t["tenant"] == tenant)
            .ok_or_else(|| anyhow::anyhow!("no {tenant} in {status}"))?;
        assert!(entry["token_expires_at_ms"].as_i64() > Some(0), "{status}");
        assert!(entry["account"].is_string(), "{status}");
    }
    let text = env.ctl_ok(&["status"]).await?;
    assert!(text.contains(SECOND_TENANT_ID), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_configured_tenant_is_asked_for_by_name() -> Result {
    let env = start().await?;
    set_far(&env, &format!("tenant_id = \"{SECOND_TENANT_ID}\""))?;
    let _daemon = Daemon::start(&env).await?;
    use_both(&env, 2).await?;
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.az_asked_by["tenant"], 1, "{ledger:?}");
    assert_eq!(ledger.tokens_by_tenant[SECOND_TENANT_ID], 1, "{ledger:?}");
    Ok(())
}

/// A service principal signs in to the tenant a bastion names, through
/// Entra's endpoint of that tenant; its home tenant serves the other bastion.
#[tokio::test]
async fn a_client_secret_signs_in_to_the_configured_tenant() -> Result {
    let env = start().await?;
    set_far(&env, &format!("tenant_id = \"{SECOND_TENANT_ID}\""))?;
    let config = std::fs::read_to_string(env.config_file())?;
    let switched = config.replace(
        "credential = \"azure-cli\"",
        "credential = \"client-secret\"",
    );
    std::fs::write(env.config_file(), switched)?;
    let info = env.emulator.info().clone();
    let _daemon = Daemon::start_with(
        &env,
        &[],
        &[
            ("AZURE_TENANT_ID", info.tenant_id.as_str()),
            ("AZURE_CLIENT_ID", info.client_id.as_str()),
            ("AZURE_CLIENT_SECRET", info.client_secret.as_str()),
        ],
    )
    .await?;
    use_both(&env, 2).await?;
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.az_calls, 0, "{ledger:?}");
    assert_eq!(ledger.tokens_by_tenant[SECOND_TENANT_ID], 1, "{ledger:?}");
    assert_eq!(ledger.tokens_by_tenant[TENANT_ID], 1, "{ledger:?}");
    Ok(())
}

#[tokio::test]
async fn a_token_of_the_wrong_tenant_is_refused_saying_how_to_sign_in() -> Result {
    let env = start().await?;
    set_far(&env, &format!("tenant_id = \"{TENANT_ID}\""))?;
    let _daemon = Daemon::start(&env).await?;
    let reason = env
        .ctl(&["connect", "--bastion", "far", "vmb1:7"])
        .await?
        .one_line_error()?;
    assert!(reason.contains(SECOND_TENANT_ID), "{reason}");
    assert!(
        reason.contains(&format!("az login --tenant {SECOND_TENANT_ID}")),
        "{reason}"
    );
    assert!(reason.contains("tenant_id"), "{reason}");
    // Once for the connection, and once if the daemon's start-up lookup ran
    // first: the refusal is not retried with another token of the same tenant.
    let refused = env.emulator.ledger().rejected("arm_wrong_tenant");
    assert!((1..=2).contains(&refused), "{refused}");
    Ok(())
}

#[tokio::test]
async fn a_scale_set_instance_is_a_target() -> Result {
    let env = start().await?;
    let _daemon = Daemon::start(&env).await?;
    let id = "/subscriptions/00000000-0000-0000-0000-00000000a1b2/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachineScaleSets/web-ss/virtualMachines/0:7";
    let echoed = env.connect_stdio(&[id], b"instance\n").await?;
    assert_eq!(echoed, b"instance\n");
    // By its instance name, as ARM lists it under the scale set (web-ss_1 is the sink).
    let counted = env.connect_stdio(&["web-ss_1:9"], b"3\nabc").await?;
    assert!(
        String::from_utf8_lossy(&counted).starts_with("3 "),
        "{counted:?}"
    );
    let reason = env
        .ctl(&["connect", "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web-ss:7"])
        .await?
        .one_line_error()?;
    assert!(
        reason.contains("virtualMachineScaleSets/<name>/virtualMachines/<instance>"),
        "{reason}"
    );
    Ok(())
}

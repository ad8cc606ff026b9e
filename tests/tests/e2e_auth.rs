//! Signing in without the Azure CLI: the client-secret credential against the
//! emulator's Entra endpoint (the service-principal path CI jobs use), and what
//! a wrong secret looks like to the user.

use bastion_tests::harness::net::{echo_roundtrip, local, payload};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

type Result = anyhow::Result<()>;

const ECHO: &str = "10.1.0.4:7";

/// Switches the env's settings file to the client-secret credential.
fn use_client_secret(env: &TestEnv) -> Result {
    let config = std::fs::read_to_string(env.config_file())?;
    let switched = config.replace(
        "credential = \"azure-cli\"",
        "credential = \"client-secret\"",
    );
    anyhow::ensure!(switched != config, "no azure-cli credential in {config}");
    std::fs::write(env.config_file(), switched)?;
    Ok(())
}

/// Starts a daemon with the service principal's AZURE_* variables.
async fn start_with_secret(env: &TestEnv, secret: &str) -> anyhow::Result<Daemon> {
    let info = env.emulator.info();
    Daemon::start_with(
        env,
        &[],
        &[
            ("AZURE_TENANT_ID", info.tenant_id.as_str()),
            ("AZURE_CLIENT_ID", info.client_id.as_str()),
            ("AZURE_CLIENT_SECRET", secret),
        ],
    )
    .await
}

#[tokio::test]
async fn client_secret_credential_signs_in_through_entra() -> Result {
    let env = TestEnv::start().await?;
    use_client_secret(&env)?;
    let secret = env.emulator.info().client_secret.clone();
    let _daemon = start_with_secret(&env, &secret).await?;

    let port = env.add_forward(ECHO, &["--name", "sp"]).await?;
    for seed in 0..3 {
        echo_roundtrip(local(port), &payload(64 * 1024, seed)).await?;
    }
    let ledger = env.emulator.ledger();
    assert!(ledger.entra_tokens >= 1, "{ledger:?}");
    assert_eq!(ledger.az_calls, 0, "the Azure CLI was used: {ledger:?}");
    // One token serves every connection.
    assert!(ledger.entra_tokens <= 2, "{ledger:?}");

    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["credential"], "client-secret", "{status}");
    let logs = env.all_logs();
    assert!(!logs.contains(&secret), "the client secret is in the logs");
    Ok(())
}

#[tokio::test]
async fn wrong_client_secret_is_explained_and_the_forward_stays() -> Result {
    let env = TestEnv::start().await?;
    use_client_secret(&env)?;
    let wrong = "not-the-secret-0123456789";
    let _daemon = start_with_secret(&env, wrong).await?;

    let port = env.add_forward(ECHO, &["--name", "sp"]).await?;
    // The connection is refused promptly: closed without a byte.
    let mut stream = TcpStream::connect(local(port)).await?;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await?;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let forward = env
        .wait_for_forward(
            "sp",
            "the sign-in failure in last_error",
            STEP_TIMEOUT,
            |f| f["last_error"].is_string(),
        )
        .await?;
    let error = forward["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("AADSTS7000215"), "{forward}");
    assert_eq!(forward["state"], "listening", "{forward}");
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert!(
        status["auth_error"]
            .as_str()
            .is_some_and(|e| e.contains("AADSTS7000215")),
        "{status}"
    );
    assert_eq!(env.emulator.ledger().sessions_created, 0);
    assert!(!env.all_logs().contains(wrong), "the secret is in the logs");
    Ok(())
}

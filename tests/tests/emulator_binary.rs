//! The `bastion-emulator` binary (flags, emulator.json, SIGTERM) and the fake `az`
//! it provides, run the way azure_identity runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bastion_tests::emulator::{
    BastionSpec, DEFAULT_SUBSCRIPTION, EmulatorInfo, SECOND_SUBSCRIPTION, SECOND_TENANT_ID,
    TENANT_ID,
};
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_bastion-emulator");
/// How often to look for emulator.json: a file appearing has no event to wait on.
const POLL: Duration = Duration::from_millis(20);

/// Runs az exactly as azure_identity does: `/bin/sh -c "cd /bin && az …"` via PATH.
fn run_az(bin_dir: &Path, args: &str) -> Output {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("cd /bin && az {args}"))
        .env("PATH", path)
        .output()
        .unwrap()
}

async fn run_az_async(bin_dir: PathBuf, args: &'static str) -> Output {
    tokio::task::spawn_blocking(move || run_az(&bin_dir, args))
        .await
        .unwrap()
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + T;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(POLL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_az_output_failures_and_counting() {
    let env = Env::start_with(|c| c.emulator_exe = Some(EXE.into()), |_| {}).await;
    let info = env.emu.info().clone();
    let az = info.az_path.clone().unwrap();
    let bin = az.parent().unwrap().to_path_buf();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&az).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755);

    let out = run_az_async(
        bin.clone(),
        "account get-access-token -o json --scope https://management.azure.com/.default",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "accessToken",
            "expiresOn",
            "expires_on",
            "subscription",
            "tenant",
            "tokenType"
        ]
    );
    assert_eq!(v["tokenType"], "Bearer");
    assert_eq!(v["tenant"], info.tenant_id.as_str());
    let expires_on = v["expires_on"].as_u64().unwrap();
    assert!(expires_on > bastion_tests_now() + 3500);
    let expires = v["expiresOn"].as_str().unwrap();
    assert_eq!(
        expires.len(),
        "2026-11-24 21:12:05.000000".len(),
        "{expires}"
    );
    // The token it printed is one ARM accepts.
    let token = v["accessToken"].as_str().unwrap();
    env.client.session(token, "10.1.0.4", 22).await.unwrap();

    let out = run_az_async(bin.clone(), "account get-access-token --output json --resource https://management.core.windows.net/ --subscription \"00000000-0000-0000-0000-00000000a1b2\"").await;
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["subscription"],
        "00000000-0000-0000-0000-00000000a1b2"
    );
    // As the real az: a subscription the account does not have is an error.
    let out = run_az_async(
        bin.clone(),
        "account get-access-token -o json --subscription sub-x",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Subscription 'sub-x' not found"));

    env.emu.faults().fail_az(1);
    let out = run_az_async(
        bin.clone(),
        "account get-access-token -o json --scope https://management.azure.com/.default",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Please run 'az login'"));

    let out = run_az_async(bin.clone(), "account get-access-token -o json --scope https://management.azure.com/.default --tenant other").await;
    assert_eq!(out.status.code(), Some(1));
    let out = run_az_async(bin.clone(), "account get-access-token --bogus").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("ERROR: unrecognized arguments"));

    let l = env.emu.ledger();
    // The usage error never reached the emulator.
    assert_eq!(l.az_calls, 5);
    assert_eq!(
        (
            l.rejected("injected_az_failure"),
            l.rejected("az_unknown_tenant"),
            l.rejected("az_unknown_subscription"),
        ),
        (1, 1, 1)
    );
}

/// `--subscription` and `--tenant` pick the tenant whose token az prints,
/// as `az account get-access-token` does for a subscription in another directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_az_tokens_follow_the_subscription_or_tenant_asked_for() {
    let env = Env::start_with(
        |c| {
            c.emulator_exe = Some(EXE.into());
            c.bastions = vec![
                BastionSpec::standard("hub"),
                BastionSpec::standard("far").in_second_tenant(),
            ];
        },
        |_| {},
    )
    .await;
    let bin = env
        .emu
        .info()
        .az_path
        .clone()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let tenant_of = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["tenant"].as_str().unwrap().to_owned(),
            v["subscription"].as_str().unwrap().to_owned(),
        )
    };
    let default = tenant_of(run_az_async(bin.clone(), "account get-access-token -o json").await);
    assert_eq!(
        default,
        (TENANT_ID.to_owned(), DEFAULT_SUBSCRIPTION.to_owned())
    );
    let by_sub = tenant_of(
        run_az_async(
            bin.clone(),
            "account get-access-token -o json --subscription 00000000-0000-0000-0000-00000000b0b2",
        )
        .await,
    );
    assert_eq!(
        by_sub,
        (SECOND_TENANT_ID.to_owned(), SECOND_SUBSCRIPTION.to_owned())
    );
    let by_tenant = tenant_of(
        run_az_async(
            bin.clone(),
            "account get-access-token -o json --tenant c0ffee00-0000-0000-0000-0000000000b2",
        )
        .await,
    );
    assert_eq!(by_tenant.0, SECOND_TENANT_ID);
    let both = run_az_async(
        bin.clone(),
        "account get-access-token -o json --tenant x --subscription y",
    )
    .await;
    assert_eq!(both.status.code(), Some(1));
    let l = env.emu.ledger();
    assert_eq!(l.tokens_by_tenant[TENANT_ID], 1);
    assert_eq!(l.tokens_by_tenant[SECOND_TENANT_ID], 2);
    assert_eq!(l.rejected("az_tenant_and_subscription"), 1);
}

fn bastion_tests_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Starts the binary on `dir` with `args` and waits for its emulator.json.
async fn start_binary(dir: &Path, args: &[&str], stderr: Stdio) -> (Child, EmulatorInfo) {
    let child = Command::new(EXE)
        .args(["--state-dir", dir.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let json = dir.join("emulator.json");
    tokio::task::spawn_blocking({
        let json = json.clone();
        move || wait_for_file(&json)
    })
    .await
    .unwrap();
    (child, EmulatorInfo::load(&json).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_with_flags_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let faults = [
        "--fail-token-posts",
        "1",
        "--fail-status",
        "503",
        "--fail-body",
        "html",
    ];
    let (mut child, info) = start_binary(dir.path(), &faults, Stdio::piped()).await;
    let client = bastion_tests::emulator::client::BastionClient::new(&info).unwrap();

    // The fake az the binary wrote works, and its token opens a tunnel.
    let out = run_az_async(
        dir.path().join("bin"),
        "account get-access-token -o json --scope https://management.core.windows.net//.default",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = serde_json::from_slice::<Value>(&out.stdout).unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = client.post_form(&[("aztoken", &token)]).await.unwrap();
    assert_eq!(first.status(), 503);
    assert!(
        first.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let (session, ws) = client.tunnel(&token, "10.1.0.4", 22).await.unwrap();
    echo_through(ws, &payload(10_000, 4)).await;
    assert_eq!(client.delete(&session).await.unwrap(), 204);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status, err);
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(POLL);
        }
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{status:?}");
    assert!(
        status.1.contains("PATH="),
        "summary on stderr: {}",
        status.1
    );
    assert!(!status.1.contains(&token), "tokens never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_latency_ms_serves_a_round_trip_away() {
    /// The round trip asked for: far above a debug build's own work.
    const RTT_MS: u64 = 200;
    let rtt = Duration::from_millis(RTT_MS);
    let dir = tempfile::tempdir().unwrap();
    let latency = ["--latency-ms", &RTT_MS.to_string()];
    let (mut child, info) = start_binary(dir.path(), &latency, Stdio::null()).await;
    let client = bastion_tests::emulator::client::BastionClient::new(&info).unwrap();
    let start = Instant::now();
    let resp = client
        .http()
        .get(client.url("/_emulator/ledger"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let took = start.elapsed();
    // TCP and TLS handshakes, then the request: three round trips at least.
    assert!(took >= rtt * 3, "a fresh HTTPS request took {took:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

//! `bastionctl`'s exit statuses, as scripts see them: 0 success, 1 the
//! request failed, 2 usage error, 3 the daemon is not running, 4 not found,
//! 5 refused by Azure or the Bastion. Each is produced for real: the real
//! binaries, the emulator's SKU and portal settings and its HTTP 403.

use bastion_tests::emulator::{BastionSpec, FaultBody};
use bastion_tests::harness::net::free_port;
use bastion_tests::harness::{Daemon, TestEnv};

type Result = anyhow::Result<()>;

const SUCCESS: i32 = 0;
const FAILED: i32 = 1;
const USAGE: i32 = 2;
const NOT_RUNNING: i32 = 3;
const NOT_FOUND: i32 = 4;
const REFUSED: i32 = 5;

/// The emulator's echo service.
const ECHO: &str = "10.1.0.4:7";
/// Token POSTs the emulator refuses: more than the daemon's setup attempts.
const REFUSED_POSTS: u32 = 20;

/// Runs `bastionctl ARGS`, asserts its exit status and, for a failure, the
/// documented one-line reason; returns that reason (empty on success).
async fn expect(env: &TestEnv, args: &[&str], code: i32) -> anyhow::Result<String> {
    let out = env.ctl(args).await?;
    anyhow::ensure!(
        out.code == Some(code),
        "bastionctl {}: exit {:?}, expected {code}: {out:?}",
        args.join(" "),
        out.code
    );
    if code == SUCCESS {
        return Ok(String::new());
    }
    out.one_line_error()
}

#[tokio::test]
async fn help_documents_every_status_and_usage_errors_are_2() -> Result {
    let env = TestEnv::start().await?;
    let help = env.ctl_ok(&["--help"]).await?;
    for line in [
        "Exit status:",
        "0  success",
        "1  the request failed",
        "2  usage error",
        "3  the daemon is not running",
        "4  not found",
        "5  refused by Azure or the Bastion",
    ] {
        assert!(help.contains(line), "`{line}` missing from --help:\n{help}");
    }
    let reason = expect(&env, &["forward", "add", ECHO, "0"], USAGE).await?;
    assert!(reason.contains("1 to 65535"), "{reason}");
    expect(&env, &["forward", "frobnicate"], USAGE).await?;
    Ok(())
}

#[tokio::test]
async fn no_daemon_is_3() -> Result {
    let env = TestEnv::start().await?;
    for args in [
        &["status"][..],
        &["forward", "list"],
        &["forward", "remove", "dev-ssh"],
        &["reload"],
        &["connect", ECHO],
        &["doctor", ECHO],
    ] {
        let reason = expect(&env, args, NOT_RUNNING).await?;
        assert!(reason.contains("bastiond is not running"), "{reason}");
    }
    // What works without a daemon still succeeds.
    expect(&env, &["bastion", "list"], SUCCESS).await?;
    Ok(())
}

#[tokio::test]
async fn unknown_forward_bastion_and_vm_are_4() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let reason = expect(&env, &["forward", "remove", "nosuch"], NOT_FOUND).await?;
    assert!(reason.contains("nosuch"), "{reason}");
    let port = free_port()?.to_string();
    let reason = expect(
        &env,
        &["forward", "add", ECHO, &port, "--bastion", "nosuch"],
        NOT_FOUND,
    )
    .await?;
    assert!(reason.contains("no bastion named"), "{reason}");
    let reason = expect(&env, &["forward", "add", "nosuchvm:22", &port], NOT_FOUND).await?;
    assert!(reason.contains("nosuchvm"), "{reason}");
    expect(&env, &["connect", "nosuchvm:22"], NOT_FOUND).await?;
    let reason = expect(&env, &["bastion", "remove", "nosuch"], NOT_FOUND).await?;
    assert!(reason.contains("no bastion named"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn refusals_by_azure_or_the_bastion_are_5() -> Result {
    let env = TestEnv::start_with(|cfg| {
        cfg.bastions = vec![
            BastionSpec::standard("hub"),
            BastionSpec::standard("noip").with(|b| b.enable_ip_connect = false),
            BastionSpec::standard("basic").with(|b| b.sku = "Basic".into()),
        ];
    })
    .await?;
    let _daemon = Daemon::start(&env).await?;
    // A portal setting and the SKU, as ARM describes the bastion.
    let reason = expect(&env, &["connect", "--bastion", "noip", ECHO], REFUSED).await?;
    assert!(reason.contains("IP-based connection"), "{reason}");
    let reason = expect(&env, &["connect", "--bastion", "basic", ECHO], REFUSED).await?;
    assert!(reason.contains("Standard or Premium"), "{reason}");
    // The Bastion itself says no (as it does for a missing role).
    env.emulator.faults().fail_token_posts(
        REFUSED_POSTS,
        403,
        FaultBody::Json("The user does not have access to the target.".into()),
    );
    let reason = expect(&env, &["connect", ECHO], REFUSED).await?;
    assert!(reason.contains("403"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn other_failures_are_1_and_doctor_is_0_only_when_every_step_passed() -> Result {
    let env = TestEnv::start_with(|cfg| {
        let mut noip = BastionSpec::standard("noip");
        noip.enable_ip_connect = false;
        cfg.bastions = vec![BastionSpec::standard("hub"), noip];
    })
    .await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "taken"]).await?;
    let reason = expect(
        &env,
        &["forward", "add", ECHO, &port.to_string(), "--name", "other"],
        FAILED,
    )
    .await?;
    assert!(reason.contains("already used"), "{reason}");
    // A failed check is a failed request, whatever step failed.
    let reason = expect(&env, &["doctor", "--bastion", "noip", ECHO], FAILED).await?;
    assert!(reason.contains("failed at step"), "{reason}");
    expect(&env, &["forward", "remove", "taken"], SUCCESS).await?;
    Ok(())
}

//! `bastionctl bastion add|list|remove`: the settings file edited in place
//! (comments kept, created when missing), the daemon reloaded, a daemon with
//! no bastion that says how to add one, and the refusals.

use bastion_tests::harness::net::{echo_roundtrip, free_port, local, payload};
use bastion_tests::harness::{Daemon, TestEnv};

type Result = anyhow::Result<()>;

/// The emulator's settings without their `default_bastion` and `[bastions.*]`,
/// with a comment of the user's that edits must keep.
fn without_bastions(text: &str) -> String {
    let mut out = String::from("# my own notes: keep me\n");
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("[bastions.") {
            skipping = true;
            continue;
        }
        if line.starts_with('[') {
            skipping = false;
        }
        if !skipping && !line.starts_with("default_bastion") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn bastions_are_added_used_and_removed_in_place() -> Result {
    let env = TestEnv::start().await?;
    let original = std::fs::read_to_string(env.config_file())?;
    std::fs::write(env.config_file(), without_bastions(&original))?;
    let _daemon = Daemon::start(&env).await?;
    let port = free_port()?.to_string();

    let reason = env
        .ctl(&["forward", "add", "10.1.0.4:7", &port])
        .await?
        .one_line_error()?;
    assert!(reason.contains("bastionctl bastion add"), "{reason}");
    let list = env.ctl_ok(&["bastion", "list"]).await?;
    assert!(list.contains("No bastions"), "{list}");

    let id = env.emulator.info().bastion_resource_id.clone();
    let out = env.ctl_ok(&["bastion", "add", "hub", &id]).await?;
    assert!(out.contains("Added bastion hub"), "{out}");
    let text = std::fs::read_to_string(env.config_file())?;
    assert!(text.starts_with("# my own notes: keep me\n"), "{text}");
    assert!(
        text.contains(&format!("[bastions.hub]\nresource_id = \"{id}\"")),
        "{text}"
    );
    assert!(text.contains("[tls]"), "{text}");

    let reason = env
        .ctl(&["bastion", "add", "hub", &id])
        .await?
        .one_line_error()?;
    assert!(reason.contains("already"), "{reason}");
    let listed = env.ctl_json(&["bastion", "list", "--json"]).await?;
    assert_eq!(listed[0]["name"], "hub");
    assert_eq!(listed[0]["resource_id"], id.as_str());

    // The reloaded daemon uses it at once.
    env.ctl_ok(&["forward", "add", "10.1.0.4:7", &port, "--name", "echo"])
        .await?;
    echo_roundtrip(local(port.parse()?), &payload(4096, 1)).await?;

    let reason = env
        .ctl(&["bastion", "remove", "hub"])
        .await?
        .one_line_error()?;
    assert!(reason.contains("forward echo"), "{reason}");
    env.ctl_ok(&["forward", "remove", "echo"]).await?;
    let out = env.ctl_ok(&["bastion", "remove", "hub"]).await?;
    assert!(out.contains("Removed bastion hub"), "{out}");
    let text = std::fs::read_to_string(env.config_file())?;
    assert!(!text.contains("[bastions.hub]"), "{text}");
    assert!(text.contains("# my own notes: keep me"), "{text}");
    let reason = env
        .ctl(&["forward", "add", "10.1.0.4:7", &port])
        .await?
        .one_line_error()?;
    assert!(reason.contains("no bastions are configured"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn add_without_a_daemon_creates_the_file() -> Result {
    let env = TestEnv::start().await?;
    std::fs::remove_file(env.config_file())?;
    let id = env.emulator.info().bastion_resource_id.clone();
    let out = env.ctl_ok(&["bastion", "add", "hub", &id]).await?;
    assert!(out.contains("not running"), "{out}");
    let text = std::fs::read_to_string(env.config_file())?;
    assert_eq!(text, format!("[bastions.hub]\nresource_id = \"{id}\"\n"));
    let reason = env
        .ctl(&["bastion", "add", "spoke", "/subscriptions/x"])
        .await?
        .one_line_error()?;
    assert!(
        reason.contains("not a bastion host resource id"),
        "{reason}"
    );
    Ok(())
}

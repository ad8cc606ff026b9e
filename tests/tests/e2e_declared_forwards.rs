//! Forwards declared in config.toml (`[forwards.NAME]`): started with the
//! daemon, listed with `source: "config"`, reconciled on `reload` without
//! touching the other forwards or their live connections, refused by
//! `forward remove`, a SOCKS5 listener declared as one, and a bad entry
//! stopping the reload with nothing changed.

use bastion_tests::harness::net::{echo_over, echo_roundtrip, free_port, local, payload};
use bastion_tests::harness::socks::{self, CONNECT, Dest};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, within};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

type Result = anyhow::Result<()>;

/// The emulator's echo service.
const ECHO: &str = "10.1.0.4:7";
/// The port of [`ECHO`], which every VM at its address answers on.
const ECHO_PORT: u16 = 7;
/// Bytes sent each way through a connection held across a reload.
const PROBE: usize = 1024;

/// `[forwards.NAME]` with `target` and `port`, plus `extra` lines.
fn entry(name: &str, target: &str, port: u16, extra: &str) -> String {
    format!("\n[forwards.{name}]\ntarget = \"{target}\"\nport = {port}\n{extra}")
}

/// Writes the emulator's settings plus `entries` as the daemon's config.toml.
fn declare(env: &TestEnv, base: &str, entries: &[String]) -> Result {
    std::fs::write(env.config_file(), format!("{base}{}", entries.concat()))?;
    Ok(())
}

/// One echo round trip on a connection that stays open.
async fn echo_on(stream: &mut TcpStream, seed: u64) -> Result {
    let data = payload(PROBE, seed);
    within("an echo on a held connection", STEP_TIMEOUT, async {
        stream.write_all(&data).await?;
        let mut back = vec![0; data.len()];
        stream.read_exact(&mut back).await?;
        anyhow::ensure!(back == data, "the echo differs");
        Ok(())
    })
    .await
}

fn by_name<'a>(forwards: &'a [Value], name: &str) -> Option<&'a Value> {
    forwards.iter().find(|f| f["name"] == name)
}

#[tokio::test]
async fn declared_forwards_start_with_the_daemon_and_say_where_they_come_from() -> Result {
    let env = TestEnv::start().await?;
    let base = std::fs::read_to_string(env.config_file())?;
    let (port, by_vm_name) = (free_port()?, free_port()?);
    declare(
        &env,
        &base,
        &[
            entry("dev-ssh", ECHO, port, ""),
            // A VM name, looked up when a connection comes.
            entry(
                "web",
                "web01:7",
                by_vm_name,
                "resource_group = \"rg-app\"\n",
            ),
        ],
    )?;
    let mut daemon = Daemon::start(&env).await?;
    echo_roundtrip(local(port), &payload(4096, 1)).await?;
    echo_roundtrip(local(by_vm_name), &payload(4096, 4)).await?;
    env.add_forward(ECHO, &["--name", "typed"]).await?;

    let forwards = env.forwards().await?;
    let declared = by_name(&forwards, "dev-ssh").ok_or_else(|| anyhow::anyhow!("{forwards:?}"))?;
    assert_eq!(declared["source"], "config", "{declared}");
    assert_eq!(declared["local"], format!("127.0.0.1:{port}"));
    assert_eq!(declared["bastion"], "hub");
    let typed = by_name(&forwards, "typed").ok_or_else(|| anyhow::anyhow!("{forwards:?}"))?;
    assert_eq!(typed["source"], "cli", "{typed}");
    let table = env.ctl_ok(&["forward", "list"]).await?;
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("SOURCE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("dev-ssh") && l.contains("config")),
        "{table}"
    );

    // `forward remove` refuses, naming the file and the entry.
    let out = env.ctl(&["forward", "remove", "dev-ssh"]).await?;
    let reason = out.one_line_error()?;
    assert!(
        reason.contains(&env.config_file().display().to_string())
            && reason.contains("[forwards.dev-ssh]"),
        "{reason}"
    );
    echo_roundtrip(local(port), &payload(4096, 2)).await?;

    // The state file keeps only what was typed; the file brings the rest back.
    let state = std::fs::read_to_string(env.state_file())?;
    assert!(
        state.contains("typed") && !state.contains("dev-ssh"),
        "{state}"
    );
    daemon.stop().await?;
    let _daemon = Daemon::start(&env).await?;
    let forwards = env.forwards().await?;
    assert_eq!(
        by_name(&forwards, "dev-ssh").map(|f| f["source"].clone()),
        Some(Value::from("config"))
    );
    assert!(by_name(&forwards, "typed").is_some(), "{forwards:?}");
    echo_roundtrip(local(port), &payload(4096, 3)).await?;
    Ok(())
}

#[tokio::test]
async fn a_socks5_listener_can_be_declared() -> Result {
    let env = TestEnv::start().await?;
    let base = std::fs::read_to_string(env.config_file())?;
    let port = free_port()?;
    let in_app = "resource_group = \"rg-app\"\n";
    declare(&env, &base, &[entry("proxy", "socks5", port, in_app)])?;
    let _daemon = Daemon::start(&env).await?;
    // "twin" is a VM of rg-app and of rg-data: the declared group picks one.
    let stream = socks::connect(local(port), &Dest::Name("twin"), ECHO_PORT).await?;
    within(
        "an echo through the declared listener",
        STEP_TIMEOUT,
        async { echo_over(stream, &payload(4096, 7)).await },
    )
    .await?;
    let listed = env.forward("proxy").await?;
    assert_eq!(listed["target"], "socks5", "{listed}");
    assert_eq!(listed["source"], "config", "{listed}");

    // Without the group the name is ambiguous: a changed entry, and the
    // client told the host cannot be reached.
    declare(&env, &base, &[entry("proxy", "socks5", port, "")])?;
    let out = env.ctl_ok(&["reload"]).await?;
    assert!(out.contains("forward proxy changed"), "{out}");
    let code = within("a SOCKS5 reply", STEP_TIMEOUT, async {
        let mut stream = TcpStream::connect(local(port)).await?;
        socks::handshake(
            &mut stream,
            &socks::request(CONNECT, &Dest::Name("twin"), ECHO_PORT),
        )
        .await
    })
    .await?;
    assert_eq!(code, 0x04, "an ambiguous VM name");
    Ok(())
}

#[tokio::test]
async fn reload_adds_changes_and_removes_only_what_the_file_changed() -> Result {
    let env = TestEnv::start().await?;
    let base = std::fs::read_to_string(env.config_file())?;
    let (keep, change, gone) = (free_port()?, free_port()?, free_port()?);
    declare(
        &env,
        &base,
        &[
            entry("keep", ECHO, keep, ""),
            entry("change", ECHO, change, ""),
            entry("gone", ECHO, gone, ""),
        ],
    )?;
    let _daemon = Daemon::start(&env).await?;
    let typed = env.add_forward(ECHO, &["--name", "typed"]).await?;
    let ids: Vec<(String, Value)> = env
        .forwards()
        .await?
        .into_iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_owned(),
                f["id"].clone(),
            )
        })
        .collect();

    // Live connections through the forwards the reload must not touch.
    let mut on_keep = TcpStream::connect(local(keep)).await?;
    let mut on_typed = TcpStream::connect(local(typed)).await?;
    echo_on(&mut on_keep, 1).await?;
    echo_on(&mut on_typed, 2).await?;

    let moved = free_port()?;
    let added = free_port()?;
    declare(
        &env,
        &base,
        &[
            entry("keep", ECHO, keep, ""),
            entry("change", ECHO, moved, ""),
            entry("new", ECHO, added, ""),
        ],
    )?;
    let out = env.ctl_ok(&["reload"]).await?;
    for line in [
        "forward new added",
        "forward change changed",
        "forward gone removed",
    ] {
        assert!(
            out.contains(line),
            "`{line}` missing from the reload's output:\n{out}"
        );
    }
    assert!(!out.contains("keep") && !out.contains("typed"), "{out}");

    // Untouched: the same forwards (same ids), their connections still carry bytes.
    echo_on(&mut on_keep, 3).await?;
    echo_on(&mut on_typed, 4).await?;
    let forwards = env.forwards().await?;
    for name in ["keep", "typed"] {
        let now = by_name(&forwards, name).map(|f| f["id"].clone());
        let before = ids
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone());
        assert_eq!(now, before, "{name} was restarted");
    }
    assert!(by_name(&forwards, "gone").is_none(), "{forwards:?}");
    assert_eq!(
        by_name(&forwards, "change").map(|f| f["local"].clone()),
        Some(Value::from(format!("127.0.0.1:{moved}")))
    );
    echo_roundtrip(local(moved), &payload(4096, 5)).await?;
    echo_roundtrip(local(added), &payload(4096, 6)).await?;
    // The removed and moved listeners are closed.
    for port in [gone, change] {
        let refused = within("a closed port to refuse", STEP_TIMEOUT, async {
            Ok(TcpStream::connect(local(port)).await.is_err())
        })
        .await?;
        assert!(refused, "port {port} still listens");
    }
    Ok(())
}

#[tokio::test]
async fn a_bad_entry_stops_the_reload_and_changes_nothing() -> Result {
    let env = TestEnv::start().await?;
    let base = std::fs::read_to_string(env.config_file())?;
    let port = free_port()?;
    declare(&env, &base, &[entry("dev", ECHO, port, "")])?;
    let _daemon = Daemon::start(&env).await?;
    let before = env.forwards().await?;

    let other = free_port()?;
    for (bad, key) in [
        (
            entry("bad", "not a target", other, ""),
            "forwards.bad.target",
        ),
        (entry("bad", ECHO, 0, ""), "forwards.bad.port"),
        (
            entry("bad", ECHO, other, "bastion = \"nosuch\"\n"),
            "forwards.bad.bastion",
        ),
        (
            entry("bad", ECHO, other, "bind = \"0.0.0.0\"\n"),
            "forwards.bad.allow_other_users",
        ),
        (entry("bad", ECHO, other, "colour = 1\n"), "colour"),
    ] {
        declare(&env, &base, &[entry("dev", ECHO, free_port()?, ""), bad])?;
        let out = env.ctl(&["reload"]).await?;
        let reason = out.one_line_error()?;
        assert!(reason.contains(key), "{key}: {reason}");
        assert!(
            reason.contains(&env.config_file().display().to_string()),
            "{reason}"
        );
        let after = env.forwards().await?;
        assert_eq!(
            after.iter().map(|f| &f["id"]).collect::<Vec<_>>(),
            before.iter().map(|f| &f["id"]).collect::<Vec<_>>(),
            "{key}: the forwards changed"
        );
    }
    echo_roundtrip(local(port), &payload(4096, 1)).await?;

    // A declared forward may not take a name or port a typed one has.
    let typed = env.add_forward(ECHO, &["--name", "typed"]).await?;
    declare(
        &env,
        &base,
        &[
            entry("dev", ECHO, port, ""),
            entry("typed", ECHO, other, ""),
        ],
    )?;
    let reason = env.ctl(&["reload"]).await?.one_line_error()?;
    assert!(reason.contains("forwards.typed"), "{reason}");
    declare(
        &env,
        &base,
        &[
            entry("dev", ECHO, port, ""),
            entry("clash", ECHO, typed, ""),
        ],
    )?;
    let reason = env.ctl(&["reload"]).await?.one_line_error()?;
    assert!(reason.contains("forwards.clash"), "{reason}");
    assert!(by_name(&env.forwards().await?, "clash").is_none());
    Ok(())
}

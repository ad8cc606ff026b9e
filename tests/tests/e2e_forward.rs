//! Forwards end to end: the real bastiond and bastionctl against the
//! emulator, each test in its own temp dirs, on OS-chosen ports.

use std::collections::BTreeSet;
use std::net::TcpListener;

use bastion_tests::emulator::BastionSpec;
use bastion_tests::harness::net::{echo_roundtrip, free_port, local, payload, source_read};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv};
use tokio::task::JoinSet;

type Result = anyhow::Result<()>;

/// The emulator's echo service answers on every port of 10.1.0.4.
const ECHO: &str = "10.1.0.4:7";
/// The source service: writes N pattern bytes on request, then closes.
const SOURCE: &str = "10.1.0.6:9";
const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn added_forward_carries_bytes_and_reports_them() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = free_port()?;
    let port_text = port.to_string();
    let out = env
        .ctl_ok(&["forward", "add", ECHO, &port_text, "--name", "echo"])
        .await?;
    let expected = format!("Forwarding 127.0.0.1:{port} → 10.1.0.4:7 via hub (name echo, id ");
    assert!(out.starts_with(&expected), "{out}");

    echo_roundtrip(local(port), &payload(MIB, 1)).await?;

    let forward = env
        .wait_for_forward(
            "echo",
            "counters of one closed connection",
            STEP_TIMEOUT,
            |f| {
                f["active_connections"] == 0
                    && f["total_connections"] == 1
                    && f["bytes_up"] == MIB
                    && f["bytes_down"] == MIB
            },
        )
        .await?;
    let fields: BTreeSet<&str> = forward
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let expected_fields: BTreeSet<&str> = [
        "id",
        "name",
        "bastion",
        "target",
        "local",
        "state",
        "active_connections",
        "total_connections",
        "bytes_up",
        "bytes_down",
        "last_error",
        "created_at_ms",
        "setup_retries",
        "last_error_at_ms",
        "refused_connections",
        "allow_other_users",
    ]
    .into();
    // Scripts rely on these; more may be added, none removed.
    assert!(
        expected_fields.is_subset(&fields),
        "missing: {:?}",
        expected_fields.difference(&fields).collect::<Vec<_>>()
    );
    assert_eq!(forward["bastion"], "hub");
    assert_eq!(forward["target"], "10.1.0.4:7");
    assert_eq!(forward["local"], format!("127.0.0.1:{port}"));
    assert_eq!(forward["state"], "listening");
    assert_eq!(forward["last_error"], serde_json::Value::Null);
    assert!(forward["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(
        forward["created_at_ms"]
            .as_i64()
            .is_some_and(|ms| ms > 1_600_000_000_000)
    );

    let table = env.ctl_ok(&["forward", "list"]).await?;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("LAST ERROR"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap_or_default();
    for cell in [
        "echo",
        &format!("127.0.0.1:{port}"),
        "10.1.0.4:7",
        "hub",
        "listening",
        "0/1",
        "1.0 MiB",
    ] {
        assert!(row.contains(cell), "{cell} missing: {table}");
    }

    let ledger = env
        .emulator
        .wait_for(
            "the session to be deleted",
            |l| l.live_sessions == 0,
            STEP_TIMEOUT,
        )
        .await?;
    assert_eq!(ledger.sessions_created, 1, "{ledger:?}");
    Ok(())
}

#[tokio::test]
async fn add_json_prints_the_forward() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = free_port()?.to_string();
    let added = env
        .ctl_json(&["forward", "add", SOURCE, &port, "--name", "src", "--json"])
        .await?;
    assert_eq!(added["name"], "src");
    assert_eq!(added["target"], "10.1.0.6:9");
    assert_eq!(added["state"], "listening");
    assert_eq!(env.forwards().await?[0]["id"], added["id"]);
    // The target's close reaches the client: the source ends the stream.
    source_read(local(port.parse()?), 3 * MIB as u64).await?;
    Ok(())
}

#[tokio::test]
async fn hundred_concurrent_connections_on_one_forward() -> Result {
    const CONNECTIONS: u64 = 100;
    const BYTES_EACH: usize = 64 * 1024;
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "many"]).await?;

    let mut tasks = JoinSet::new();
    for seed in 0..CONNECTIONS {
        tasks.spawn(async move { echo_roundtrip(local(port), &payload(BYTES_EACH, seed)).await });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }

    env.wait_for_forward(
        "many",
        "all connections counted and closed",
        STEP_TIMEOUT,
        |f| f["total_connections"] == CONNECTIONS && f["active_connections"] == 0,
    )
    .await?;
    let ledger = env
        .emulator
        .wait_for(
            "every session deleted",
            |l| l.live_sessions == 0,
            STEP_TIMEOUT,
        )
        .await?;
    assert_eq!(ledger.sessions_created, CONNECTIONS, "{ledger:?}");
    assert_eq!(
        ledger.bytes_up,
        CONNECTIONS * BYTES_EACH as u64,
        "{ledger:?}"
    );
    Ok(())
}

#[tokio::test]
async fn two_forwards_on_two_bastions() -> Result {
    let env = TestEnv::start_with(|cfg| {
        cfg.bastions = vec![BastionSpec::standard("hub"), BastionSpec::standard("spoke")];
    })
    .await?;
    let _daemon = Daemon::start(&env).await?;
    let hub = env
        .add_forward(ECHO, &["--name", "via-hub", "--bastion", "hub"])
        .await?;
    let spoke = env
        .add_forward(ECHO, &["--name", "via-spoke", "--bastion", "spoke"])
        .await?;

    let (hub_data, spoke_data) = (payload(MIB, 1), payload(MIB, 2));
    tokio::try_join!(
        echo_roundtrip(local(hub), &hub_data),
        echo_roundtrip(local(spoke), &spoke_data),
    )?;

    assert_eq!(env.forward("via-hub").await?["bastion"], "hub");
    assert_eq!(env.forward("via-spoke").await?["bastion"], "spoke");
    let status = env.ctl_json(&["status", "--json"]).await?;
    let names: BTreeSet<&str> = status["bastions"]
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["hub", "spoke"].into(), "{status}");
    env.emulator
        .wait_for(
            "both sessions created and deleted",
            |l| l.sessions_created == 2 && l.live_sessions == 0,
            STEP_TIMEOUT,
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn remove_frees_the_port() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let by_name = env.add_forward(ECHO, &["--name", "gone"]).await?;
    let by_port = env.add_forward(ECHO, &["--name", "by-port"]).await?;
    let by_id = env.add_forward(ECHO, &["--name", "by-id"]).await?;
    echo_roundtrip(local(by_name), b"hello").await?;

    let out = env.ctl_ok(&["forward", "remove", "gone"]).await?;
    assert!(out.contains("Removed forward gone"), "{out}");
    env.ctl_ok(&["forward", "remove", &by_port.to_string()])
        .await?;
    let id = env.forward("by-id").await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    env.ctl_ok(&["forward", "remove", &id]).await?;

    assert!(env.forwards().await?.is_empty());
    for port in [by_name, by_port, by_id] {
        TcpListener::bind(local(port))
            .map_err(|e| anyhow::anyhow!("port {port} still taken after remove: {e}"))?;
    }
    let reason = env
        .ctl(&["forward", "remove", "nope"])
        .await?
        .one_line_error()?;
    assert!(reason.contains("nope"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn restart_restores_forwards() -> Result {
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let echo = env.add_forward(ECHO, &["--name", "echo"]).await?;
    let source = env.add_forward(SOURCE, &["--name", "source"]).await?;
    echo_roundtrip(local(echo), &payload(64 * 1024, 1)).await?;
    let before = env.forwards().await?;

    let status = daemon.stop().await?;
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        daemon.logs()
    );
    // Down means down: the port is free while no daemon runs.
    drop(TcpListener::bind(local(echo))?);

    let _daemon = Daemon::start(&env).await?;
    let after = env.forwards().await?;
    let keys = |forwards: &[serde_json::Value]| -> Vec<String> {
        forwards
            .iter()
            .map(|f| {
                format!(
                    "{} {} {} {} {}",
                    f["id"], f["name"], f["local"], f["target"], f["bastion"]
                )
            })
            .collect()
    };
    assert_eq!(keys(&after), keys(&before));
    assert!(after.iter().all(|f| f["state"] == "listening"), "{after:?}");
    echo_roundtrip(local(echo), &payload(64 * 1024, 2)).await?;
    source_read(local(source), 100_000).await?;
    Ok(())
}

#[tokio::test]
async fn taken_port_is_an_error_and_nothing_is_saved() -> Result {
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let squatter = TcpListener::bind("127.0.0.1:0")?;
    let port = squatter.local_addr()?.port().to_string();

    let reason = env
        .ctl(&["forward", "add", ECHO, &port, "--name", "clash"])
        .await?
        .one_line_error()?;
    assert!(reason.contains(&port), "{reason}");
    assert!(env.forwards().await?.is_empty());

    // A name can't be taken twice either.
    env.add_forward(ECHO, &["--name", "dup"]).await?;
    let other = free_port()?.to_string();
    let reason = env
        .ctl(&["forward", "add", ECHO, &other, "--name", "dup"])
        .await?
        .one_line_error()?;
    assert!(reason.contains("dup"), "{reason}");

    daemon.stop().await?;
    let _daemon = Daemon::start(&env).await?;
    let names: Vec<String> = env
        .forwards()
        .await?
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["dup"]);
    Ok(())
}

#[tokio::test]
async fn bad_targets_and_ports_are_refused_in_one_line() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = free_port()?.to_string();
    let cases: [&[&str]; 10] = [
        &["10.1.0.300:22", &port],
        &["10.1.0.4", &port],
        &["10.1.0.4:0", &port],
        &["10.1.0.4:70000", &port],
        &["not a target", &port],
        &["10.1.0.4:22", "0"],
        &["10.1.0.4:22", "65536"],
        &["10.1.0.4:22", "ssh"],
        &["10.1.0.4:22", &port, "--bind", "not-an-address"],
        &["10.1.0.4:22", &port, "--bastion", "nope"],
    ];
    for case in cases {
        let mut args = vec!["forward", "add"];
        args.extend_from_slice(case);
        let out = env.ctl(&args).await?;
        let reason = out
            .one_line_error()
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.join(" ")))?;
        assert!(reason.len() > 10, "{args:?}: {reason}");
    }
    let reason = env
        .ctl(&["forward", "add", ECHO, &port, "--bastion", "nope"])
        .await?
        .one_line_error()?;
    assert!(
        reason.contains("nope"),
        "unknown bastion not named: {reason}"
    );
    assert!(env.forwards().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn forward_whose_port_is_taken_at_start_recovers_when_freed() -> Result {
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "contested"]).await?;
    daemon.stop().await?;

    let squatter = TcpListener::bind(local(port))?;
    let _daemon = Daemon::start(&env).await?;
    let forward = env
        .wait_for_forward("contested", "the error state", STEP_TIMEOUT, |f| {
            f["state"] == "error"
        })
        .await?;
    let error = forward["last_error"].as_str().unwrap_or_default();
    assert!(error.contains(&port.to_string()), "{forward}");
    let status = env.ctl_json(&["status", "--json"]).await?;
    assert_eq!(status["forwards_in_error"], 1, "{status}");

    drop(squatter);
    env.wait_for_forward("contested", "the retry to bind", STEP_TIMEOUT, |f| {
        f["state"] == "listening"
    })
    .await?;
    echo_roundtrip(local(port), &payload(64 * 1024, 1)).await?;
    Ok(())
}

#[tokio::test]
async fn restart_after_a_crash() -> Result {
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "survivor"]).await?;
    echo_roundtrip(local(port), b"before").await?;
    daemon.kill().await?;

    // The stale socket and lock of the dead daemon must not stop the next one.
    let _daemon = Daemon::start(&env).await?;
    assert_eq!(env.forward("survivor").await?["state"], "listening");
    echo_roundtrip(local(port), &payload(64 * 1024, 2)).await?;
    Ok(())
}

#[tokio::test]
async fn ipv6_loopback_forward_is_bracketed() -> Result {
    let Ok(probe) = TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: this machine has no IPv6 loopback");
        return Ok(());
    };
    let addr = probe.local_addr()?;
    drop(probe);
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = addr.port().to_string();
    let added = env
        .ctl_json(&[
            "forward", "add", ECHO, &port, "--bind", "::1", "--name", "v6", "--json",
        ])
        .await?;
    assert_eq!(added["local"], format!("[::1]:{port}"));
    echo_roundtrip(addr, &payload(64 * 1024, 6)).await?;
    Ok(())
}

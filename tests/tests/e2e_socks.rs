//! SOCKS5 listeners end to end (`bastionctl socks add`): real `ssh` through
//! netcat-openbsd's `nc -X 5` and real `curl --socks5-hostname` to VMs by IP
//! and by name, every reply code a client can act on, 100 concurrent
//! CONNECTs, and garbage and slowloris clients that must neither hold the
//! daemon's tasks nor leave a Bastion session behind.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use bastion_tests::emulator::ECHO_IP;
use bastion_tests::harness::net::{echo_over, free_port, local, payload};
use bastion_tests::harness::other_user::{as_user, other_user};
use bastion_tests::harness::socks::{self, BIND, CONNECT, Dest, UDP_ASSOCIATE};
use bastion_tests::harness::sshd::{SSHD, Sshd};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, within};
use bastiond::forwards::socks::HANDSHAKE_TIMEOUT;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinSet;

type Result = anyhow::Result<()>;

/// The emulator's echo service answers on every port of 10.1.0.4 (VMs
/// `vm1` and `Web01`).
const ECHO_PORT: u16 = 7;
/// An address the Bastion does not know: its token POST answers 404.
const UNKNOWN_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 99);
/// Clients at once in the concurrency test (the figure).
const CONCURRENT: usize = 100;
/// Garbage and slowloris clients opened at once.
const BAD_CLIENTS: usize = 20;
/// What the test's web server answers, through curl.
const WEB_BODY: &str = "hello through socks5\n";

/// Adds a SOCKS5 listener on a port the OS picked; returns the port.
async fn add_socks(env: &TestEnv, extra: &[&str]) -> anyhow::Result<u16> {
    let port = free_port()?;
    let port_text = port.to_string();
    let mut args = vec!["socks", "add", port_text.as_str()];
    args.extend_from_slice(extra);
    env.ctl_ok(&args).await?;
    Ok(port)
}

/// Whether this `nc` speaks SOCKS5 (`-X 5`, netcat-openbsd).
async fn nc_speaks_socks() -> bool {
    let help = Command::new("nc").arg("-h").output().await;
    help.is_ok_and(|out| {
        String::from_utf8_lossy(&out.stderr).contains("-X proxy_protocol")
            || String::from_utf8_lossy(&out.stdout).contains("-X proxy_protocol")
    })
}

/// The reply code the listener at `port` gives `request`.
async fn reply_code(port: u16, request: &[u8]) -> anyhow::Result<u8> {
    within("a SOCKS5 reply", STEP_TIMEOUT, async {
        let mut stream = TcpStream::connect(local(port)).await?;
        socks::handshake(&mut stream, request).await
    })
    .await
}

/// Reads until the daemon closes `stream` (EOF or reset); fails after `timeout`.
async fn closed_by_daemon(mut stream: TcpStream, timeout: Duration) -> Result {
    within("the daemon to close the connection", timeout, async {
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn ssh_goes_through_nc_by_ip_and_by_vm_name_and_the_listener_persists() -> Result {
    let env = TestEnv::start().await?;
    let Some(sshd) = Sshd::start(&env.root().join("sshd")).await? else {
        eprintln!("SKIPPED: {SSHD} is not installed (apt-get install openssh-server)");
        return Ok(());
    };
    if !nc_speaks_socks().await {
        eprintln!("SKIPPED: nc lacks -X 5 (apt-get install netcat-openbsd)");
        return Ok(());
    }
    // 10.1.0.4 is also the VM Web01; its port 22 goes to our sshd.
    env.emulator.map_target(IpAddr::V4(ECHO_IP), 22, sshd.addr);
    let mut daemon = Daemon::start(&env).await?;
    let port = add_socks(&env, &["--name", "proxy"]).await?;
    let proxy = format!("ProxyCommand=nc -X 5 -x 127.0.0.1:{port} %h %p");
    for host in ["10.1.0.4", "web01"] {
        let mut ssh = sshd.ssh(&env, &["-o", &proxy, host, "echo hello"]);
        let output = within("ssh to finish", STEP_TIMEOUT, async {
            Ok(ssh.output().await?)
        })
        .await?;
        ensure!(
            output.status.success(),
            "ssh {host} failed ({}): {}\n--- sshd ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            sshd.logs()
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n", "{host}");
    }
    let listed = env
        .wait_for_forward("proxy", "two closed connections", STEP_TIMEOUT, |f| {
            f["total_connections"] == 2 && f["active_connections"] == 0
        })
        .await?;
    assert_eq!(listed["target"], "socks5", "{listed}");
    let table = env.ctl_ok(&["forward", "list"]).await?;
    assert!(table.contains("socks5"), "{table}");

    daemon.stop().await?;
    let _daemon = Daemon::start(&env).await?;
    let restored = env.forward("proxy").await?;
    assert_eq!(restored["target"], "socks5", "{restored}");
    assert_eq!(restored["state"], "listening", "{restored}");
    let echoed = socks::connect(local(port), &Dest::Name("vm1"), ECHO_PORT).await?;
    within(
        "echo after a restart",
        STEP_TIMEOUT,
        echo_over(echoed, b"again"),
    )
    .await?;

    env.ctl_ok(&["forward", "remove", "proxy"]).await?;
    ensure!(
        TcpStream::connect(local(port)).await.is_err(),
        "the listener is still open after `forward remove`"
    );
    Ok(())
}

/// A one-page web server: answers every request with [`WEB_BODY`].
async fn web_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{WEB_BODY}",
                    WEB_BODY.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn curl_socks5_hostname_reaches_vms_by_name_and_by_ip() -> Result {
    let env = TestEnv::start().await?;
    env.emulator
        .map_target(IpAddr::V4(ECHO_IP), 80, web_server().await?);
    let _daemon = Daemon::start(&env).await?;
    let port = add_socks(&env, &["--resource-group", "rg-app"]).await?;
    let proxy = format!("127.0.0.1:{port}");
    // curl sends both as domain names (socks5h): the IP one is read as an IP.
    for url in ["http://web01/", "http://10.1.0.4/"] {
        let output = within("curl to finish", STEP_TIMEOUT, async {
            Command::new("curl")
                .args(["--silent", "--show-error", "--max-time", "20"])
                .args(["--socks5-hostname", &proxy, url])
                .stdin(Stdio::null())
                .output()
                .await
                .context("cannot run curl")
        })
        .await?;
        ensure!(
            output.status.success(),
            "curl {url} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), WEB_BODY, "{url}");
    }
    Ok(())
}

#[tokio::test]
async fn bytes_go_through_and_every_refusal_has_its_reply_code() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = add_socks(&env, &["--name", "proxy"]).await?;
    let data = payload(256 * 1024, 7);
    for dest in [Dest::Ip(IpAddr::V4(ECHO_IP)), Dest::Name("VM1")] {
        let stream = socks::connect(local(port), &dest, ECHO_PORT).await?;
        within(
            "an echo through SOCKS5",
            STEP_TIMEOUT,
            echo_over(stream, &data),
        )
        .await?;
    }

    let connect = |dest: Dest<'_>| socks::request(CONNECT, &dest, 22);
    assert_eq!(
        reply_code(port, &connect(Dest::Name("nosuchvm"))).await?,
        0x04
    );
    // The Bastion refuses an address it does not know (404).
    let refused = reply_code(port, &connect(Dest::Ip(IpAddr::V4(UNKNOWN_IP)))).await?;
    assert_eq!(refused, 0x05, "Bastion refusal");
    assert_eq!(
        reply_code(port, &connect(Dest::Name("not a name"))).await?,
        0x04
    );
    let echo = Dest::Ip(IpAddr::V4(ECHO_IP));
    for command in [BIND, UDP_ASSOCIATE] {
        let code = reply_code(port, &socks::request(command, &echo, 22)).await?;
        assert_eq!(code, 0x07, "command {command}");
    }
    assert_eq!(reply_code(port, &[5, CONNECT, 0, 9, 1, 2]).await?, 0x08);
    // A client that only offers username/password is told no method fits.
    let mut stream = TcpStream::connect(local(port)).await?;
    stream.write_all(&[5, 1, 2]).await?;
    let mut answer = [0u8; 2];
    within("the method answer", STEP_TIMEOUT, async {
        Ok(stream.read_exact(&mut answer).await?)
    })
    .await?;
    assert_eq!(answer, [5, 0xff]);

    // Two tunnels, an unknown name and a refusal reached the tunnel step;
    // the last refusal is the listener's last error, and no session is left.
    let listed = env
        .wait_for_forward("proxy", "four closed connections", STEP_TIMEOUT, |f| {
            f["total_connections"] == 4 && f["active_connections"] == 0
        })
        .await?;
    let last_error = listed["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("404"), "{listed}");
    let ledger = env
        .emulator
        .wait_for("no live session", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    assert_eq!(ledger.sessions_created, 2, "{ledger:?}");
    Ok(())
}

#[tokio::test]
async fn another_users_client_is_told_not_allowed() -> Result {
    let Some((uid, gid)) = other_user()? else {
        return Ok(());
    };
    if !nc_speaks_socks().await {
        eprintln!("SKIPPED: nc lacks -X 5 (apt-get install netcat-openbsd)");
        return Ok(());
    }
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = add_socks(&env, &["--name", "mine"]).await?;
    let proxy = format!("127.0.0.1:{port}");
    let mut nc = as_user(uid, gid, "nc");
    nc.args(["-X", "5", "-x", &proxy, "10.1.0.4", "7"]);
    let output = within("the other user's nc", STEP_TIMEOUT, async {
        Ok(nc.output().await?)
    })
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "nc was served: {stderr}");
    assert!(stderr.contains("not allowed"), "{stderr}");
    let listed = env.forward("mine").await?;
    assert_eq!(listed["refused_connections"], 1, "{listed}");
    assert_eq!(listed["total_connections"], 0, "{listed}");
    assert_eq!(env.emulator.ledger().sessions_created, 0);
    Ok(())
}

#[tokio::test]
async fn a_hundred_concurrent_connects_are_all_served() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = add_socks(&env, &["--name", "proxy"]).await?;
    let mut clients = JoinSet::new();
    for i in 0..CONCURRENT {
        clients.spawn(async move {
            let dest = if i % 2 == 0 {
                Dest::Ip(IpAddr::V4(ECHO_IP))
            } else {
                Dest::Name("vm1")
            };
            let stream = socks::connect(local(port), &dest, ECHO_PORT).await?;
            echo_over(stream, &payload(4096, i as u64)).await
        });
    }
    within("100 echoes through SOCKS5", STEP_TIMEOUT * 2, async {
        while let Some(done) = clients.join_next().await {
            done??;
        }
        Ok(())
    })
    .await?;
    env.wait_for_forward("proxy", "every connection closed", STEP_TIMEOUT, |f| {
        f["total_connections"] == CONCURRENT && f["active_connections"] == 0
    })
    .await?;
    let ledger = env
        .emulator
        .wait_for("no live session", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    assert_eq!(ledger.sessions_created, CONCURRENT as u64, "{ledger:?}");
    Ok(())
}

#[tokio::test]
async fn garbage_and_slowloris_clients_hold_nothing() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = add_socks(&env, &["--name", "proxy"]).await?;

    let mut garbage = Vec::new();
    for _ in 0..BAD_CLIENTS {
        let mut stream = TcpStream::connect(local(port)).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        garbage.push(stream);
    }
    let mut slow = Vec::new();
    for i in 0..BAD_CLIENTS {
        let mut stream = TcpStream::connect(local(port)).await?;
        // A greeting cut short, or a whole one and a request cut short.
        let partial: &[u8] = if i % 2 == 0 { &[5] } else { &[5, 1, 0, 5, 1] };
        stream.write_all(partial).await?;
        slow.push(stream);
    }
    for stream in garbage {
        closed_by_daemon(stream, STEP_TIMEOUT).await?;
    }
    // The slow clients hold no listener: a good client is served meanwhile.
    let stream = socks::connect(local(port), &Dest::Name("vm1"), ECHO_PORT).await?;
    within(
        "an echo beside slow clients",
        STEP_TIMEOUT,
        echo_over(stream, b"fine"),
    )
    .await?;
    // And each slow one is closed once its handshake time is up.
    let mut closing = JoinSet::new();
    for stream in slow {
        closing.spawn(closed_by_daemon(stream, HANDSHAKE_TIMEOUT + STEP_TIMEOUT));
    }
    while let Some(closed) = closing.join_next().await {
        closed??;
    }
    let listed = env
        .wait_for_forward("proxy", "the good connection closed", STEP_TIMEOUT, |f| {
            f["active_connections"] == 0
        })
        .await?;
    assert_eq!(listed["total_connections"], 1, "{listed}");
    let ledger = env
        .emulator
        .wait_for("no live session", |l| l.live_sessions == 0, STEP_TIMEOUT)
        .await?;
    assert_eq!(ledger.sessions_created, 1, "{ledger:?}");
    Ok(())
}

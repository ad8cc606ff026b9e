//! bastiond on a machine shared with other users: forwards serve only their
//! owner, `bastionctl` talks only to its own user's daemon, and one state
//! file has one daemon. The other user is a real one (created when missing,
//! which needs root; the tests say so and skip otherwise), its clients real
//! processes running under its uid.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, ensure};
use bastion_tests::harness::other_user::{OTHER_USER, as_user, other_user};
use bastion_tests::harness::{Daemon, STEP_TIMEOUT, TestEnv, within};
use tokio::io::{AsyncBufReadExt as _, BufReader};

type Result = anyhow::Result<()>;

/// The emulator's echo service answers on every port of 10.1.0.4.
const ECHO: &str = "10.1.0.4:7";
/// What the other user's client sends, and expects echoed.
const HELLO: &str = "hello";

/// A TCP client: connects to 127.0.0.1:$ARGV[0], sends HELLO, prints what
/// comes back (up to its length; nothing when the connection is closed).
const PERL_TCP_CLIENT: &str = r#"
use IO::Socket::INET;
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0]) or die "connect: $!\n";
syswrite($s, $ARGV[1]);
my $got = "";
while (length($got) < length($ARGV[1])) {
    my $n = sysread($s, my $buf, 64);
    last if !$n;
    $got .= $buf;
}
print $got;
"#;

/// A Unix socket server: listens on $ARGV[0], prints "ready", accepts one
/// client and prints how many bytes it sent before closing.
const PERL_UNIX_SERVER: &str = r#"
use IO::Socket::UNIX;
use Socket;
$| = 1;
my $l = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 1) or die "listen: $!\n";
print "ready\n";
my $c = $l->accept or die "accept: $!\n";
my $n = 0;
while (my $r = sysread($c, my $buf, 65536)) { $n += $r }
print "$n\n";
"#;

/// What the other user's client got back through local port `port`.
async fn echo_as(uid: u32, gid: u32, port: u16) -> anyhow::Result<String> {
    let mut cmd = as_user(uid, gid, "perl");
    cmd.args(["-e", PERL_TCP_CLIENT, &port.to_string(), HELLO]);
    let output = within("the other user's client", STEP_TIMEOUT, async {
        Ok(cmd.output().await?)
    })
    .await?;
    ensure!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn another_users_connection_is_refused_without_a_session() -> Result {
    let Some((uid, gid)) = other_user()? else {
        return Ok(());
    };
    let env = TestEnv::start().await?;
    let daemon = Daemon::start(&env).await?;
    let port = env.add_forward(ECHO, &["--name", "mine"]).await?;

    for _ in 0..2 {
        assert_eq!(echo_as(uid, gid, port).await?, "", "served another user");
    }
    let forward = env
        .wait_for_forward("mine", "two refused connections", STEP_TIMEOUT, |f| {
            f["refused_connections"] == 2
        })
        .await?;
    assert_eq!(forward["total_connections"], 0, "{forward}");
    assert_eq!(forward["allow_other_users"], false, "{forward}");
    let ledger = env.emulator.ledger();
    assert_eq!(ledger.sessions_created, 0, "{ledger:?}");
    assert_eq!(ledger.rejects.values().sum::<u64>(), 0, "{ledger:?}");
    let logged = daemon
        .logs()
        .lines()
        .filter(|l| l.contains("refused a connection") && l.contains(&format!("uid {uid}")))
        .count();
    assert_eq!(logged, 1, "logged once per peer user:\n{}", daemon.logs());
    let table = env.ctl_ok(&["forward", "list"]).await?;
    assert!(
        table.lines().next().unwrap_or_default().contains("REFUSED"),
        "{table}"
    );

    // The owner is still served.
    bastion_tests::harness::net::echo_roundtrip(
        bastion_tests::harness::net::local(port),
        HELLO.as_bytes(),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn allow_other_users_serves_everyone_and_is_saved() -> Result {
    let Some((uid, gid)) = other_user()? else {
        return Ok(());
    };
    let env = TestEnv::start().await?;
    let mut daemon = Daemon::start(&env).await?;
    let port = env
        .add_forward(ECHO, &["--name", "shared", "--allow-other-users"])
        .await?;
    assert_eq!(echo_as(uid, gid, port).await?, HELLO);
    let forward = env.forward("shared").await?;
    assert_eq!(forward["allow_other_users"], true, "{forward}");
    assert_eq!(forward["refused_connections"], 0, "{forward}");

    daemon.stop().await?;
    let _daemon = Daemon::start(&env).await?;
    assert_eq!(env.forward("shared").await?["allow_other_users"], true);
    assert_eq!(echo_as(uid, gid, port).await?, HELLO);
    Ok(())
}

#[tokio::test]
async fn binding_beyond_loopback_requires_allow_other_users() -> Result {
    let env = TestEnv::start().await?;
    let _daemon = Daemon::start(&env).await?;
    let port = bastion_tests::harness::net::free_port()?.to_string();
    let out = env
        .ctl(&["forward", "add", ECHO, &port, "--bind", "0.0.0.0"])
        .await?;
    let reason = out.one_line_error()?;
    assert!(
        reason.contains("--allow-other-users") && reason.contains("cannot be checked"),
        "{reason}"
    );
    assert!(env.forwards().await?.is_empty());
    env.ctl_ok(&[
        "forward",
        "add",
        ECHO,
        &port,
        "--bind",
        "0.0.0.0",
        "--allow-other-users",
    ])
    .await?;
    Ok(())
}

/// The byte-counting server, run as the other user.
struct ForeignServer {
    socket: PathBuf,
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl ForeignServer {
    /// Starts it in `dir` (handed to the other user); returns once it listens.
    async fn start(uid: u32, gid: u32, dir: &Path) -> anyhow::Result<ForeignServer> {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        let socket = dir.join("s.sock");
        let mut cmd = as_user(uid, gid, "perl");
        cmd.args(["-e", PERL_UNIX_SERVER])
            .arg(&socket)
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().context("cannot start the foreign server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = within("the foreign server to listen", STEP_TIMEOUT, async {
            Ok(lines.next_line().await?)
        })
        .await?;
        ensure!(ready.as_deref() == Some("ready"), "server said {ready:?}");
        Ok(ForeignServer {
            socket,
            child,
            lines,
        })
    }

    /// How many bytes its one client sent; waits for it to exit.
    async fn bytes_received(mut self) -> anyhow::Result<String> {
        within("the foreign server's report", STEP_TIMEOUT, async {
            let line = self.lines.next_line().await?.unwrap_or_default();
            self.child.wait().await?;
            Ok(line)
        })
        .await
    }
}

#[tokio::test]
async fn bastionctl_refuses_another_users_socket_without_sending_a_byte() -> Result {
    let Some((uid, gid)) = other_user()? else {
        return Ok(());
    };
    let env = TestEnv::start().await?;
    let foreign = tempfile::Builder::new().prefix("bto").tempdir_in("/tmp")?;
    let server = ForeignServer::start(uid, gid, foreign.path()).await?;

    // The other user's socket moved into our own private directory: only
    // the server's credentials give it away.
    let ours = env.socket();
    let dir = ours.parent().context("socket has a directory")?;
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(dir)?;
    std::fs::rename(&server.socket, &ours)?;
    let reason = env.ctl(&["status"]).await?.one_line_error()?;
    assert!(
        reason.contains(&format!("uid {uid} ({OTHER_USER})"))
            && reason.contains("nothing was sent"),
        "{reason}"
    );
    assert_eq!(
        server.bytes_received().await?,
        "0",
        "bytes the server received"
    );

    // A socket in the other user's directory is refused before connecting.
    let theirs = foreign.path().join("s.sock");
    let theirs_text = theirs.display().to_string();
    let reason = env
        .ctl(&["--socket", &theirs_text, "status"])
        .await?
        .one_line_error()?;
    assert!(
        reason.contains(&format!("belongs to uid {uid} ({OTHER_USER})")),
        "{reason}"
    );
    Ok(())
}

#[tokio::test]
async fn a_second_daemon_cannot_share_the_state_file() -> Result {
    let env = TestEnv::start().await?;
    let first = Daemon::start(&env).await?;
    let socket = env.root().join("second.sock");
    let socket_text = socket.display().to_string();
    let output =
        Daemon::run_to_exit_with(&env, &[], &[("BASTIOND_SOCKET", socket_text.as_str())]).await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("state file") && stderr.contains(&first.pid().to_string()),
        "{stderr}"
    );
    assert!(!socket.exists(), "the second daemon bound its socket");
    Ok(())
}

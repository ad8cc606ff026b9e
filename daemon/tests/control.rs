//! The daemon's wiring without a Bastion: control socket, forwards that need
//! no tunnel, persistence across a restart, clean shutdown.

use std::path::Path;
use std::time::Duration;

use bastion_proto::v1::{
    AddForwardRequest, ListForwardsRequest, ReloadRequest, RemoveForwardRequest, StatusRequest,
    Target,
};
use bastiond::daemon::{Options, run};
use tokio::net::UnixListener;
use tokio::sync::oneshot;

const HUB: &str = "/subscriptions/0000/resourceGroups/rg-hub/providers/Microsoft.Network/bastionHosts/bastion-hub";

struct Daemon {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(dir: &Path) -> Daemon {
    let socket = dir.join("bastiond.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    let options = Options {
        config_file: dir.join("config.toml"),
        state_file: dir.join("state/state.json"),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(options, listener, async move {
        let _ = stopped.await;
    }));
    Daemon { stop, task }
}

impl Daemon {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("shutdown is bounded")
            .unwrap()
            .unwrap();
    }
}

/// A port the OS picks, never the same one twice in this process: the tests
/// here run side by side, and a port one test freed could otherwise become
/// another's forward while the first still checks that it is free.
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

fn add(port: u16, name: &str) -> AddForwardRequest {
    AddForwardRequest {
        target: Some(Target {
            host: "10.1.0.4".into(),
            port: 22,
        }),
        local_port: u32::from(port),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_are_added_listed_persisted_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[bastions.hub]\nresource_id = \"{HUB}\"\n"),
    )
    .unwrap();
    let daemon = start(dir.path());
    let mut client = bastion_proto::client::connect(&dir.path().join("bastiond.sock"))
        .await
        .unwrap();

    let port = free_port();
    let added = client
        .add_forward(add(port, "dev"))
        .await
        .unwrap()
        .into_inner()
        .forward
        .unwrap();
    assert_eq!(added.name, "dev");
    assert_eq!(added.bastion, "hub");
    assert_eq!(added.bind_address, "127.0.0.1");
    // The listener is bound before the answer.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

    let taken = client.add_forward(add(port, "other")).await.unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    let duplicate = client
        .add_forward(add(free_port(), "dev"))
        .await
        .unwrap_err();
    assert_eq!(
        duplicate.code(),
        tonic::Code::AlreadyExists,
        "{duplicate:?}"
    );
    let mut bad = add(free_port(), "");
    bad.target = Some(Target {
        host: "my vm".into(),
        port: 22,
    });
    assert_eq!(
        client.add_forward(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let mut unknown = add(free_port(), "");
    unknown.bastion = "spoke".into();
    let unknown = client.add_forward(unknown).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("hub"), "{unknown:?}");

    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.forwards, 1);
    assert_eq!(status.credential, "developer-tools");
    drop(client);
    daemon.stop().await;

    // Restart: the forward is back.
    let daemon = start(dir.path());
    let mut client = bastion_proto::client::connect(&dir.path().join("bastiond.sock"))
        .await
        .unwrap();
    let list = client
        .list_forwards(ListForwardsRequest {})
        .await
        .unwrap()
        .into_inner()
        .forwards;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, added.id);
    assert_eq!(list[0].local_port, u32::from(port));

    let removed = client
        .remove_forward(RemoveForwardRequest {
            selector: port.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.forward.unwrap().id, added.id);
    // The port is free once the answer arrives: nothing listens on it. (Not
    // proven by binding it: a parallel test's outgoing connection may be
    // using it as its ephemeral local port, which refuses a bind.)
    assert!(!listening_on(port), "port {port} is still listened on");
    let missing = client
        .remove_forward(RemoveForwardRequest {
            selector: "dev".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    drop(client);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bastions_adding_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let mut client = bastion_proto::client::connect(&dir.path().join("bastiond.sock"))
        .await
        .unwrap();
    let error = client.add_forward(add(free_port(), "")).await.unwrap_err();
    // No bastion to go through is "not found" (bastionctl's exit 4, issue 21).
    assert_eq!(error.code(), tonic::Code::NotFound);
    assert!(error.message().contains("[bastions]"), "{error:?}");
    drop(client);
    daemon.stop().await;
}

/// How long the test holds the state file's save blocked.
const SAVE_BLOCKED_FOR: Duration = Duration::from_secs(2);
/// The longest the runtime may stall meanwhile; a blocked worker stalls it
/// for all of `SAVE_BLOCKED_FOR`.
const MAX_STALL: Duration = Duration::from_millis(500);

/// A state save that blocks (a slow disk; here a FIFO where the temp file
/// goes) must not stall the runtime: on one thread, timers keep firing.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_state_save_does_not_stall_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[bastions.hub]\nresource_id = \"{HUB}\"\n"),
    )
    .unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let daemon = start(dir.path());
    let mut client = bastion_proto::client::connect(&dir.path().join("bastiond.sock"))
        .await
        .unwrap();
    // Opening a FIFO for writing blocks until someone reads it.
    let fifo = state_dir.join(format!("state.json.tmp-{}", std::process::id()));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(SAVE_BLOCKED_FOR);
        let mut drained = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::open(&fifo).unwrap(), &mut drained).unwrap();
    });

    let added = tokio::spawn(async move { client.add_forward(add(free_port(), "slow")).await });
    let mut last = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    while !added.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        worst = worst.max(last.elapsed());
        last = std::time::Instant::now();
    }
    // The save itself may fail (a FIFO cannot be fsynced); only the stall matters.
    let _ = added.await.unwrap();
    reader.join().unwrap();
    assert!(worst < MAX_STALL, "the runtime stalled for {worst:?}");
    daemon.stop().await;
}

/// Reload reads the settings file (and certificates) off the runtime's
/// workers: a file that takes long to read (here a FIFO nobody writes yet)
/// does not stall the runtime.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_settings_file_does_not_stall_the_runtime_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let settings = format!("[bastions.hub]\nresource_id = \"{HUB}\"\n");
    std::fs::write(&config, &settings).unwrap();
    let daemon = start(dir.path());
    let mut client = bastion_proto::client::connect(&dir.path().join("bastiond.sock"))
        .await
        .unwrap();
    std::fs::remove_file(&config).unwrap();
    nix::unistd::mkfifo(&config, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(SAVE_BLOCKED_FOR);
        std::fs::write(&config, settings).unwrap();
    });

    let reloaded = tokio::spawn(async move { client.reload(ReloadRequest {}).await });
    let mut last = std::time::Instant::now();
    let mut worst = Duration::ZERO;
    while !reloaded.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        worst = worst.max(last.elapsed());
        last = std::time::Instant::now();
    }
    let changes = reloaded.await.unwrap().unwrap().into_inner().changes;
    assert!(changes.is_empty(), "{changes:?}");
    writer.join().unwrap();
    assert!(worst < MAX_STALL, "the runtime stalled for {worst:?}");
    daemon.stop().await;
}

/// Concurrent reloads are serialised and the newest file wins: a reload
/// stuck reading an old version of the file must not overwrite the result
/// of a later reload that read the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_newest_settings_file_wins_concurrent_reloads() {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let v1 = format!("[bastions.hub]\nresource_id = \"{HUB}\"\n");
    let v2 = format!(
        "{v1}[bastions.spoke]\nresource_id = \"{}\"\n",
        HUB.replace("hub", "spoke")
    );
    std::fs::write(&config, &v1).unwrap();
    let daemon = start(dir.path());
    let socket = dir.path().join("bastiond.sock");
    let client = bastion_proto::client::connect(&socket).await.unwrap();

    // Reload A reads a FIFO: it waits there until we write version 1.
    std::fs::remove_file(&config).unwrap();
    nix::unistd::mkfifo(&config, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut a_client = client.clone();
    let a = tokio::spawn(async move { a_client.reload(ReloadRequest {}).await });
    // Opening the FIFO's write end without blocking succeeds once A reads it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut writer = loop {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&config);
        match opened {
            Ok(writer) => break writer,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reload A never read the settings file: {e}"),
        }
    };
    // Version 2 is now the file; reload B comes after A.
    std::fs::rename(&config, dir.path().join("old.fifo")).unwrap();
    std::fs::write(&config, &v2).unwrap();
    let mut b_client = client.clone();
    let mut b = tokio::spawn(async move { b_client.reload(ReloadRequest {}).await });
    // Unserialised, B finishes while A still waits; serialised, B waits for
    // A. Give an unserialised B the time to finish first, then release A.
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut b).await;
    writer.write_all(v1.as_bytes()).unwrap();
    drop(writer);
    a.await.unwrap().unwrap();
    if !b.is_finished() {
        b.await.unwrap().unwrap();
    }

    let mut client = client;
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    let names: Vec<_> = status.bastions.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["hub", "spoke"], "the newest file's bastions");
    drop(client);
    daemon.stop().await;
}

/// Whether a TCP socket on this machine listens on `port` (from /proc/net/tcp).
fn listening_on(port: u16) -> bool {
    const LISTEN: &str = "0A";
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields
            .get(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && fields.get(3) == Some(&LISTEN)
    })
}

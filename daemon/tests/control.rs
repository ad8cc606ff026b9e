//! The daemon's wiring without a Bastion: control socket, forwards that need
//! no tunnel, persistence across a restart, clean shutdown.

use std::path::Path;
use std::time::Duration;

use bastion_proto::v1::{
    AddForwardRequest, ListForwardsRequest, RemoveForwardRequest, StatusRequest, Target,
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    // The port is free once the answer arrives.
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
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
async fn without_bastions_adding_is_a_precondition_error() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let mut client = bastion_proto::client::connect(&dir.path().join("bastiond.sock"))
        .await
        .unwrap();
    let error = client.add_forward(add(free_port(), "")).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    assert!(error.message().contains("[bastions]"), "{error:?}");
    drop(client);
    daemon.stop().await;
}

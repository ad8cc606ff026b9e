//! The Bastion emulator: Entra ID, Azure Resource Manager and the Azure Bastion data
//! plane over real TLS on 127.0.0.1, with a private VNet of test services, a ledger
//! of what it saw and fault switches. Tests, demo and benchmarks all stand on it.
//!
//! Files: `tls` certificates, `tokens` signing, `entra` token endpoint, `arm` bastion
//! lookup, `clusters` the private AKS clusters, `aks` their PKI and kubeconfigs,
//! `arm_aks` their ARM side, `kube_api` their API servers, `dataplane` token
//! POST/DELETE, `sessions` their state, `tunnel` the WebSocket upgrade,
//! `developer` the Developer SKU's `/api/connection` and its data-pod
//! assignments, `relay` the byte pump, `vnet` target services, `ledger`
//! counters, `faults` switches, `vms` the VMs ARM lists, `fake_az` the Azure CLI stand-in, `info` files on
//! disk, `http` response helpers, `server` the listener and router, `latency`
//! the WAN delay line in front of it (with `precise_sleep` its timer).

mod aks;
mod arm;
mod arm_aks;
mod arm_list;
pub mod client;
mod clusters;
mod dataplane;
mod developer;
mod entra;
mod fake_az;
mod faults;
mod http;
mod info;
mod kube_api;
mod latency;
mod ledger;
mod precise_sleep;
mod relay;
mod server;
mod sessions;
mod tls;
mod tokens;
mod tunnel;
mod vms;
mod vnet;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clusters::{API_SERVER_PORT, CLUSTERS, ClusterSpec};
pub use fake_az::{AZ_USER, az_main};
pub use faults::{DropMode, FaultBody, Faults, HandshakeQuirk};
pub use info::EmulatorInfo;
pub use latency::latency_proxy;
pub use ledger::Ledger;
pub use sessions::WS_TOKEN_TTL;
pub use tls::client_config;
pub use vms::{VMS, VmSpec};
pub use vnet::{ECHO_IP, REFUSING_IP, SINK_IP, SOURCE_IP, Services, source_byte};

/// Fixed tenant id of the emulated directory.
pub const TENANT_ID: &str = "72f988bf-0000-0000-0000-00000000beef";
/// Fixed client id of the emulated app registration.
pub const CLIENT_ID: &str = "bastiond-test-client";
/// Subscription the default bastions live in.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-00000000a1b2";
/// A second directory (a customer's or a hub's tenant), with a subscription of its own.
pub const SECOND_TENANT_ID: &str = "c0ffee00-0000-0000-0000-0000000000b2";
/// The second tenant's subscription ([`BastionSpec::in_second_tenant`]).
pub const SECOND_SUBSCRIPTION: &str = "00000000-0000-0000-0000-00000000b0b2";
/// Directories the emulated Entra knows.
pub(crate) const TENANTS: [&str; 2] = [TENANT_ID, SECOND_TENANT_ID];

/// The tenant a subscription belongs to (unknown ones: the default tenant).
pub fn tenant_of(subscription: &str) -> &'static str {
    if subscription.eq_ignore_ascii_case(SECOND_SUBSCRIPTION) {
        SECOND_TENANT_ID
    } else {
        TENANT_ID
    }
}
/// Written last in the state dir: its presence means the emulator is ready.
pub const INFO_FILE: &str = "emulator.json";
/// Entra tokens live 60–90 minutes; one hour by default.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub state_dir: PathBuf,
    /// 0 = OS-chosen.
    pub port: u16,
    /// Default: one Standard bastion "hub".
    pub bastions: Vec<BastionSpec>,
    /// Entra/az token lifetime.
    pub token_lifetime: Duration,
    /// The bastion-emulator binary, used by the fake az; None = no fake az.
    pub emulator_exe: Option<PathBuf>,
    /// WAN mode: the round trip between the emulator and its clients. When
    /// set, the advertised endpoint (`port`, ARM's dnsName, config.toml,
    /// emulator.json, the fake az) is a [`latency_proxy`] in front of the
    /// real listener; the VNet services stay local (they are the Bastion's
    /// neighbours, not the client's). Zero, the default: no proxy.
    pub latency: Duration,
}

impl EmulatorConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            port: 0,
            bastions: vec![BastionSpec::standard("hub")],
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            emulator_exe: None,
            latency: Duration::ZERO,
        }
    }
}

/// One emulated bastion host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BastionSpec {
    /// Name in config.toml `[bastions.<key>]`, e.g. "hub".
    pub key: String,
    /// ARM name, e.g. "bastion-hub".
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    /// "Standard" | "Premium" | "Basic" | "Developer"
    pub sku: String,
    pub enable_tunneling: bool,
    pub enable_ip_connect: bool,
}

/// Which of the emulator's listeners a request came in on. Each is its own
/// `127.0.0.1:PORT`, as each is its own host name in Azure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    /// Entra, ARM, and the data plane of Standard/Premium bastions.
    Main,
    /// A Developer bastion's dnsName: only `POST /api/connection`.
    DeveloperFront,
    /// The data pod `/api/connection` names: token POST/DELETE and `/omni/webtunnel/`.
    DataPod,
}

impl BastionSpec {
    /// name "bastion-<key>", rg "rg-<key>", Standard, tunnelling and IP connect on.
    pub fn standard(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            name: format!("bastion-{key}"),
            subscription: DEFAULT_SUBSCRIPTION.to_owned(),
            resource_group: format!("rg-{key}"),
            sku: "Standard".to_owned(),
            enable_tunneling: true,
            enable_ip_connect: true,
        }
    }

    /// This spec changed by `change` (`BastionSpec::standard("basic").with(|b|
    /// b.sku = "Basic".into())`).
    pub fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    /// A Developer bastion: name "bastion-<key>", rg "rg-<key>", no
    /// "Native client support" or "IP-based connection" flags (the SKU has neither).
    pub fn developer(key: &str) -> Self {
        Self {
            sku: "Developer".to_owned(),
            enable_tunneling: false,
            enable_ip_connect: false,
            ..Self::standard(key)
        }
    }

    /// The same bastion in [`SECOND_SUBSCRIPTION`], of [`SECOND_TENANT_ID`].
    pub fn in_second_tenant(self) -> Self {
        Self {
            subscription: SECOND_SUBSCRIPTION.to_owned(),
            ..self
        }
    }

    /// Developer and QuickConnect bastions serve through a data pod (`/api/connection`).
    pub fn uses_data_pod(&self) -> bool {
        self.sku.eq_ignore_ascii_case("Developer") || self.sku.eq_ignore_ascii_case("QuickConnect")
    }

    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/bastionHosts/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// State every endpoint shares.
pub(crate) struct Shared {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) endpoint: String,
    /// Developer bastions' dnsName (the `/api/connection` front).
    pub(crate) developer_endpoint: String,
    /// The data pod `/api/connection` answers with.
    pub(crate) pod_endpoint: String,
    pub(crate) pods: developer::PodAssignments,
    pub(crate) signer: tokens::Signer,
    pub(crate) faults: Arc<Faults>,
    pub(crate) ledger: ledger::LedgerHandle,
    pub(crate) vnet: vnet::Vnet,
    pub(crate) clusters: aks::Clusters,
    pub(crate) sessions: sessions::Sessions,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// A running emulator; `shutdown` stops every task it started.
pub struct Emulator {
    info: EmulatorInfo,
    shared: Arc<Shared>,
}

impl Shared {
    /// The dnsName ARM reports for `b`: Developer bastions have a front of their own.
    pub(crate) fn dns_name(&self, b: &BastionSpec) -> &str {
        if b.uses_data_pod() {
            &self.developer_endpoint
        } else {
            &self.endpoint
        }
    }
}

/// Binds one advertised listener on 127.0.0.1:`port`; in WAN mode it is a
/// delay line in front of the returned internal listener. Returns the
/// advertised endpoint and the listener to serve.
async fn bind_host(
    port: u16,
    latency: Duration,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<(String, TcpListener)> {
    let advertised = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let endpoint = advertised.local_addr()?.to_string();
    if latency.is_zero() {
        return Ok((endpoint, advertised));
    }
    let internal = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the listener behind the delay line")?;
    let upstream = internal.local_addr()?;
    latency::spawn_latency_proxy(advertised, upstream, latency, tracker, cancel);
    Ok((endpoint, internal))
}

impl Emulator {
    /// Starts serving and writes `state_dir/{ca.pem, config.toml, bin/az, emulator.json}`
    /// (emulator.json last: its presence means ready).
    pub async fn start(cfg: EmulatorConfig) -> anyhow::Result<Emulator> {
        Self::start_with_faults(cfg, |_| {}).await
    }

    /// Like `start`, with `arm` setting faults before `emulator.json` announces readiness
    /// (so no client can get in before them).
    pub async fn start_with_faults(
        cfg: EmulatorConfig,
        arm: impl FnOnce(&Faults),
    ) -> anyhow::Result<Emulator> {
        anyhow::ensure!(
            !cfg.bastions.is_empty(),
            "the emulator needs at least one bastion"
        );
        let dir = &cfg.state_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // A stale emulator.json from an earlier run would announce readiness too early.
        match std::fs::remove_file(dir.join(INFO_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("removing a stale emulator.json");
            }
            _ => {}
        }
        let server_tls = tls::generate().context("generating certificates")?;
        let ca_file = dir.join("ca.pem");
        info::write_atomic(&ca_file, server_tls.ca_pem.as_bytes())?;

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let bound = async {
            let bind = |port| bind_host(port, cfg.latency, &tracker, &cancel);
            anyhow::Ok((bind(cfg.port).await?, bind(0).await?, bind(0).await?))
        };
        let ((endpoint, listener), (developer_endpoint, front), (pod_endpoint, pod)) =
            match bound.await {
                Ok(bound) => bound,
                Err(e) => {
                    // Stops any delay line already started.
                    cancel.cancel();
                    return Err(e);
                }
            };
        let ledger = ledger::LedgerHandle::new();
        let vnet = match vnet::Vnet::start(&tracker, &cancel).await {
            Ok(vnet) => vnet,
            Err(e) => {
                // Stops the delay line and any service already started.
                cancel.cancel();
                return Err(e).context("starting VNet services");
            }
        };
        let clusters = match aks::Clusters::start(&vnet, &ledger, &tracker, &cancel).await {
            Ok(clusters) => clusters,
            Err(e) => {
                cancel.cancel();
                return Err(e).context("starting the managed clusters");
            }
        };

        let info = EmulatorInfo {
            endpoint: endpoint.clone(),
            developer_endpoint: developer_endpoint.clone(),
            pod_endpoint: pod_endpoint.clone(),
            ca_file: ca_file.clone(),
            bastion_resource_id: cfg.bastions[0].resource_id(),
            tenant_id: TENANT_ID.to_owned(),
            client_id: CLIENT_ID.to_owned(),
            client_secret: random_secret(),
            az_path: None,
            config_file: dir.join("config.toml"),
            services: vnet.services(),
        };
        let shared = Arc::new(Shared {
            client_id: info.client_id.clone(),
            client_secret: info.client_secret.clone(),
            endpoint: endpoint.clone(),
            developer_endpoint,
            pod_endpoint,
            pods: developer::PodAssignments::default(),
            signer: tokens::Signer::new(),
            faults: Arc::new(Faults::new(cfg.token_lifetime, cfg.bastions.clone())),
            ledger,
            vnet,
            clusters,
            sessions: sessions::Sessions::default(),
            cancel,
            tracker,
        });
        arm(&shared.faults);
        for (host, listener) in [
            (Host::Main, listener),
            (Host::DeveloperFront, front),
            (Host::DataPod, pod),
        ] {
            server::spawn_accept_loop(shared.clone(), host, listener, server_tls.acceptor.clone());
        }
        let mut emulator = Emulator { info, shared };
        if let Err(e) = emulator.write_files(&cfg) {
            emulator.shared.cancel.cancel();
            return Err(e);
        }
        tracing::info!(endpoint, latency = ?cfg.latency, "emulator ready");
        Ok(emulator)
    }

    fn write_files(&mut self, cfg: &EmulatorConfig) -> anyhow::Result<()> {
        let info = &mut self.info;
        if let Some(exe) = &cfg.emulator_exe {
            let bin = cfg.state_dir.join("bin");
            info.az_path = Some(fake_az::write_script(
                &bin,
                exe,
                &info.endpoint,
                &info.ca_file,
            )?);
        }
        let toml = info::config_toml(&cfg.bastions, &info.endpoint, &info.ca_file);
        info::write_atomic(&info.config_file, toml.as_bytes())?;
        let json = serde_json::to_vec_pretty(&*info)?;
        info::write_atomic(&cfg.state_dir.join(INFO_FILE), &json)
    }

    /// The same as `emulator.json`.
    pub fn info(&self) -> &EmulatorInfo {
        &self.info
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// A snapshot of the counters.
    pub fn ledger(&self) -> Ledger {
        self.shared.ledger.snapshot()
    }

    /// Waits until `pred` holds, woken on every ledger change; the error names `what`
    /// and shows the last ledger.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&Ledger) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Ledger> {
        self.shared.ledger.wait_for(what, pred, timeout).await
    }

    /// Refuses every token minted so far (HTTP 401, ARM and the token
    /// POST alike), as for a password reset; tokens minted later work.
    pub fn revoke_tokens(&self) {
        self.shared.signer.revoke_minted();
    }

    /// Forgets which targets `/api/connection` assigned to the data pod, as
    /// when the service recycles its pods: the pod refuses them until asked again.
    pub fn recycle_data_pods(&self) {
        self.shared.pods.forget_all();
    }

    /// Makes `ip:port` in the VNet reach `to` (e.g. 10.1.0.8:22 -> a real sshd).
    pub fn map_target(&self, ip: IpAddr, port: u16, to: SocketAddr) {
        self.shared.vnet.map(ip, port, to);
    }

    /// Stops listening, closes live tunnels (Close 1001) and waits for every task.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        tracing::info!("emulator stopped");
    }
}

/// An emulator dropped without `shutdown` (say, by a panicking test) still stops
/// listening; only `shutdown` waits for the tasks to finish.
impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// Shaped like an Entra client secret (40 URL-safe characters), random per start.
fn random_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 30]>())
}

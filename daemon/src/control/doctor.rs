//! `Doctor`: the whole path to a target run once, each step timed and, on
//! failure, told what to change ([`crate::control::doctor_hints`]): a fresh
//! credential and token and ARM lookups (no cached answer), then the session,
//! the WebSocket, the target's first bytes and the DELETE through the same
//! [`Connector`] calls and session registry as every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bastion_proto::target::{Target, TargetHost};
use bastion_proto::v1 as proto;
use futures_util::StreamExt as _;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::azure::arm;
use crate::azure::auth::TokenCache;
use crate::azure::bastion_host::BastionHost;
use crate::azure::claims;
use crate::azure::credential::{TokenScope, credential};
use crate::azure::vm_lookup::{VmLookupError, VmNames};
use crate::bastion::session::SessionTokens;
use crate::bastion::tunnel::Connector;
use crate::bastion::websocket::TunnelSocket;
use crate::config::parse_bastion_resource_id;
use crate::control::doctor_hints::{hint, print_bytes};
use crate::error::AzureError;

/// How long the target gets to speak first (an ssh server sends its banner
/// at once); a target that waits for the client is normal, so this is short.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(2);
/// Each step's bound: the doctor reports a hang instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Report {
    steps: Vec<proto::DoctorStep>,
}

impl Report {
    /// Runs one step and records it; `None` when it failed (the run stops).
    async fn step<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        work: impl Future<Output = Result<(T, String), E>>,
        advice: impl FnOnce(&E) -> String,
    ) -> Option<T> {
        let started = Instant::now();
        let result = tokio::time::timeout(STEP_TIMEOUT, work).await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (ok, detail, value) = match result {
            Ok(Ok((value, detail))) => (true, detail, Some(value)),
            Ok(Err(error)) => {
                let advice = advice(&error);
                let detail = if advice.is_empty() {
                    error.to_string()
                } else {
                    format!("{error}; {advice}")
                };
                (false, detail, None)
            }
            Err(_) => (
                false,
                format!(
                    "no answer within {}s; check the network path, HTTPS_PROXY / NO_PROXY",
                    STEP_TIMEOUT.as_secs()
                ),
                None,
            ),
        };
        self.steps.push(proto::DoctorStep {
            name: name.to_string(),
            ok,
            ms,
            detail,
        });
        value
    }

    fn finish(self) -> proto::DoctorResponse {
        proto::DoctorResponse {
            ok: !self.steps.is_empty() && self.steps.iter().all(|s| s.ok),
            steps: self.steps,
        }
    }
}

/// Checks the path to `target` through the bastion `bastion`, step by step.
pub async fn run(
    connector: Arc<Connector>,
    bastion: String,
    target: Target,
    resource_group: String,
) -> proto::DoctorResponse {
    let mut report = Report::default();
    let _ = steps(&mut report, &connector, &bastion, target, &resource_group).await;
    report.finish()
}

async fn steps(
    report: &mut Report,
    connector: &Connector,
    bastion: &str,
    target: Target,
    resource_group: &str,
) -> Option<()> {
    let settings = connector.settings();
    let http = connector.http();
    let kind = settings.auth.credential;
    let entry = connector.bastion(bastion).ok()?;
    let scope = TokenScope::for_bastion(settings, &entry.settings);
    let token = report
        .step(
            "token",
            async {
                let credential = credential(settings, http, &scope)
                    .map_err(|e| AzureError::Precondition(format!("{e:#}")))?;
                let cache = Arc::new(TokenCache::new(
                    credential,
                    kind,
                    settings.cloud.token_scope.clone(),
                ));
                let token = cache.token().await?;
                let detail = match claims::identity(&token) {
                    Some(who) => format!(
                        "{} via {}, expires {}",
                        who.describe(),
                        kind.as_str(),
                        expiry_text(who.expires_at_ms)
                    ),
                    None => format!(
                        "a token from {} (not a JWT: who it names is unknown)",
                        kind.as_str()
                    ),
                };
                Ok::<_, AzureError>((token, detail))
            },
            |e| hint("token", e, kind),
        )
        .await?;

    let resource_manager = &settings.cloud.resource_manager;
    let host = report
        .step(
            "bastion",
            async {
                let host = arm::lookup(http, resource_manager, entry.resource_id(), &token).await?;
                host.check(bastion, &target)?;
                let detail = describe_host(&host);
                Ok::<_, AzureError>((host, detail))
            },
            |e| hint("bastion", e, kind),
        )
        .await?;

    let target = match &target.host {
        TargetHost::Name(name) => {
            let (subscription, _, _) = parse_bastion_resource_id(entry.resource_id())?;
            let rg = Some(resource_group.trim()).filter(|rg| !rg.is_empty());
            let fresh = VmNames::default();
            let id = report
                .step(
                    "vm",
                    async {
                        let id = fresh
                            .resolve(http, resource_manager, &token, subscription, rg, name)
                            .await?;
                        Ok::<_, VmLookupError>((id.clone(), id))
                    },
                    |e| match e {
                        VmLookupError::Arm(e) => hint("vm", e, kind),
                        _ => String::new(),
                    },
                )
                .await?;
            Target {
                host: TargetHost::Vm(id),
                port: target.port,
            }
        }
        _ => target,
    };

    // A Developer bastion's sessions live on the data pod it names.
    let host = match host.uses_data_pod() {
        false => host,
        true => {
            report
                .step(
                    "pod",
                    async {
                        let pod = connector.pod_lookup(entry, &host, &target, &token).await?;
                        let detail = format!("data pod {pod} (POST /api/connection)");
                        Ok::<_, AzureError>((host.on_pod(pod), detail))
                    },
                    |e| hint("pod", e, kind),
                )
                .await?
        }
    };

    // The same session path as every connection: it counts against
    // `max_sessions` and is owned (and deleted) by the session registry.
    let (session, tokens) = report
        .step(
            "session",
            async {
                let deadline = Instant::now() + STEP_TIMEOUT;
                let (session, tokens) = connector
                    .create_session(entry, &host, &target, &token, deadline)
                    .await?;
                let detail = format!("session on node {}", tokens.node_id);
                Ok::<_, AzureError>(((session, tokens), detail))
            },
            |e| hint("session", e, kind),
        )
        .await?;
    // The session is deleted even when the tunnel failed.
    let _ = tunnel_steps(report, connector, &host, &tokens, &target).await;
    report
        .step(
            "delete",
            async {
                let outcome = session
                    .end()
                    .await
                    .map_err(|message| AzureError::Unreachable {
                        what: "deleting the session",
                        message,
                    })?;
                Ok::<_, AzureError>(((), outcome.to_string()))
            },
            |e| hint("delete", e, kind),
        )
        .await
}

/// The WebSocket and the target's first bytes; the socket is closed before the DELETE.
async fn tunnel_steps(
    report: &mut Report,
    connector: &Connector,
    host: &BastionHost,
    tokens: &SessionTokens,
    target: &Target,
) -> Option<()> {
    let kind = connector.settings().auth.credential;
    let mut socket: TunnelSocket = report
        .step(
            "websocket",
            async {
                let socket = connector.upgrade(host, tokens).await?;
                Ok::<_, AzureError>((socket, format!("upgraded at {}", host.dns_name)))
            },
            |e| hint("websocket", e, kind),
        )
        .await?;
    let port = target.port;
    report
        .step(
            "first bytes",
            async {
                let first = tokio::time::timeout(FIRST_BYTES_WAIT, async {
                    loop {
                        match socket.next().await {
                            Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                                return Ok(Some(data));
                            }
                            Some(Ok(Message::Close(_))) | None => return Ok(None),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(AzureError::WebSocket(e.to_string())),
                        }
                    }
                })
                .await;
                let detail = match first {
                    Err(_) => format!(
                        "nothing within {}s: normal for a target that waits for the client \
                         (HTTP, RDP, databases); an ssh server would have sent its banner",
                        FIRST_BYTES_WAIT.as_secs()
                    ),
                    Ok(Ok(Some(data))) => format!(
                        "the target spoke first: {} bytes, {}",
                        data.len(),
                        print_bytes(&data)
                    ),
                    Ok(Ok(None)) => {
                        return Err(AzureError::Precondition(format!(
                            "the Bastion closed the tunnel at once: nothing accepts connections on port {port} \
                             of the target, or a network security group blocks the bastion's subnet"
                        )));
                    }
                    Ok(Err(e)) => return Err(e),
                };
                let _ = socket.close(None).await;
                Ok::<_, AzureError>(((), detail))
            },
            |_| String::new(),
        )
        .await
}

fn describe_host(host: &BastionHost) -> String {
    if host.uses_data_pod() {
        return format!(
            "SKU {}: VMs by name or id, through the data pod {} names",
            host.sku, host.dns_name
        );
    }
    let on = |b: bool| if b { "on" } else { "off" };
    format!(
        "SKU {}, Native client support {}, IP-based connection {}, data plane {}",
        host.sku,
        on(host.tunneling),
        on(host.ip_connect),
        host.dns_name
    )
}

/// "in 59 min" from a Unix time in ms.
fn expiry_text(at_ms: i64) -> String {
    if at_ms == 0 {
        return "at an unknown time".into();
    }
    let left = (at_ms - bastion_proto::time::now_ms()) / 60_000;
    if left >= 0 {
        format!("in {left} min")
    } else {
        format!("{} min ago", -left)
    }
}

//! The Bastion data plane's HTTP side: `POST /api/tokens` (session token exchange,
//! checked as strictly as the real service) and `DELETE /api/tokens/{authToken}`,
//! on the main host for Standard/Premium bastions and on the data pod for
//! Developer ones (only for a target `/api/connection` assigned to it).

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::faults::FaultBody;
use super::http::{Resp, empty, form_field, is_form, message, parse_form, read_body, with_body};
use super::tokens::TokenError;
use super::{BastionSpec, Host, Shared};

const INVALID_IP: &str = "Invalid IP address for connection.";

/// A refusal: HTTP status, reject reason for the ledger, message for the client.
pub(crate) struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    /// Counts the refusal and answers it in the data plane's shape.
    pub(crate) fn answer(self, shared: &Shared) -> Resp {
        let Refusal(status, reason, msg) = self;
        shared.ledger.reject(reason);
        message(status, &msg)
    }
}

pub(crate) fn refuse(status: StatusCode, reason: &'static str, msg: impl Into<String>) -> Refusal {
    Refusal(status, reason, msg.into())
}

pub(crate) async fn create_token(shared: &Shared, host: Host, req: Request<Incoming>) -> Resp {
    if !pause(shared, shared.faults.delay()).await {
        return empty(StatusCode::SERVICE_UNAVAILABLE);
    }
    if let Some(fault) = shared.faults.take_token_post_failure() {
        shared.ledger.reject("injected_token_post_failure");
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return match fault.body {
            FaultBody::Json(msg) => message(status, &msg),
            FaultBody::Html(page) => with_body(status, "text/html;charset=utf-8", page),
            FaultBody::Empty => empty(status),
        };
    }
    if let Some(bytes) = shared.faults.take_huge_token_reply() {
        shared.ledger.reject("injected_huge_token_reply");
        // Zeroed pages cost no memory until read; only what is sent is.
        let mut resp = with_body(StatusCode::OK, "application/json", vec![0u8; bytes]);
        resp.headers_mut().insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
        return resp;
    }
    match exchange(shared, host, req).await {
        Ok(resp) => match pause(shared, shared.faults.reply_delay()).await {
            true => resp,
            false => empty(StatusCode::SERVICE_UNAVAILABLE),
        },
        Err(refusal) => refusal.answer(shared),
    }
}

/// Sleeps `d` (a fault); false when the emulator shuts down meanwhile.
async fn pause(shared: &Shared, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shared.cancel.cancelled() => false,
    }
}

async fn exchange(shared: &Shared, host: Host, req: Request<Incoming>) -> Result<Resp, Refusal> {
    let internal = || {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "json_body",
            "Unexpected internal error",
        )
    };
    if !is_form(req.headers()) {
        return Err(internal());
    }
    let body = read_body(req.into_body()).await.ok_or_else(internal)?;
    let form = parse_form(&body);
    let field = |name| form_field(&form, name);

    let token_tenant = verify_aztoken(shared, field("aztoken").as_deref())?;
    if field("protocol").as_deref() != Some("tcptunnel") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_protocol",
            "Invalid protocol.",
        ));
    }
    let port = field("workloadHostPort")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_port",
                "Invalid port for connection.",
            )
        })?;
    let resource_id = field("resourceId").unwrap_or_default();
    let Target { bastion, ip, by_ip } =
        resolve_target(shared, host, &resource_id, field("hostname").as_deref())?;
    check_tenant(&token_tenant, &bastion)?;
    match host {
        Host::DataPod => check_pod(shared, &bastion, by_ip, &resource_id, port)?,
        _ => check_bastion(&bastion, by_ip)?,
    }
    let route = shared.vnet.route(ip, port).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "unreachable_target",
            format!("Target {ip} is not reachable from this Bastion."),
        )
    })?;
    let target = format!("{ip}:{port}");
    let new = shared.sessions.create(host, route, target.clone());
    shared.ledger.update(|l| {
        l.sessions_created += 1;
        l.live_sessions += 1;
        l.peak_live_sessions = l.peak_live_sessions.max(l.live_sessions);
    });
    tracing::info!(bastion = %bastion.name, %target, node_id = %new.node_id, "session created");
    let expires_on = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    Ok(super::http::json(
        StatusCode::OK,
        &json!({
            "authToken": new.auth_token,
            "username": "",
            "dataSource": "",
            "featureFlags": "EnableTunneling",
            "nodeId": new.node_id,
            "availableDataSources": [],
            "expiresOn": expires_on.unix_timestamp(),
            "websocketToken": new.websocket_token,
        }),
    ))
}

/// Checks the ARM token a data-plane request carries; Ok is its tenant.
pub(crate) fn verify_aztoken(shared: &Shared, aztoken: Option<&str>) -> Result<String, Refusal> {
    let unauthorized = |reason, msg: &str| refuse(StatusCode::UNAUTHORIZED, reason, msg);
    let aztoken = aztoken
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("missing_aztoken", "Access token is missing."))?;
    match shared.signer.verify(aztoken) {
        Ok(claims) => Ok(claims.tid),
        Err(TokenError::Expired) => Err(unauthorized(
            "expired_aztoken",
            "The access token has expired.",
        )),
        Err(TokenError::Revoked) => Err(unauthorized(
            "revoked_aztoken",
            "The access token has been revoked.",
        )),
        Err(_) => Err(unauthorized(
            "invalid_aztoken",
            "The access token is invalid.",
        )),
    }
}

/// The bastion checks the token against its own tenant, as ARM would.
pub(crate) fn check_tenant(token_tenant: &str, bastion: &BastionSpec) -> Result<(), Refusal> {
    if super::tenant_of(&bastion.subscription) == token_tenant {
        return Ok(());
    }
    Err(refuse(
        StatusCode::UNAUTHORIZED,
        "aztoken_wrong_tenant",
        "The access token is from the wrong tenant.",
    ))
}

/// What a resourceId names: the bastion in charge and the target's private IP.
pub(crate) struct Target {
    pub(crate) bastion: BastionSpec,
    pub(crate) ip: IpAddr,
    /// An IP-based connection (bh-hostConnect), which needs `enableIpConnect`.
    pub(crate) by_ip: bool,
}

/// Finds the bastion and target IP a resourceId (and hostname) name. Of the
/// bastions that could serve it, one of the kind `host` serves comes first
/// (a data pod serves Developer bastions, the main host the others).
pub(crate) fn resolve_target(
    shared: &Shared,
    host: Host,
    resource_id: &str,
    hostname: Option<&str>,
) -> Result<Target, Refusal> {
    let invalid = |reason| refuse(StatusCode::NOT_FOUND, reason, INVALID_IP);
    let segs: Vec<&str> = resource_id.split('/').collect();
    let [
        "",
        subs,
        sub,
        rgs,
        rg,
        providers,
        namespace,
        kind,
        name,
        rest @ ..,
    ] = segs.as_slice()
    else {
        return Err(invalid("bad_resource_id"));
    };
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if !(is(subs, "subscriptions") && is(rgs, "resourceGroups") && is(providers, "providers")) {
        return Err(invalid("bad_resource_id"));
    }
    let mut bastions = shared.faults.bastions();
    bastions.sort_by_key(|b| b.uses_data_pod() != (host == Host::DataPod));
    if is(namespace, "Microsoft.Network") && is(kind, "bh-hostConnect") && rest.is_empty() {
        let hostname = hostname.ok_or_else(|| invalid("missing_hostname"))?;
        let ip: IpAddr = name.parse().map_err(|_| invalid("bad_resource_id"))?;
        if hostname != *name {
            return Err(invalid("hostname_mismatch"));
        }
        let bastion = bastions
            .into_iter()
            .find(|b| is(&b.subscription, sub) && is(&b.resource_group, rg))
            .ok_or_else(|| invalid("bad_resource_id"))?;
        return Ok(Target {
            bastion,
            ip,
            by_ip: true,
        });
    }
    // A VM, or an instance of a scale set: what `--target-resource-id` takes;
    // or a managed cluster, whose API server's private endpoint `az aks
    // bastion` reaches the same way. The bastion of its subscription serves it.
    let vm_like = is(namespace, "Microsoft.Compute")
        && match rest {
            [] => is(kind, "virtualMachines"),
            [instances, _] => {
                is(kind, "virtualMachineScaleSets") && is(instances, "virtualMachines")
            }
            _ => false,
        };
    let cluster = is(namespace, "Microsoft.ContainerService")
        && is(kind, "managedClusters")
        && rest.is_empty();
    let not_found = |reason, what: &str| {
        let name = segs.last().copied().unwrap_or_default();
        refuse(
            StatusCode::NOT_FOUND,
            reason,
            format!("{what} {name} was not found."),
        )
    };
    let (ip, subscription) = if vm_like {
        let vm = super::vms::by_resource_id(resource_id)
            .ok_or_else(|| not_found("unknown_vm", "Virtual machine"))?;
        (vm.private_ip, vm.subscription)
    } else if cluster {
        let found = shared
            .clusters
            .find(rg, name)
            .filter(|_| is(sub, super::DEFAULT_SUBSCRIPTION))
            .ok_or_else(|| not_found("unknown_cluster", "Managed cluster"))?;
        (found.spec.private_ip, super::DEFAULT_SUBSCRIPTION)
    } else {
        return Err(invalid("bad_resource_id"));
    };
    let bastion = bastions
        .into_iter()
        .find(|b| b.subscription.eq_ignore_ascii_case(subscription))
        .ok_or_else(|| invalid("bad_resource_id"))?;
    Ok(Target {
        bastion,
        ip: IpAddr::V4(ip),
        by_ip: false,
    })
}

/// SKU and feature flags, as the portal names them.
fn check_bastion(b: &BastionSpec, by_ip: bool) -> Result<(), Refusal> {
    let forbidden = |reason, msg: String| refuse(StatusCode::FORBIDDEN, reason, msg);
    if !(b.sku.eq_ignore_ascii_case("Standard") || b.sku.eq_ignore_ascii_case("Premium")) {
        return Err(forbidden(
            "sku_not_supported",
            format!(
                "Native client tunneling is not supported for Bastion SKU '{}'. Upgrade to Standard or Premium.",
                b.sku
            ),
        ));
    }
    if !b.enable_tunneling {
        return Err(forbidden(
            "tunneling_disabled",
            "Tunneling is disabled for this Bastion. Enable 'Native client support' in the Bastion configuration.".into(),
        ));
    }
    if by_ip && !b.enable_ip_connect {
        return Err(forbidden(
            "ip_connect_disabled",
            "IP based connection is disabled for this Bastion. Enable 'IP-based connection' in the Bastion configuration.".into(),
        ));
    }
    Ok(())
}

/// A data pod serves Developer bastions' VM targets that `/api/connection`
/// assigned to it, nothing else.
fn check_pod(
    shared: &Shared,
    b: &BastionSpec,
    by_ip: bool,
    resource_id: &str,
    port: u16,
) -> Result<(), Refusal> {
    if !b.uses_data_pod() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "pod_wrong_sku",
            format!("Bastion SKU '{}' is not served by this node.", b.sku),
        ));
    }
    if by_ip {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "ip_connect_on_developer",
            super::developer::NO_IP_CONNECT,
        ));
    }
    if !shared.pods.is_assigned(resource_id, port) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "pod_not_assigned",
            "No connection to this target was set up on this node.",
        ));
    }
    Ok(())
}

pub(crate) fn delete_token(
    shared: &Shared,
    host: Host,
    auth_token: &str,
    headers: &HeaderMap,
) -> Resp {
    let node_id = headers
        .get("X-Node-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match shared.sessions.delete(host, auth_token, node_id) {
        Ok(()) => {
            shared.ledger.update(|l| {
                l.deletes += 1;
                l.live_sessions = l.live_sessions.saturating_sub(1);
            });
            tracing::info!(node_id, "session deleted");
            empty(StatusCode::NO_CONTENT)
        }
        Err(reason) => {
            shared.ledger.reject(reason);
            message(StatusCode::NOT_FOUND, "Session not found.")
        }
    }
}

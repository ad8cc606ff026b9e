//! The Bastion data plane's HTTP side: `POST /api/tokens` (session token exchange,
//! checked as strictly as the real service) and `DELETE /api/tokens/{authToken}`.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::faults::FaultBody;
use super::http::{Resp, empty, form_field, is_form, message, parse_form, read_body, with_body};
use super::tokens::TokenError;
use super::{BastionSpec, Shared};

const INVALID_IP: &str = "Invalid IP address for connection.";

/// A refusal: HTTP status, reject reason for the ledger, message for the client.
struct Refusal(StatusCode, &'static str, String);

fn refuse(status: StatusCode, reason: &'static str, msg: impl Into<String>) -> Refusal {
    Refusal(status, reason, msg.into())
}

pub(crate) async fn create_token(shared: &Shared, req: Request<Incoming>) -> Resp {
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
    match exchange(shared, req).await {
        Ok(resp) => match pause(shared, shared.faults.reply_delay()).await {
            true => resp,
            false => empty(StatusCode::SERVICE_UNAVAILABLE),
        },
        Err(Refusal(status, reason, msg)) => {
            shared.ledger.reject(reason);
            message(status, &msg)
        }
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

async fn exchange(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Refusal> {
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

    let unauthorized = |reason, msg: &str| refuse(StatusCode::UNAUTHORIZED, reason, msg);
    let aztoken = field("aztoken")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("missing_aztoken", "Access token is missing."))?;
    match shared.signer.verify(&aztoken) {
        Ok(_) => {}
        Err(TokenError::Expired) => {
            return Err(unauthorized(
                "expired_aztoken",
                "The access token has expired.",
            ));
        }
        Err(_) => {
            return Err(unauthorized(
                "invalid_aztoken",
                "The access token is invalid.",
            ));
        }
    }
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
        resolve_target(shared, &resource_id, field("hostname").as_deref())?;
    check_bastion(&bastion, by_ip)?;
    let route = shared.vnet.route(ip, port).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "unreachable_target",
            format!("Target {ip} is not reachable from this Bastion."),
        )
    })?;
    let target = format!("{ip}:{port}");
    let new = shared.sessions.create(route, target.clone());
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

/// What a resourceId names: the bastion in charge and the target's private IP.
struct Target {
    bastion: BastionSpec,
    ip: IpAddr,
    /// An IP-based connection (bh-hostConnect), which needs `enableIpConnect`.
    by_ip: bool,
}

/// Finds the bastion and target IP a resourceId (and hostname) name.
fn resolve_target(
    shared: &Shared,
    resource_id: &str,
    hostname: Option<&str>,
) -> Result<Target, Refusal> {
    let invalid = |reason| refuse(StatusCode::NOT_FOUND, reason, INVALID_IP);
    let segs: Vec<&str> = resource_id.split('/').collect();
    let ["", subs, sub, rgs, rg, providers, namespace, kind, name] = segs.as_slice() else {
        return Err(invalid("bad_resource_id"));
    };
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if !(is(subs, "subscriptions") && is(rgs, "resourceGroups") && is(providers, "providers")) {
        return Err(invalid("bad_resource_id"));
    }
    let bastions = shared.faults.bastions();
    if is(namespace, "Microsoft.Network") && is(kind, "bh-hostConnect") {
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
    // A resource by its ARM id: the bastion of its subscription reaches its private IP.
    let not_found = |reason, what: &str| {
        refuse(
            StatusCode::NOT_FOUND,
            reason,
            format!("{what} {name} was not found."),
        )
    };
    let in_sub = is(sub, super::DEFAULT_SUBSCRIPTION);
    let ip = if is(namespace, "Microsoft.Compute") && is(kind, "virtualMachines") {
        super::vms::find(rg, name)
            .filter(|_| in_sub)
            .map(|vm| vm.private_ip)
            .ok_or_else(|| not_found("unknown_vm", "Virtual machine"))?
    } else if is(namespace, "Microsoft.ContainerService") && is(kind, "managedClusters") {
        // The API server's private endpoint.
        shared
            .clusters
            .find(rg, name)
            .filter(|_| in_sub)
            .map(|c| c.spec.private_ip)
            .ok_or_else(|| not_found("unknown_cluster", "Managed cluster"))?
    } else {
        return Err(invalid("bad_resource_id"));
    };
    let bastion = bastions
        .into_iter()
        .find(|b| is(&b.subscription, sub))
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

pub(crate) fn delete_token(shared: &Shared, auth_token: &str, headers: &HeaderMap) -> Resp {
    let node_id = headers
        .get("X-Node-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match shared.sessions.delete(auth_token, node_id) {
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

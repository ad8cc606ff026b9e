//! A Developer (or QuickConnect) bastion's `POST /api/connection`: a JSON body
//! naming the VM, its port, the bastion and an ARM token (`connectionType`
//! "nativeclient"), answered with the bare host name of the data pod that will
//! carry the session, the body the Azure CLI uses as is. The answer assigns the
//! target to the pod; the pod's token POST serves assigned targets only.

use std::collections::HashSet;
use std::sync::Mutex;

use http::{Request, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::Value;

use super::Shared;
use super::dataplane::{Refusal, check_tenant, refuse, resolve_target, verify_aztoken};
use super::http::{Resp, read_body, with_body};

/// What a Developer bastion says of IP targets (it has no IP-based connection).
pub(crate) const NO_IP_CONNECT: &str = "IP-based connection is not available for Bastion Developer. Connect to the virtual machine by its resource id.";

/// The body the Azure CLI sends (`developer_sku_helper.py`); fields are checked one by one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionRequest {
    resource_id: Option<String>,
    bastion_resource_id: Option<String>,
    /// A number from the bastion extension, a string from the ssh extension.
    vm_port: Option<Value>,
    az_token: Option<String>,
    connection_type: Option<String>,
}

/// (lowercased target resource id, port) pairs a data pod was assigned.
#[derive(Default)]
pub(crate) struct PodAssignments(Mutex<HashSet<(String, u16)>>);

impl PodAssignments {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, u16)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn assign(&self, resource_id: &str, port: u16) {
        self.lock().insert((resource_id.to_ascii_lowercase(), port));
    }

    pub(crate) fn is_assigned(&self, resource_id: &str, port: u16) -> bool {
        self.lock()
            .contains(&(resource_id.to_ascii_lowercase(), port))
    }

    /// Forgets every assignment, as when the service recycles its pods.
    pub(crate) fn forget_all(&self) {
        self.lock().clear();
    }
}

pub(crate) async fn connection(shared: &Shared, req: Request<Incoming>) -> Resp {
    match assign(shared, req).await {
        Ok(pod) => {
            shared.ledger.update(|l| l.pod_lookups += 1);
            with_body(StatusCode::OK, "text/plain; charset=utf-8", pod)
        }
        Err(refusal) => refusal.answer(shared),
    }
}

async fn assign(shared: &Shared, req: Request<Incoming>) -> Result<String, Refusal> {
    let bad = |reason, msg: &str| refuse(StatusCode::BAD_REQUEST, reason, msg);
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let body = match is_json {
        true => read_body(req.into_body()).await,
        false => None,
    };
    let body: ConnectionRequest = body
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("connection_not_json", "Invalid request body."))?;
    let token_tenant = verify_aztoken(shared, body.az_token.as_deref())?;
    if body.connection_type.as_deref() != Some("nativeclient") {
        return Err(bad("bad_connection_type", "Invalid connection type."));
    }
    let port = match &body.vm_port {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|p| *p != 0)
    .ok_or_else(|| bad("bad_port", "Invalid port for connection."))?;
    let bastion_id = body.bastion_resource_id.unwrap_or_default();
    let bastion = shared
        .faults
        .bastions()
        .into_iter()
        .find(|b| b.resource_id().eq_ignore_ascii_case(&bastion_id))
        .ok_or_else(|| {
            refuse(
                StatusCode::NOT_FOUND,
                "unknown_bastion",
                "Bastion resource not found.",
            )
        })?;
    if !bastion.uses_data_pod() {
        return Err(bad(
            "connection_wrong_sku",
            "This endpoint serves Bastion Developer only.",
        ));
    }
    let resource_id = body.resource_id.unwrap_or_default();
    if resource_id
        .to_ascii_lowercase()
        .contains("/providers/microsoft.network/bh-hostconnect/")
    {
        return Err(bad("ip_connect_on_developer", NO_IP_CONNECT));
    }
    let target = resolve_target(shared, super::Host::DataPod, &resource_id, None)?;
    check_tenant(&token_tenant, &bastion)?;
    if !target
        .bastion
        .resource_id()
        .eq_ignore_ascii_case(&bastion_id)
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "vm_not_behind_bastion",
            "The virtual machine is not reachable from this Bastion.",
        ));
    }
    shared.pods.assign(&resource_id, port);
    tracing::info!(bastion = %bastion.name, port, "data pod assigned");
    Ok(shared.pod_endpoint.clone())
}

//! Azure Resource Manager: `GET .../providers/Microsoft.Network/bastionHosts/{name}`,
//! Bearer-authenticated, path matched case-insensitively as ARM does; the
//! listings (subscriptions, VMs, bastion hosts) are in `arm_list`, managed
//! clusters (GET and the credential POSTs) in `arm_aks`.

use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::http::{Resp, arm_error, json, query_param};
use super::tokens::TokenError;
use super::{BastionSpec, Shared, tenant_of};

/// Where the emulated bastions live; only cosmetic.
const LOCATION: &str = "westeurope";
/// Instances per bastion as ARM reports them (Standard default).
const SCALE_UNITS: u32 = 2;

pub(crate) fn get(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> Resp {
    let tenant = match authorize(shared, uri, headers) {
        Ok(tenant) => tenant,
        Err(refused) => return *refused,
    };
    let path = uri.path().trim_end_matches('/');
    if let Some(resp) = super::arm_list::route(shared, &tenant, path) {
        return resp;
    }
    if let Some(resp) = super::arm_aks::route(shared, &Method::GET, uri, path) {
        return resp;
    }
    get_bastion(shared, path)
}

/// ARM's POST actions: the managed clusters' credential lists.
pub(crate) fn post(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> Resp {
    if let Err(refused) = authorize(shared, uri, headers) {
        return *refused;
    }
    let path = uri.path().trim_end_matches('/');
    super::arm_aks::route(shared, &Method::POST, uri, path).unwrap_or_else(|| {
        shared.ledger.reject("arm_no_such_action");
        arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found in the namespace for api version.",
        )
    })
}

/// Counts the call and checks the bearer token (its tenant against the
/// subscription's, as ARM does) and api-version. Ok is the token's tenant,
/// Err the refusal (boxed: a response is large next to a tenant id).
fn authorize(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> Result<String, Box<Resp>> {
    let ledger = &shared.ledger;
    ledger.update(|l| l.arm_calls += 1);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(bearer) = bearer else {
        ledger.reject("arm_missing_token");
        return Err(Box::new(arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )));
    };
    if shared.faults.take_arm_auth_failure() {
        ledger.reject("injected_arm_401");
        return Err(Box::new(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )));
    }
    let claims = match shared.signer.verify(bearer.trim()) {
        Ok(claims) => claims,
        Err(TokenError::Expired) => {
            ledger.reject("arm_expired_token");
            return Err(Box::new(arm_error(
                StatusCode::UNAUTHORIZED,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            )));
        }
        Err(e) => {
            ledger.reject("arm_invalid_token");
            return Err(Box::new(arm_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                &format!("The access token is invalid: {e}."),
            )));
        }
    };
    let mut segs = uri.path().trim_start_matches('/').split('/');
    let subscription = segs
        .next()
        .filter(|s| s.eq_ignore_ascii_case("subscriptions"))
        .and(segs.next());
    if let Some(sub) = subscription.filter(|s| tenant_of(s) != claims.tid) {
        ledger.reject("arm_wrong_tenant");
        return Err(Box::new(wrong_tenant(&claims.tid, tenant_of(sub))));
    }
    if query_param(uri, "api-version").is_none() {
        ledger.reject("arm_missing_api_version");
        return Err(Box::new(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )));
    }
    Ok(claims.tid)
}

/// ARM's answer to a token of another tenant than the subscription's: 401
/// `InvalidAuthenticationTokenTenant`, with the authority to use in the
/// message and in the `WWW-Authenticate` challenge (what SDKs read).
fn wrong_tenant(token_tenant: &str, wanted: &str) -> Resp {
    let message = format!(
        "The access token is from the wrong issuer 'https://sts.windows.net/{token_tenant}/'. \
         It must match the tenant 'https://sts.windows.net/{wanted}/' associated with this subscription. \
         Please use the authority (URL) 'https://login.windows.net/{wanted}' to get the token. \
         Note, if the subscription is transferred to another tenant there is no impact to the services, \
         but information about new tenant could take time to propagate (up to an hour). \
         If you just transferred your subscription and see this error message, please try back later."
    );
    let mut resp = arm_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationTokenTenant",
        &message,
    );
    let challenge = format!(
        "Bearer authorization_uri=\"https://login.windows.net/{wanted}\", error=\"invalid_token\", \
         error_description=\"The access token is from the wrong issuer.\""
    );
    if let Ok(v) = http::HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn get_bastion(shared: &Shared, path: &str) -> Resp {
    let ledger = &shared.ledger;
    let found = shared
        .faults
        .bastions()
        .into_iter()
        .find(|b| b.resource_id().eq_ignore_ascii_case(path));
    match found {
        Some(b) => {
            tracing::info!(bastion = %b.name, "arm bastion lookup");
            json(StatusCode::OK, &bastion_json(&b, shared.dns_name(&b)))
        }
        None => {
            ledger.reject("arm_not_found");
            let name = path.rsplit('/').next().unwrap_or_default();
            arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!(
                    "The Resource 'Microsoft.Network/bastionHosts/{name}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            )
        }
    }
}

pub(crate) fn bastion_json(b: &BastionSpec, endpoint: &str) -> Value {
    let id = b.resource_id();
    let rg_id = format!(
        "/subscriptions/{}/resourceGroups/{}",
        b.subscription, b.resource_group
    );
    json!({
        "name": b.name,
        "id": id,
        "etag": format!("W/\"{}\"", hex::encode(rand::random::<[u8; 8]>())),
        "type": "Microsoft.Network/bastionHosts",
        "location": LOCATION,
        "sku": { "name": b.sku },
        "properties": {
            "provisioningState": "Succeeded",
            "dnsName": endpoint,
            "scaleUnits": SCALE_UNITS,
            "enableTunneling": b.enable_tunneling,
            "enableIpConnect": b.enable_ip_connect,
            "disableCopyPaste": false,
            "enableFileCopy": false,
            "enableShareableLink": false,
            "enableKerberos": false,
            "ipConfigurations": [{
                "name": "IpConf",
                "id": format!("{id}/bastionHostIpConfigurations/IpConf"),
                "properties": {
                    "provisioningState": "Succeeded",
                    "privateIPAllocationMethod": "Dynamic",
                    "publicIPAddress": { "id": format!("{rg_id}/providers/Microsoft.Network/publicIPAddresses/{}-pip", b.name) },
                    "subnet": { "id": format!("{rg_id}/providers/Microsoft.Network/virtualNetworks/vnet-{}/subnets/AzureBastionSubnet", b.key) }
                }
            }]
        }
    })
}

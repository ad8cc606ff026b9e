//! Entra ID: the v2.0 token endpoint with the client-credentials grant (secret or
//! workload-identity assertion), answering like login.microsoftonline.com does.

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::json;

use super::Shared;
use super::http::{Resp, form_field, is_form, json, parse_form, read_body};
use super::tokens::{audience_for_scope, unix_now};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Serialize)]
struct TokenResponse {
    token_type: &'static str,
    expires_in: u64,
    ext_expires_in: u64,
    access_token: String,
}

/// An AADSTS-style error body.
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Resp {
    let trace_id = hex::encode(rand::random::<[u8; 16]>());
    json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {trace_id}"),
            "error_codes": [code],
            "timestamp": time::OffsetDateTime::now_utc().to_string(),
            "trace_id": trace_id,
            "correlation_id": hex::encode(rand::random::<[u8; 16]>()),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

pub(crate) async fn token(shared: &Shared, tenant: &str, req: Request<Incoming>) -> Resp {
    let ledger = &shared.ledger;
    if !is_form(req.headers()) {
        ledger.reject("entra_not_form");
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    }
    let Some(body) = read_body(req.into_body()).await else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "Bad body.",
        );
    };
    let form = parse_form(&body);
    let field = |name| form_field(&form, name);
    // The app is registered in every emulated tenant (multi-tenant, as a
    // hub's automation often is); each token names the tenant it came from.
    let Some(tenant_id) = super::TENANTS
        .into_iter()
        .find(|t| t.eq_ignore_ascii_case(tenant))
    else {
        ledger.reject("entra_unknown_tenant");
        let msg = format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        );
        return aad_error(StatusCode::BAD_REQUEST, "invalid_request", 90002, &msg);
    };
    if field("grant_type").as_deref() != Some("client_credentials") {
        ledger.reject("entra_bad_grant");
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let client_id = field("client_id").unwrap_or_default();
    if client_id != shared.client_id {
        ledger.reject("entra_unknown_client");
        let msg = format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
        );
        return aad_error(StatusCode::BAD_REQUEST, "unauthorized_client", 700016, &msg);
    }
    let secret_ok = field("client_secret").is_some_and(|s| s == shared.client_secret);
    // Workload identity: any JWT-shaped federated assertion is trusted here.
    let assertion_ok = field("client_assertion_type").as_deref() == Some(ASSERTION_TYPE)
        && field("client_assertion").is_some_and(|a| a.split('.').count() == 3);
    if !secret_ok && !assertion_ok {
        ledger.reject("entra_bad_secret");
        let msg = format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
        );
        return aad_error(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, &msg);
    }
    let scope = field("scope").unwrap_or_default();
    let Some(aud) = audience_for_scope(&scope) else {
        ledger.reject("entra_bad_scope");
        let msg = format!(
            "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
        );
        return aad_error(StatusCode::BAD_REQUEST, "invalid_scope", 70011, &msg);
    };
    let minted = shared.signer.mint(
        aud,
        &client_id,
        None,
        tenant_id,
        shared.faults.token_lifetime(),
    );
    ledger.update(|l| {
        l.entra_tokens += 1;
        *l.tokens_by_tenant.entry(tenant_id.to_owned()).or_default() += 1;
    });
    tracing::info!(client_id, aud, "entra token issued");
    let expires_in = minted.expires_on.saturating_sub(unix_now());
    json(
        StatusCode::OK,
        &TokenResponse {
            token_type: "Bearer",
            expires_in,
            ext_expires_in: expires_in,
            access_token: minted.token,
        },
    )
}

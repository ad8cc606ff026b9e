//! The fake Azure CLI: `<state_dir>/bin/az` execs `bastion-emulator az …`, which
//! parses what azure_identity runs, asks the emulator for a token over a private
//! endpoint (so calls are counted and faults apply) and prints what `az` prints.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::http::{Resp, json, read_body};
use super::tokens::audience_for_scope;
use super::{Shared, TENANT_ID, TENANTS, tenant_of};

/// The emulator-private endpoint the fake az calls.
pub(crate) const AZ_TOKEN_PATH: &str = "/_emulator/az-token";
/// The user the fake `az` is signed in as (the `upn` of its tokens).
pub const AZ_USER: &str = "dev@contoso.example";
const NOT_LOGGED_IN: &str = "ERROR: Please run 'az login' to setup account.";
/// What `az` prints for `--version` (first line is what tools parse).
const AZ_VERSION: &str = "azure-cli                         2.67.0 (bastion-emulator)";
/// Exit status of az for usage errors (argparse).
const EXIT_USAGE: i32 = 2;

#[derive(Serialize, Deserialize)]
struct AzTokenRequest {
    scope: String,
    tenant: Option<String>,
    subscription: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct AzTokenReply {
    access_token: Option<String>,
    expires_on: u64,
    tenant: String,
    subscription: String,
    /// Set when az must fail: the stderr line.
    error: Option<String>,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes `bin/az` (mode 0755) under `state_dir`.
pub(crate) fn write_script(
    bin_dir: &Path,
    exe: &Path,
    endpoint: &str,
    ca_file: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let path = bin_dir.join("az");
    let script = format!(
        "#!/bin/sh\n# Fake Azure CLI written by bastion-emulator.\nexec {} az --endpoint {} --ca-file {} -- \"$@\"\n",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&format!("https://{endpoint}")),
        shell_quote(&ca_file.to_string_lossy()),
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// `POST /_emulator/az-token`: counts the call, applies `fail_az`, mints a token
/// of the tenant `--tenant` or `--subscription` names (the signed-in default:
/// the first tenant).
pub(crate) async fn serve(shared: &Shared, body: hyper::body::Incoming) -> Resp {
    shared.ledger.update(|l| l.az_calls += 1);
    let Some(req) = read_body(body)
        .await
        .and_then(|b| serde_json::from_slice::<AzTokenRequest>(&b).ok())
    else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "bad request"}),
        );
    };
    let asked_by = match (&req.subscription, &req.tenant) {
        (Some(_), _) => "subscription",
        (None, Some(_)) => "tenant",
        (None, None) => "default",
    };
    shared
        .ledger
        .update(|l| *l.az_asked_by.entry(asked_by.to_owned()).or_default() += 1);
    let reply = match check(shared, &req) {
        Ok(Granted {
            aud,
            tenant,
            subscription,
        }) => {
            let minted = shared.signer.mint(
                aud,
                "az-cli-user",
                Some(AZ_USER),
                tenant,
                shared.faults.token_lifetime(),
            );
            shared
                .ledger
                .update(|l| *l.tokens_by_tenant.entry(tenant.to_owned()).or_default() += 1);
            tracing::info!(aud, tenant, "az token issued");
            AzTokenReply {
                access_token: Some(minted.token),
                expires_on: minted.expires_on,
                tenant: tenant.to_owned(),
                subscription,
                error: None,
            }
        }
        Err((reason, msg)) => {
            shared.ledger.reject(reason);
            AzTokenReply {
                access_token: None,
                expires_on: 0,
                tenant: String::new(),
                subscription: String::new(),
                error: Some(msg),
            }
        }
    };
    json(StatusCode::OK, &reply)
}

/// What a token request is granted: audience, tenant, and the subscription az reports.
struct Granted {
    aud: &'static str,
    tenant: &'static str,
    subscription: String,
}

/// The grant, or the reject reason and az's stderr line.
fn check(shared: &Shared, req: &AzTokenRequest) -> Result<Granted, (&'static str, String)> {
    if shared.faults.take_az_failure() {
        return Err(("injected_az_failure", NOT_LOGGED_IN.to_owned()));
    }
    let aud = audience_for_scope(&req.scope).ok_or_else(|| {
        let msg = format!(
            "ERROR: AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
            req.scope
        );
        ("az_bad_scope", msg)
    })?;
    let subscriptions = super::arm_list::subscription_ids(shared);
    let first_in = |tenant: &str| {
        subscriptions
            .iter()
            .find(|s| tenant_of(s) == tenant)
            .cloned()
            .unwrap_or_default()
    };
    let (tenant, subscription) = match (&req.tenant, &req.subscription) {
        (Some(_), Some(_)) => {
            return Err((
                "az_tenant_and_subscription",
                "ERROR: Please specify only one of subscription and tenant, not both".to_owned(),
            ));
        }
        (None, Some(sub)) => {
            let known = subscriptions.iter().find(|s| s.eq_ignore_ascii_case(sub));
            let sub = known.ok_or_else(|| {
                (
                    "az_unknown_subscription",
                    format!(
                        "ERROR: Subscription '{sub}' not found. Check the spelling and casing and try again."
                    ),
                )
            })?;
            (tenant_of(sub), sub.clone())
        }
        (Some(t), None) => {
            let tenant = TENANTS
                .into_iter()
                .find(|known| known.eq_ignore_ascii_case(t))
                .ok_or_else(|| {
                    (
                        "az_unknown_tenant",
                        format!("ERROR: AADSTS90002: Tenant '{t}' not found."),
                    )
                })?;
            (tenant, first_in(tenant))
        }
        (None, None) => (TENANT_ID, first_in(TENANT_ID)),
    };
    Ok(Granted {
        aud,
        tenant,
        subscription,
    })
}

/// What `az account get-access-token` was asked for.
struct AzArgs {
    scope: String,
    tenant: Option<String>,
    subscription: Option<String>,
}

fn parse_args(args: &[String]) -> Result<AzArgs, String> {
    let (cmd, rest) = args.split_at(args.len().min(2));
    if cmd != ["account", "get-access-token"] {
        return Err(format!(
            "'{}' is misspelled or not recognized by the system.",
            args.join(" ")
        ));
    }
    let mut out = AzArgs {
        scope: String::new(),
        tenant: None,
        subscription: None,
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("argument {flag}: expected one argument"))
        };
        match flag.as_str() {
            "-o" | "--output" => {
                let v = value()?;
                if v != "json" {
                    return Err(format!(
                        "argument --output/-o: invalid choice: '{v}' (the fake az only speaks json)"
                    ));
                }
            }
            "--scope" | "--scopes" => out.scope = value()?,
            "--resource" => out.scope = format!("{}/.default", value()?.trim_end_matches('/')),
            "--tenant" | "-t" => out.tenant = Some(value()?),
            "--subscription" | "-s" => out.subscription = Some(value()?),
            "--only-show-errors" => {}
            other => return Err(format!("unrecognized arguments: {other}")),
        }
    }
    if out.scope.is_empty() {
        out.scope = "https://management.core.windows.net//.default".to_owned();
    }
    Ok(out)
}

/// `bastion-emulator az --endpoint E --ca-file F -- ARGS`: returns the exit status.
/// `offset` is the local UTC offset, read before any thread was started.
pub async fn az_main(
    endpoint: &str,
    ca_file: &Path,
    args: &[String],
    offset: time::UtcOffset,
) -> i32 {
    if args.first().is_some_and(|a| a == "--version") {
        println!("{AZ_VERSION}");
        return 0;
    }
    let parsed = match parse_args(args) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("ERROR: {msg}");
            return EXIT_USAGE;
        }
    };
    match fetch(endpoint, ca_file, parsed).await {
        Ok(reply) => match (reply.error, reply.access_token) {
            (None, Some(token)) => {
                println!(
                    "{}",
                    render(
                        &token,
                        reply.expires_on,
                        &reply.subscription,
                        &reply.tenant,
                        offset
                    )
                );
                0
            }
            (err, _) => {
                eprintln!("{}", err.unwrap_or_else(|| NOT_LOGGED_IN.to_owned()));
                1
            }
        },
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            1
        }
    }
}

async fn fetch(endpoint: &str, ca_file: &Path, args: AzArgs) -> anyhow::Result<AzTokenReply> {
    let ca = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(super::tls::client_config(&ca)?)
        .http1_only()
        .build()?;
    let req = AzTokenRequest {
        scope: args.scope,
        tenant: args.tenant,
        subscription: args.subscription,
    };
    let resp = client
        .post(format!("{}{AZ_TOKEN_PATH}", endpoint.trim_end_matches('/')))
        .json(&req)
        .send()
        .await
        .context("contacting the emulator")?
        .error_for_status()?;
    Ok(resp.json().await?)
}

/// The JSON `az account get-access-token -o json` prints (keys sorted, as az does).
fn render(
    token: &str,
    expires_on: u64,
    subscription: &str,
    tenant: &str,
    offset: time::UtcOffset,
) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]"
    );
    let local = time::OffsetDateTime::from_unix_timestamp(expires_on as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    let body = serde_json::json!({
        "accessToken": token,
        "expiresOn": local.format(&format).unwrap_or_default(),
        "expires_on": expires_on,
        "subscription": subscription,
        "tenant": tenant,
        "tokenType": "Bearer",
    });
    serde_json::to_string_pretty(&body).unwrap_or_default()
}

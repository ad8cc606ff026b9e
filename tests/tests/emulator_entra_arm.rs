//! Entra ID's token endpoint, ARM's bastion lookup and its listings
//! (subscriptions, VMs by subscription and resource group, one VM, bastions).

mod common;

use std::time::Duration;

use bastion_tests::emulator::{BastionSpec, DEFAULT_SUBSCRIPTION, client::ARM_SCOPE};
use common::*;
use serde_json::Value;

async fn entra(env: &Env, secret: &str, scope: &str) -> (u16, Value) {
    let info = env.emu.info();
    let url = env
        .client
        .url(&format!("/{}/oauth2/v2.0/token", info.tenant_id));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", info.client_id.as_str()),
        ("client_secret", secret),
        ("scope", scope),
    ];
    let resp = env
        .client
        .http()
        .post(url)
        .form(&form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn arm(env: &Env, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = env.client.http().get(env.client.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_client_credentials() {
    let env = Env::start().await;
    let secret = env.emu.info().client_secret.clone();
    let (status, body) = entra(&env, &secret, ARM_SCOPE).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 3500);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);
    let (status, _) = entra(
        &env,
        &secret,
        "https://management.core.windows.net//.default",
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = entra(&env, "wrong", ARM_SCOPE).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );

    let (status, body) = entra(&env, &secret, "https://graph.microsoft.com/.default").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let l = env.emu.ledger();
    assert_eq!(
        (
            l.entra_tokens,
            l.rejected("entra_bad_secret"),
            l.rejected("entra_bad_scope")
        ),
        (2, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_workload_identity_assertion() {
    let env = Env::start().await;
    let info = env.emu.info();
    let url = env
        .client
        .url(&format!("/{}/oauth2/v2.0/token", info.tenant_id));
    let post = |assertion: &'static str| {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", ARM_SCOPE),
        ];
        env.client.http().post(&url).form(&form).send()
    };
    assert_eq!(post("h.p.s").await.unwrap().status(), 200);
    assert_eq!(post("not-a-jwt").await.unwrap().status(), 401);
    let wrong_tenant = env.client.url("/common-tenant/oauth2/v2.0/token");
    let resp = env
        .client
        .http()
        .post(wrong_tenant)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_bastion_lookup() {
    let env = Env::start_with(
        |c| {
            c.bastions.push(BastionSpec {
                sku: "Basic".into(),
                enable_ip_connect: false,
                ..BastionSpec::standard("spoke")
            })
        },
        |_| {},
    )
    .await;
    let token = env.token().await;
    let id = env.emu.info().bastion_resource_id.clone();
    let (status, body) = arm(&env, &format!("{id}?api-version=2024-01-01"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["type"], "Microsoft.Network/bastionHosts");
    assert_eq!(body["sku"]["name"], "Standard");
    let props = &body["properties"];
    assert_eq!(props["dnsName"], env.emu.info().endpoint.as_str());
    assert_eq!(
        (
            props["enableTunneling"].as_bool(),
            props["enableIpConnect"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(props["provisioningState"], "Succeeded");
    assert!(props["ipConfigurations"].is_array() && props["scaleUnits"].is_number());

    // Case-insensitive path, canonical id back.
    let (status, body) = arm(
        &env,
        &format!("{}?api-version=2024-01-01", id.to_uppercase()),
        Some(&token),
    )
    .await;
    assert_eq!((status, body["id"].as_str()), (200, Some(id.as_str())));

    let spoke = BastionSpec::standard("spoke").resource_id();
    let (_, body) = arm(
        &env,
        &format!("{spoke}?api-version=2024-01-01"),
        Some(&token),
    )
    .await;
    assert_eq!(
        (
            body["sku"]["name"].as_str(),
            body["properties"]["enableIpConnect"].as_bool()
        ),
        (Some("Basic"), Some(false))
    );

    let (status, body) = arm(
        &env,
        &format!("{}x?api-version=2024-01-01", id),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, body) = arm(&env, &id, Some(&token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );
    let (status, _) = arm(&env, &format!("{id}?api-version=2024-01-01"), None).await;
    assert_eq!(status, 401);
    let (status, body) = arm(&env, &format!("{id}?api-version=2024-01-01"), Some("a.b.c")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationToken"))
    );
    env.emu.faults().set_token_lifetime(Duration::ZERO);
    let expired = env.token().await;
    let (status, body) = arm(
        &env,
        &format!("{id}?api-version=2024-01-01"),
        Some(&expired),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("ExpiredAuthenticationToken"))
    );
    assert_eq!(env.emu.ledger().arm_calls, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_over_http_and_config_files() {
    let env = Env::start().await;
    env.token().await;
    let ledger: bastion_tests::emulator::Ledger = env
        .client
        .http()
        .get(env.client.url("/_emulator/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger.entra_tokens, 1);
    let dir = env.dir.path();
    let info = bastion_tests::emulator::EmulatorInfo::load(&dir.join("emulator.json")).unwrap();
    assert_eq!(&info, env.emu.info());
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("[bastions.hub]"), "{config}");
    assert!(config.contains(&format!("resource_manager = \"https://{}\"", info.endpoint)));
    assert!(config.contains("credential = \"azure-cli\""));
    assert!(info.az_path.is_none(), "no emulator_exe: no fake az");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_listings_and_vm_get() {
    let env = Env::start().await;
    let token = env.token().await;
    let sub = format!("/subscriptions/{DEFAULT_SUBSCRIPTION}");
    let names = |body: &Value| -> Vec<String> {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let compute = "providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01";
    let (status, body) = arm(&env, &format!("{sub}/{compute}"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(names(&body), ["vm1", "Web01", "twin", "twin", "db01"]);
    // Paths match case-insensitively, as ARM's do.
    let (status, body) = arm(
        &env,
        &format!("{sub}/RESOURCEGROUPS/rg-data/{compute}"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(names(&body), ["twin", "db01"]);
    assert!(
        body["value"][0]["id"]
            .as_str()
            .unwrap()
            .ends_with("/resourceGroups/rg-data/providers/Microsoft.Compute/virtualMachines/twin")
    );
    let (status, body) = arm(
        &env,
        &format!("{sub}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/WEB01?api-version=2024-07-01"),
        Some(&token),
    )
    .await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Web01")));
    let (status, body) = arm(
        &env,
        &format!("{sub}/resourceGroups/rg-nope/{compute}"),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ResourceGroupNotFound"))
    );
    let (status, _) = arm(&env, &format!("{sub}/{compute}"), None).await;
    assert_eq!(status, 401);

    let (status, body) = arm(&env, "/subscriptions?api-version=2022-12-01", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"][0]["subscriptionId"], DEFAULT_SUBSCRIPTION);
    let (status, body) = arm(
        &env,
        &format!("{sub}/providers/Microsoft.Network/bastionHosts?api-version=2024-01-01"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(names(&body), ["bastion-hub"]);
    assert_eq!(env.emu.ledger().arm_vm_lists, 3);
}

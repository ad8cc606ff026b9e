//! Two tenants: Entra and the fake az issue tokens naming their tenant, ARM
//! refuses a token of another tenant than the subscription's with
//! `InvalidAuthenticationTokenTenant` (and the challenge naming the right
//! authority), and the data plane refuses it too; scale-set instances are
//! listed and reachable by their resource ids.

mod common;

use bastion_tests::emulator::{
    BastionSpec, SECOND_SUBSCRIPTION, SECOND_TENANT_ID, TENANT_ID, VMS, VmSpec,
};
use common::*;
use serde_json::Value;

async fn start() -> Env {
    Env::start_with(
        |c| {
            c.bastions = vec![
                BastionSpec::standard("hub"),
                BastionSpec::standard("far").in_second_tenant(),
            ]
        },
        |_| {},
    )
    .await
}

fn far_id() -> String {
    BastionSpec::standard("far")
        .in_second_tenant()
        .resource_id()
}

fn vm(name: &str) -> &'static VmSpec {
    VMS.iter().find(|v| v.name == name).unwrap()
}

async fn arm_get(env: &Env, path: &str, token: &str) -> reqwest::Response {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = env
        .client
        .url(&format!("{path}{sep}api-version=2024-01-01"));
    env.client
        .http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_refuses_a_token_of_another_tenant_as_arm_does() {
    let env = start().await;
    let home = env.token().await;
    let far = env.client.entra_token_for(SECOND_TENANT_ID).await.unwrap();

    let resp = arm_get(&env, &far_id(), &home).await;
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(&format!(
            "authorization_uri=\"https://login.windows.net/{SECOND_TENANT_ID}\""
        )),
        "{challenge}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenTenant");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "wrong issuer 'https://sts.windows.net/{TENANT_ID}/'"
        )) && message.contains(&format!("'https://login.windows.net/{SECOND_TENANT_ID}'")),
        "{message}"
    );
    assert_eq!(env.emu.ledger().rejected("arm_wrong_tenant"), 1);

    let resp = arm_get(&env, &far_id(), &far).await;
    assert_eq!(resp.status(), 200);
    // The same the other way round.
    let hub = BastionSpec::standard("hub").resource_id();
    assert_eq!(arm_get(&env, &hub, &far).await.status(), 401);

    // Each token lists its own tenant's subscriptions.
    for (token, tenant, sub) in [
        (&far, SECOND_TENANT_ID, SECOND_SUBSCRIPTION),
        (
            &home,
            TENANT_ID,
            bastion_tests::emulator::DEFAULT_SUBSCRIPTION,
        ),
    ] {
        let list: Value = arm_get(&env, "/subscriptions", token)
            .await
            .json()
            .await
            .unwrap();
        let subs: Vec<&str> = list["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subscriptionId"].as_str().unwrap())
            .collect();
        assert_eq!(subs, [sub], "{tenant}");
        assert_eq!(list["value"][0]["tenantId"], tenant);
    }
    let l = env.emu.ledger();
    assert_eq!(
        (
            l.tokens_by_tenant[TENANT_ID],
            l.tokens_by_tenant[SECOND_TENANT_ID]
        ),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_wants_the_bastions_tenant() {
    let env = start().await;
    let home = env.token().await;
    let far = env.client.entra_token_for(SECOND_TENANT_ID).await.unwrap();
    let vmb1 = vm("vmb1").resource_id();
    let form = |token: &str| {
        vec![
            ("resourceId".to_owned(), vmb1.clone()),
            ("protocol".to_owned(), "tcptunnel".to_owned()),
            ("workloadHostPort".to_owned(), "22".to_owned()),
            ("aztoken".to_owned(), token.to_owned()),
        ]
    };
    for (token, status) in [(&home, 401), (&far, 200)] {
        let fields = form(token);
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resp = env.client.post_form(&pairs).await.unwrap();
        assert_eq!(resp.status(), status);
    }
    assert_eq!(env.emu.ledger().rejected("aztoken_wrong_tenant"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_set_instances_are_listed_and_reachable_by_id() {
    let env = start().await;
    let token = env.token().await;
    let sub = bastion_tests::emulator::DEFAULT_SUBSCRIPTION;
    let sets: Value = arm_get(
        &env,
        &format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachineScaleSets"),
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(sets["value"][0]["name"], "web-ss");
    let set_id = sets["value"][0]["id"].as_str().unwrap();
    let instances: Value = arm_get(&env, &format!("{set_id}/virtualMachines"), &token)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = instances["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-ss_0", "web-ss_1"]);
    let id = instances["value"][0]["id"].as_str().unwrap();
    assert_eq!(id, vm("web-ss_0").resource_id());
    // Not among the subscription's VMs, as with ARM's Uniform scale sets.
    let vms: Value = arm_get(
        &env,
        &format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"),
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(!vms.to_string().contains("web-ss"));

    let session = {
        let resp = env
            .client
            .post_form(&[
                ("resourceId", id),
                ("protocol", "tcptunnel"),
                ("workloadHostPort", "2222"),
                ("aztoken", &token),
            ])
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<bastion_tests::emulator::client::SessionTokens>()
            .await
            .unwrap()
    };
    let ws = env
        .client
        .open_ws(&session.websocket_token, &session.node_id)
        .await
        .unwrap();
    let mut ws = echo_through(ws, &payload(5000, 9)).await;
    ws.close(None).await.unwrap();
    assert_eq!(env.client.delete(&session).await.unwrap(), 204);
}

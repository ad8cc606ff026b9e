//! The Developer SKU as the Azure CLI (bastion extension 1.4.3) meets it: ARM
//! names the bastion's own host, `POST /api/connection` there names a data
//! pod, and the session and `/omni/webtunnel/` live on that pod; each host
//! refuses the other's tunnel.

mod common;

use bastion_tests::emulator::client::SessionTokens;
use bastion_tests::emulator::{BastionSpec, DEFAULT_SUBSCRIPTION, VMS};
use common::*;
use serde_json::{Value, json};

/// A Standard "hub" and a Developer "dev" bastion.
async fn start() -> Env {
    Env::start_with(
        |c| c.bastions = vec![BastionSpec::standard("hub"), BastionSpec::developer("dev")],
        |_| {},
    )
    .await
}

fn dev_id() -> String {
    BastionSpec::developer("dev").resource_id()
}

/// vm1 (rg-vms) answers with an echo.
fn vm1() -> String {
    VMS[0].resource_id()
}

fn connection_body(token: &str, vm: &str, port: Value) -> Value {
    json!({
        "resourceId": vm,
        "bastionResourceId": dev_id(),
        "vmPort": port,
        "azToken": token,
        "connectionType": "nativeclient",
    })
}

/// Status and `message` of a data-plane answer.
async fn status_message(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_names_the_developer_front_and_the_pod_carries_the_tunnel() {
    let env = start().await;
    let token = env.token().await;
    let info = env.emu.info().clone();

    let url = env
        .client
        .url(&format!("{}?api-version=2024-01-01", dev_id()));
    let arm: Value = env
        .client
        .http()
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(arm["sku"]["name"], "Developer");
    assert_eq!(
        arm["properties"]["dnsName"],
        info.developer_endpoint.as_str()
    );
    assert_eq!(arm["properties"]["enableTunneling"], false);
    assert_ne!(info.developer_endpoint, info.endpoint);
    assert_ne!(info.pod_endpoint, info.developer_endpoint);

    let (pod, session) = env
        .client
        .developer_session(&token, &dev_id(), &vm1(), 22)
        .await
        .unwrap();
    assert_eq!(pod, info.pod_endpoint, "the answer is the bare pod host");
    let path = format!("/omni/webtunnel/{}", session.websocket_token);
    let ws = env.client.open_ws_at(&pod, &path).await.unwrap();
    let mut ws = echo_through(ws, &payload(10_000, 3)).await;
    ws.close(None).await.unwrap();
    assert_eq!(
        env.client.delete_on(&pod, &session).await.unwrap(),
        http::StatusCode::NO_CONTENT
    );
    let l = env
        .wait("the tunnel closed", |l| l.open_websockets == 0)
        .await;
    assert_eq!(
        (l.pod_lookups, l.sessions_created, l.live_sessions),
        (1, 1, 0)
    );
    assert!(l.rejects.is_empty(), "{:?}", l.rejects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_refuses_the_other_tunnel() {
    let env = start().await;
    let token = env.token().await;
    let info = env.emu.info().clone();

    // A Standard session's token on the Developer path of the main host.
    let standard = env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    let omni = format!("/omni/webtunnel/{}", standard.websocket_token);
    assert!(env.client.open_ws_at(&info.endpoint, &omni).await.is_err());
    assert_eq!(env.emu.ledger().rejected("omni_on_standard"), 1);

    // A pod session's token on the Standard path of the pod.
    let (pod, dev) = env
        .client
        .developer_session(&token, &dev_id(), &vm1(), 22)
        .await
        .unwrap();
    let v2 = format!(
        "/webtunnelv2/{}?X-Node-Id={}",
        dev.websocket_token, dev.node_id
    );
    assert!(env.client.open_ws_at(&pod, &v2).await.is_err());
    assert_eq!(env.emu.ledger().rejected("webtunnelv2_on_pod"), 1);

    // Sessions belong to the host that made them.
    let cross = format!("/omni/webtunnel/{}", standard.websocket_token);
    assert!(env.client.open_ws_at(&pod, &cross).await.is_err());
    assert_eq!(env.emu.ledger().rejected("ws_wrong_host"), 1);
    assert_eq!(
        env.client.delete_on(&pod, &standard).await.unwrap(),
        http::StatusCode::NOT_FOUND
    );
    // The front makes no sessions.
    let resp = env
        .client
        .post_form_on(&info.developer_endpoint, &[("aztoken", &token)])
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(env.emu.ledger().rejected("tokens_on_developer_front"), 1);

    for s in [&standard, &dev] {
        let host = if s.node_id == dev.node_id {
            &pod
        } else {
            &info.endpoint
        };
        delete(&env, host, s).await;
    }
    assert_eq!(env.emu.ledger().live_sessions, 0);
}

async fn delete(env: &Env, host: &str, s: &SessionTokens) {
    assert_eq!(
        env.client.delete_on(host, s).await.unwrap(),
        http::StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_serves_only_what_the_lookup_assigned() {
    let env = start().await;
    let token = env.token().await;
    let pod = env.emu.info().pod_endpoint.clone();
    let form = |vm: &str| {
        vec![
            ("resourceId".to_owned(), vm.to_owned()),
            ("protocol".to_owned(), "tcptunnel".to_owned()),
            ("workloadHostPort".to_owned(), "22".to_owned()),
            ("aztoken".to_owned(), token.clone()),
        ]
    };
    let post = |fields: Vec<(String, String)>| {
        let env = &env;
        let pod = pod.clone();
        async move {
            let pairs: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            status_message(env.client.post_form_on(&pod, &pairs).await.unwrap()).await
        }
    };
    let (status, _) = post(form(&vm1())).await;
    assert_eq!(status, 404);
    assert_eq!(env.emu.ledger().rejected("pod_not_assigned"), 1);

    // A string vmPort (the ssh extension's) is taken too.
    let resp = env
        .client
        .post_connection(&connection_body(&token, &vm1(), json!("22")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), pod);
    let (status, _) = post(form(&vm1())).await;
    assert_eq!(status, 200);

    // Recycled pods forget: the client must ask again.
    env.emu.recycle_data_pods();
    let (status, _) = post(form(&vm1())).await;
    assert_eq!(status, 404);
    assert_eq!(env.emu.ledger().rejected("pod_not_assigned"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_requests_are_checked_like_the_service() {
    let env = start().await;
    let token = env.token().await;
    let ok = connection_body(&token, &vm1(), json!(22));
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let ip_id = format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg-dev/providers/Microsoft.Network/bh-hostConnect/10.1.0.4"
    );
    let cases = [
        (with("azToken", Value::Null), 401, "missing_aztoken"),
        (with("azToken", json!("x.y.z")), 401, "invalid_aztoken"),
        (
            with("connectionType", json!("web")),
            400,
            "bad_connection_type",
        ),
        (with("vmPort", json!(0)), 400, "bad_port"),
        (
            with("bastionResourceId", json!("/subscriptions/x")),
            404,
            "unknown_bastion",
        ),
        (
            with(
                "bastionResourceId",
                json!(BastionSpec::standard("hub").resource_id()),
            ),
            400,
            "connection_wrong_sku",
        ),
        (
            with("resourceId", json!(ip_id)),
            400,
            "ip_connect_on_developer",
        ),
    ];
    for (body, status, reason) in cases {
        let resp = env.client.post_connection(&body).await.unwrap();
        let (got, message) = status_message(resp).await;
        assert_eq!(got, status, "{reason}: {message}");
        assert_eq!(env.emu.ledger().rejected(reason), 1, "{reason}");
    }
    // A form body, as for /api/tokens, is not JSON.
    let url = format!(
        "https://{}/api/connection",
        env.emu.info().developer_endpoint
    );
    let resp = env
        .client
        .http()
        .post(url)
        .form(&[("azToken", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(env.emu.ledger().rejected("connection_not_json"), 1);
    assert_eq!(env.emu.ledger().pod_lookups, 0);
}

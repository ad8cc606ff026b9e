//! `POST /api/tokens` and `DELETE /api/tokens/{authToken}`: every check the real
//! service makes, each with its status, message and ledger reason.

mod common;

use std::time::Duration;

use bastion_tests::emulator::client::BastionClient;
use common::*;
use serde_json::Value;

const SUB: &str = "00000000-0000-0000-0000-00000000a1b2";

/// A valid IP-target form for `ip:port` with `aztoken`.
fn form(client: &BastionClient, aztoken: &str, ip: &str, port: &str) -> Vec<(String, String)> {
    vec![
        ("resourceId".into(), client.ip_resource_id(ip)),
        ("protocol".into(), "tcptunnel".into()),
        ("workloadHostPort".into(), port.into()),
        ("aztoken".into(), aztoken.into()),
        ("hostname".into(), ip.into()),
    ]
}

fn with(mut f: Vec<(String, String)>, key: &str, value: Option<&str>) -> Vec<(String, String)> {
    f.retain(|(k, _)| k != key);
    if let Some(v) = value {
        f.push((key.into(), v.into()));
    }
    f
}

/// Posts `fields`; returns status and the JSON message.
async fn post(env: &Env, fields: &[(String, String)]) -> (u16, String) {
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = env.client.post_form(&pairs).await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_shape() {
    let env = Env::start().await;
    let token = env.token().await;
    let resp = env
        .client
        .post_form(&[
            ("resourceId", &env.client.ip_resource_id("10.1.0.4")),
            ("protocol", "tcptunnel"),
            ("workloadHostPort", "22"),
            ("aztoken", &token),
            ("hostname", "10.1.0.4"),
        ])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let auth = body["authToken"].as_str().unwrap();
    assert_eq!(auth.len(), 64);
    assert!(auth.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(body["nodeId"].as_str().unwrap().starts_with("10."));
    assert!(!body["websocketToken"].as_str().unwrap().is_empty());
    assert!(body.get("featureFlags").is_some() && body.get("expiresOn").is_some());
    let l = env.emu.ledger();
    assert_eq!((l.sessions_created, l.live_sessions), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_body_is_an_internal_error() {
    let env = Env::start().await;
    let token = env.token().await;
    let resp = env
        .client
        .http()
        .post(env.client.url("/api/tokens"))
        .json(&serde_json::json!({"resourceId": env.client.ip_resource_id("10.1.0.4"), "aztoken": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["message"],
        "Unexpected internal error"
    );
    assert_eq!(env.emu.ledger().rejected("json_body"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aztoken_is_checked_and_authorization_header_ignored() {
    let env = Env::start().await;
    let good = env.token().await;
    let base = form(&env.client, &good, "10.1.0.4", "22");
    assert_eq!(
        post(&env, &with(base.clone(), "aztoken", None)).await.0,
        401
    );
    assert_eq!(
        post(&env, &with(base.clone(), "aztoken", Some("abc.def.ghi")))
            .await
            .0,
        401
    );
    let mut tampered = good.clone();
    tampered.insert(good.len() / 2, 'x');
    assert_eq!(
        post(&env, &with(base.clone(), "aztoken", Some(&tampered)))
            .await
            .0,
        401
    );
    // A valid bearer does not stand in for a missing aztoken.
    let resp = env
        .client
        .http()
        .post(env.client.url("/api/tokens"))
        .bearer_auth(&good)
        .form(&with(base.clone(), "aztoken", None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    env.emu.faults().set_token_lifetime(Duration::ZERO);
    let expired = env.token().await;
    let (status, msg) = post(&env, &with(base, "aztoken", Some(&expired))).await;
    assert_eq!(
        (status, msg.as_str()),
        (401, "The access token has expired.")
    );
    let l = env.emu.ledger();
    assert_eq!(l.rejected("missing_aztoken"), 2);
    assert_eq!(l.rejected("invalid_aztoken"), 2);
    assert_eq!(l.rejected("expired_aztoken"), 1);
    assert_eq!(l.sessions_created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_id_and_hostname_rules() {
    let env = Env::start().await;
    let token = env.token().await;
    let base = form(&env.client, &token, "10.1.0.4", "22");
    let invalid = (404, "Invalid IP address for connection.".to_owned());
    assert_eq!(
        post(&env, &with(base.clone(), "hostname", None)).await,
        invalid
    );
    assert_eq!(
        post(&env, &with(base.clone(), "hostname", Some("10.1.0.5"))).await,
        invalid
    );
    let wrong_rg = format!(
        "/subscriptions/{SUB}/resourceGroups/rg-other/providers/Microsoft.Network/bh-hostConnect/10.1.0.4"
    );
    assert_eq!(
        post(&env, &with(base.clone(), "resourceId", Some(&wrong_rg))).await,
        invalid
    );
    assert_eq!(
        post(&env, &with(base.clone(), "resourceId", Some("garbage"))).await,
        invalid
    );
    // Case-insensitive like ARM ids.
    let lower = env.client.ip_resource_id("10.1.0.4").to_lowercase();
    assert_eq!(
        post(&env, &with(base.clone(), "resourceId", Some(&lower)))
            .await
            .0,
        200
    );
    let l = env.emu.ledger();
    assert_eq!(
        (
            l.rejected("missing_hostname"),
            l.rejected("hostname_mismatch"),
            l.rejected("bad_resource_id")
        ),
        (1, 1, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_targets() {
    let env = Env::start().await;
    let token = env.token().await;
    let vm = |name: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/rg-vms/providers/Microsoft.Compute/virtualMachines/{name}"
        )
    };
    let base = with(
        form(&env.client, &token, "10.1.0.4", "22"),
        "hostname",
        None,
    );
    assert_eq!(
        post(&env, &with(base.clone(), "resourceId", Some(&vm("vm1"))))
            .await
            .0,
        200
    );
    assert_eq!(
        post(&env, &with(base, "resourceId", Some(&vm("vm404"))))
            .await
            .0,
        404
    );
    assert_eq!(env.emu.ledger().rejected("unknown_vm"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ip_and_bad_ports() {
    let env = Env::start().await;
    let token = env.token().await;
    let (status, msg) = post(&env, &form(&env.client, &token, "10.9.9.9", "22")).await;
    assert_eq!(
        (status, msg.as_str()),
        (404, "Target 10.9.9.9 is not reachable from this Bastion.")
    );
    for port in ["ssh", "0", "65536", "-1", ""] {
        assert_eq!(
            post(&env, &form(&env.client, &token, "10.1.0.4", port))
                .await
                .0,
            400,
            "port {port:?}"
        );
    }
    let l = env.emu.ledger();
    assert_eq!(
        (l.rejected("unreachable_target"), l.rejected("bad_port")),
        (1, 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sku_and_flags_are_enforced_live() {
    let env = Env::start().await;
    let token = env.token().await;
    let base = form(&env.client, &token, "10.1.0.4", "22");
    let faults = env.emu.faults();
    faults.set_bastion("hub", |b| b.sku = "Basic".into());
    assert_eq!(post(&env, &base).await.0, 403);
    faults.set_bastion("hub", |b| b.sku = "Developer".into());
    assert_eq!(post(&env, &base).await.0, 403);
    faults.set_bastion("hub", |b| {
        b.sku = "Premium".into();
        b.enable_tunneling = false;
    });
    let (status, msg) = post(&env, &base).await;
    assert_eq!(status, 403);
    assert!(msg.contains("Native client support"), "{msg}");
    faults.set_bastion("hub", |b| {
        b.enable_tunneling = true;
        b.enable_ip_connect = false;
    });
    let (status, msg) = post(&env, &base).await;
    assert_eq!(status, 403);
    assert!(msg.contains("IP-based connection"), "{msg}");
    faults.set_bastion("hub", |b| b.enable_ip_connect = true);
    assert_eq!(post(&env, &base).await.0, 200);
    let l = env.emu.ledger();
    assert_eq!(l.rejected("sku_not_supported"), 2);
    assert_eq!(
        (
            l.rejected("tunneling_disabled"),
            l.rejected("ip_connect_disabled")
        ),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_rules() {
    let env = Env::start().await;
    let token = env.token().await;
    let session = env.client.session(&token, "10.1.0.4", 22).await.unwrap();
    let mut wrong = session.clone();
    wrong.node_id = "10.0.0.1".into();
    assert_eq!(env.client.delete(&wrong).await.unwrap(), 404);
    assert_eq!(env.client.delete(&session).await.unwrap(), 204);
    assert_eq!(env.client.delete(&session).await.unwrap(), 404);
    // A deleted session's websocket token is dead too.
    assert!(
        env.client
            .open_ws(&session.websocket_token, &session.node_id)
            .await
            .is_err()
    );
    let l = env.emu.ledger();
    assert_eq!((l.live_sessions, l.deletes), (0, 1));
    assert_eq!(
        (
            l.rejected("delete_wrong_node"),
            l.rejected("delete_unknown"),
            l.rejected("ws_session_deleted")
        ),
        (1, 1, 1)
    );
}

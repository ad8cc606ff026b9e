//! The emulator's private AKS clusters: ARM's managed-cluster GET and
//! listings, the credential POSTs, and the API server behind the Bastion
//! (by the cluster's resource id on 443, or its private endpoint's IP), with
//! a certificate for the private FQDN only.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bastion_tests::bench::bare::Bare;
use bastion_tests::emulator::{API_SERVER_PORT, CLUSTERS, DEFAULT_SUBSCRIPTION as SUB};
use common::*;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const API: &str = "api-version=2024-09-01";

fn cluster_path(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/{name}"
    )
}

async fn arm(env: &Env, method: http::Method, path: &str) -> (u16, Value) {
    let token = env.token().await;
    let resp = env
        .client
        .http()
        .request(method, env.client.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The kubeconfig a credential POST returns, parsed, with its entry name.
async fn credential(
    env: &Env,
    name: &str,
    action: &str,
    query: &str,
) -> (String, serde_norway::Value) {
    let (status, body) = arm(
        env,
        http::Method::POST,
        &format!("{}/{action}?{API}{query}", cluster_path(name)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let [entry] = body["kubeconfigs"].as_array().unwrap().as_slice() else {
        panic!("one kubeconfig expected: {body}")
    };
    let yaml = base64::engine::general_purpose::STANDARD
        .decode(entry["value"].as_str().unwrap())
        .unwrap();
    (
        entry["name"].as_str().unwrap().to_owned(),
        serde_norway::from_slice(&yaml).unwrap(),
    )
}

fn b64_field(v: &serde_norway::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_get_and_list_managed_clusters() {
    let env = Env::start().await;
    let (status, body) = arm(
        &env,
        http::Method::GET,
        &format!("{}?{API}", cluster_path("AKS-PRIVATE")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let spec = &CLUSTERS[0];
    assert_eq!(body["id"], spec.resource_id(SUB));
    assert_eq!(body["type"], "Microsoft.ContainerService/ManagedClusters");
    let props = &body["properties"];
    assert_eq!(props["privateFQDN"], spec.private_fqdn);
    assert_eq!(
        props["apiServerAccessProfile"]["enablePrivateCluster"],
        true
    );
    assert_eq!(props["disableLocalAccounts"], false);
    assert!(props.get("fqdn").is_none(), "no public FQDN: {props}");

    let (status, body) = arm(
        &env,
        http::Method::GET,
        &format!("{}?{API}", cluster_path("aks-entra")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["properties"]["aadProfile"]["managed"], true);

    let list =
        format!("/subscriptions/{SUB}/providers/Microsoft.ContainerService/managedClusters?{API}");
    let (status, body) = arm(&env, http::Method::GET, &list).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["aks-private", "aks-entra"]);

    let (status, body) = arm(
        &env,
        http::Method::GET,
        &format!("{}?{API}", cluster_path("nope")),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, _) = arm(
        &env,
        http::Method::POST,
        &format!("{}/listClusterUserCredential?{API}", cluster_path("nope")),
    )
    .await;
    assert_eq!(status, 404);
    let l = env.emu.ledger();
    assert_eq!(
        (l.arm_cluster_lists, l.rejected("arm_cluster_not_found")),
        (1, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_posts_return_kubeconfigs_as_aks_does() {
    let env = Env::start().await;
    let spec = &CLUSTERS[0];
    let (entry, config) = credential(&env, "aks-private", "listClusterUserCredential", "").await;
    assert_eq!(entry, "clusterUser");
    assert_eq!(config["kind"], "Config");
    assert_eq!(config["current-context"], "aks-private");
    let cluster = &config["clusters"][0];
    assert_eq!(cluster["name"], "aks-private");
    assert_eq!(
        cluster["cluster"]["server"].as_str(),
        Some(spec.server_url().as_str())
    );
    let ca = b64_field(&cluster["cluster"]["certificate-authority-data"]);
    assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let user = &config["users"][0];
    assert_eq!(user["name"], "clusterUser_rg-aks_aks-private");
    assert_eq!(
        config["contexts"][0]["context"]["user"],
        "clusterUser_rg-aks_aks-private"
    );
    assert!(
        user["user"]["token"]
            .as_str()
            .is_some_and(|t| t.len() == 64)
    );
    assert!(
        b64_field(&user["user"]["client-key-data"]).starts_with(b"-----BEGIN PRIVATE KEY-----")
    );

    let (entry, config) = credential(&env, "aks-private", "listClusterAdminCredential", "").await;
    assert_eq!(entry, "clusterAdmin");
    assert_eq!(config["current-context"], "aks-private-admin");
    assert_eq!(
        config["users"][0]["name"],
        "clusterAdmin_rg-aks_aks-private"
    );

    // Entra: kubelogin with format=exec, no local accounts.
    let (_, config) = credential(
        &env,
        "aks-entra",
        "listClusterUserCredential",
        "&format=exec",
    )
    .await;
    let exec = &config["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "kubelogin");
    assert_eq!(exec["args"][0], "get-token");
    let (_, config) = credential(&env, "aks-entra", "listClusterUserCredential", "").await;
    assert_eq!(config["users"][0]["user"]["auth-provider"]["name"], "azure");
    let (status, body) = arm(
        &env,
        http::Method::POST,
        &format!(
            "{}/listClusterAdminCredential?{API}",
            cluster_path("aks-entra")
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disable local accounts"),
        "{body}"
    );
    assert_eq!(env.emu.ledger().arm_cluster_credentials, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bastion_reaches_a_cluster_by_resource_id_on_443_only() {
    let env = Env::start().await;
    let token = env.token().await;
    let id = CLUSTERS[0].resource_id(SUB);
    let post = |port: &'static str, id: String| {
        let (env, token) = (&env, token.clone());
        async move {
            env.client
                .post_form(&[
                    ("resourceId", id.as_str()),
                    ("protocol", "tcptunnel"),
                    ("workloadHostPort", port),
                    ("aztoken", token.as_str()),
                ])
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post("443", id.clone()).await, 200);
    assert_eq!(post("22", id).await, 404);
    assert_eq!(
        post(
            "443",
            CLUSTERS[0]
                .resource_id(SUB)
                .replace("aks-private", "aks-gone")
        )
        .await,
        404
    );
    let l = env.emu.ledger();
    assert_eq!(
        (
            l.rejected("unreachable_target"),
            l.rejected("unknown_cluster")
        ),
        (1, 1)
    );
}

/// A client of the API server reached through `addr` (a tunnel), trusting the
/// cluster CA of `config`, presenting its client certificate when `with_cert`.
fn kube_client(config: &serde_norway::Value, addr: SocketAddr, with_cert: bool) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    let ca = b64_field(&config["clusters"][0]["cluster"]["certificate-authority-data"]);
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let tls = if with_cert {
        let user = &config["users"][0]["user"];
        let certs = CertificateDer::pem_slice_iter(&b64_field(&user["client-certificate-data"]))
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(&b64_field(&user["client-key-data"])).unwrap();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(CLUSTERS[0].private_fqdn, addr)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_answers_as_kube_apiserver_with_a_cert_for_its_private_fqdn() {
    let env = Env::start().await;
    let (_, config) = credential(&env, "aks-private", "listClusterUserCredential", "").await;
    let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
    let bare = Bare::new(env.emu.info()).await.unwrap();
    let addr = bare
        .forward(CLUSTERS[0].private_ip, API_SERVER_PORT, &tracker, &cancel)
        .await
        .unwrap();
    let url = |path: &str| format!("https://{}:{}{path}", CLUSTERS[0].private_fqdn, addr.port());
    let anonymous = kube_client(&config, addr, false);
    let get = |client: &reqwest::Client, path: &str, bearer: Option<&str>| {
        let mut req = client.get(url(path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };

    assert_eq!(
        get(&anonymous, "/healthz", None).await,
        (200, "ok".to_owned())
    );
    let (status, body) = get(&anonymous, "/version?timeout=32s", None).await;
    let version: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, version["gitVersion"].as_str()),
        (200, Some("v1.31.2"))
    );
    assert_eq!(version["major"], "1");
    let (status, body) = get(&anonymous, "/api", None).await;
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, refused["kind"].as_str(), refused["reason"].as_str()),
        (403, Some("Status"), Some("Forbidden"))
    );

    let token = config["users"][0]["user"]["token"].as_str().unwrap();
    let (status, body) = get(&anonymous, "/api", Some(token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["kind"],
        "APIVersions"
    );
    assert_eq!(get(&anonymous, "/api", Some("wrong")).await.0, 401);
    let with_cert = kube_client(&config, addr, true);
    let (status, body) = get(&with_cert, "/apis", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["kind"],
        "APIGroupList"
    );
    assert_eq!(get(&with_cert, "/apis/nope", None).await.0, 404);

    // The certificate names the private FQDN only: 127.0.0.1 does not pass.
    let by_ip = anonymous
        .get(format!("https://127.0.0.1:{}/healthz", addr.port()))
        .send()
        .await;
    let error = format!(
        "{:?}",
        by_ip.expect_err("127.0.0.1 is not on the certificate")
    );
    assert!(
        error.contains("NotValidForName") || error.contains("certificate"),
        "{error}"
    );
    assert_eq!(
        env.emu.ledger().kube_requests,
        7,
        "the 127.0.0.1 handshake never became a request"
    );

    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

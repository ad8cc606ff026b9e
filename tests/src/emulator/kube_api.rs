//! A managed cluster's API server, as reached through its private endpoint:
//! TLS with a certificate for the private FQDN only (signed by the cluster CA
//! of the kubeconfig), client certificates verified against that CA, and the
//! answers of kube-apiserver to what `kubectl version` and `kubectl get --raw`
//! ask: `/version`, `/healthz` (`/livez`, `/readyz`) for anyone, `/api` and
//! `/apis` for an authenticated client, Kubernetes `Status` errors otherwise.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::{Request, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::aks::Cluster;
use super::http::{Resp, json, with_body};
use super::ledger::LedgerHandle;
use super::tls;
use super::vnet::accept_loop;

/// A client that cannot finish a TLS handshake in this long is not coming.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// kube-apiserver also speaks h2; Go's client falls back to HTTP/1.1 when it is
/// not offered, and hyper's HTTP/1.1 server is all this crate builds.
const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Who an unauthenticated request is, in the API server's words.
const ANONYMOUS: &str = "system:anonymous";

/// Binds 127.0.0.1 on an OS-chosen port and serves `cluster`'s API there.
pub(crate) async fn serve(
    cluster: Arc<Cluster>,
    ledger: &LedgerHandle,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let server = cluster.server_certificate()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cluster.ca.cert.der().clone())?;
    // Anonymous clients are let in: /version and /healthz are public on AKS too.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tls::provider(),
    )
    .allow_unauthenticated()
    .build()
    .context("building the client certificate verifier")?;
    let mut config = tls::server_config(&cluster.ca, &server, verifier)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let ledger = ledger.clone();
    accept_loop(listener, tracker, cancel, move |tcp| {
        let (cluster, acceptor, ledger) = (cluster.clone(), acceptor.clone(), ledger.clone());
        async move {
            if let Err(e) = serve_conn(cluster, acceptor, ledger, tcp).await {
                tracing::debug!(error = %e, "API server connection ended with an error");
            }
        }
    });
    Ok(addr)
}

async fn serve_conn(
    cluster: Arc<Cluster>,
    acceptor: TlsAcceptor,
    ledger: LedgerHandle,
    tcp: TcpStream,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await??;
    // The verifier accepted it: a certificate here was signed by the cluster CA.
    let has_client_cert = tls.get_ref().1.peer_certificates().is_some();
    let service = service_fn(move |req| {
        ledger.update(|l| l.kube_requests += 1);
        let resp = answer(&cluster, has_client_cert, &req);
        async move { Ok::<_, Infallible>(resp) }
    });
    http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await?;
    Ok(())
}

/// Who the request authenticates as.
enum Caller {
    Anonymous,
    Authenticated,
    /// Credentials were sent and are wrong: 401, as kube-apiserver answers.
    Refused,
}

fn caller(cluster: &Cluster, has_client_cert: bool, req: &Request<Incoming>) -> Caller {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (has_client_cert, bearer) {
        (true, _) => Caller::Authenticated,
        (false, Some(token)) if cluster.accepts_token(token.trim()) => Caller::Authenticated,
        (false, Some(_)) => Caller::Refused,
        (false, None) => Caller::Anonymous,
    }
}

fn answer(cluster: &Cluster, has_client_cert: bool, req: &Request<Incoming>) -> Resp {
    let path = req.uri().path();
    let caller = caller(cluster, has_client_cert, req);
    tracing::info!(cluster = cluster.spec.name, path, "API server request");
    if let Caller::Refused = caller {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    match path {
        "/healthz" | "/livez" | "/readyz" => {
            with_body(StatusCode::OK, "text/plain; charset=utf-8", "ok")
        }
        "/version" => json(StatusCode::OK, &version(cluster.spec.kubernetes_version)),
        _ if matches!(caller, Caller::Anonymous) => status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("forbidden: User \"{ANONYMOUS}\" cannot get path \"{path}\""),
        ),
        "/api" => json(StatusCode::OK, &api_versions(cluster)),
        "/apis" => json(StatusCode::OK, &api_groups()),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// A Kubernetes `Status` object, the body of every API error.
fn status(code: StatusCode, reason: &str, message: &str) -> Resp {
    json(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {},
            "code": code.as_u16(),
        }),
    )
}

/// `/version`: version.Info of kube-apiserver.
fn version(kubernetes_version: &str) -> Value {
    let mut parts = kubernetes_version.split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": format!("v{kubernetes_version}"),
        "gitCommit": "9a1d2ec55e5ad9e7a1a0a6b0e6bd7d4f5a1c5c3d",
        "gitTreeState": "clean",
        "buildDate": "2024-10-22T20:35:25Z",
        "goVersion": "go1.22.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the legacy group's versions and where clients in the VNet reach it.
fn api_versions(cluster: &Cluster) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{
            "clientCIDR": "0.0.0.0/0",
            "serverAddress": format!("{}:{}", cluster.spec.private_ip, super::clusters::API_SERVER_PORT),
        }],
    })
}

/// `/apis`: a few of the groups every AKS cluster serves.
fn api_groups() -> Value {
    let groups: Vec<Value> = [
        "apps",
        "batch",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
    ]
    .iter()
    .map(|group| {
        let gv = json!({ "groupVersion": format!("{group}/v1"), "version": "v1" });
        json!({ "name": group, "versions": [gv], "preferredVersion": gv })
    })
    .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

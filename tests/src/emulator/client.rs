//! An independent Bastion client that behaves like the Azure CLI's tunnel (form POST
//! with resourceId/hostname, one token per connection, masked binary frames, DELETE
//! at the end). Tests and benchmarks use it to exercise the emulator without bastiond.

use std::sync::Arc;

use anyhow::Context;
use http::HeaderValue;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{EmulatorInfo, tls};

/// A client-side tunnel WebSocket.
pub type ClientWs = WebSocketStream<TlsStream<TcpStream>>;

/// The management scope the daemon asks Entra for.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// What a successful `POST /api/tokens` returns (the fields a client uses).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionTokens {
    pub auth_token: String,
    pub node_id: String,
    pub websocket_token: String,
}

/// Only the node id: the tokens are secrets.
impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct BastionClient {
    info: EmulatorInfo,
    http: reqwest::Client,
    tls: TlsConnector,
}

impl BastionClient {
    pub fn new(info: &EmulatorInfo) -> anyhow::Result<Self> {
        let ca = std::fs::read(&info.ca_file).context("reading the emulator CA")?;
        let config = tls::client_config(&ca)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config.clone())
            .http1_only()
            .build()?;
        Ok(Self {
            info: info.clone(),
            http,
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    pub fn info(&self) -> &EmulatorInfo {
        &self.info
    }

    /// The pooled HTTPS client (trusts the emulator CA, HTTP/1.1 only).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.info.base_url())
    }

    /// A client-credentials token for ARM, as `ClientSecretCredential` gets it.
    pub async fn entra_token(&self) -> anyhow::Result<String> {
        self.entra_token_for(&self.info.tenant_id).await
    }

    /// A client-credentials token of `tenant` for ARM.
    pub async fn entra_token_for(&self, tenant: &str) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Reply {
            access_token: String,
        }
        let url = self.url(&format!("/{tenant}/oauth2/v2.0/token"));
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", &self.info.client_id),
            ("client_secret", &self.info.client_secret),
            ("scope", ARM_SCOPE),
        ];
        let resp = self.http.post(url).form(&form).send().await?;
        let resp = resp.error_for_status().context("entra token request")?;
        Ok(resp.json::<Reply>().await?.access_token)
    }

    /// The resourceId the Azure CLI sends for an IP target behind the first bastion.
    pub fn ip_resource_id(&self, ip: &str) -> String {
        let rg_scope = self
            .info
            .bastion_resource_id
            .split("/providers/")
            .next()
            .unwrap_or_default();
        format!("{rg_scope}/providers/Microsoft.Network/bh-hostConnect/{ip}")
    }

    /// `POST /api/tokens` with exactly these form fields.
    pub async fn post_form(&self, fields: &[(&str, &str)]) -> anyhow::Result<reqwest::Response> {
        self.post_form_on(&self.info.endpoint, fields).await
    }

    /// `POST https://{host}/api/tokens` with exactly these form fields.
    pub async fn post_form_on(
        &self,
        host: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("https://{host}/api/tokens"))
            .form(fields)
            .send()
            .await?)
    }

    /// A Developer bastion's `POST /api/connection` with this JSON body, as
    /// the Azure CLI sends it.
    pub async fn post_connection(
        &self,
        body: &serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("https://{}/api/connection", self.info.developer_endpoint);
        Ok(self.http.post(url).json(body).send().await?)
    }

    /// The Azure CLI's Developer flow up to the tunnel: the data pod for
    /// `vm_id:port` behind `bastion_id`, then the session on that pod.
    pub async fn developer_session(
        &self,
        aztoken: &str,
        bastion_id: &str,
        vm_id: &str,
        port: u16,
    ) -> anyhow::Result<(String, SessionTokens)> {
        let resp = self
            .post_connection(&serde_json::json!({
                "resourceId": vm_id,
                "bastionResourceId": bastion_id,
                "vmPort": port,
                "azToken": aztoken,
                "connectionType": "nativeclient",
            }))
            .await?;
        let status = resp.status();
        let pod = resp.text().await?;
        anyhow::ensure!(status.is_success(), "POST /api/connection: {status}: {pod}");
        let port = port.to_string();
        let resp = self
            .post_form_on(
                &pod,
                &[
                    ("resourceId", vm_id),
                    ("protocol", "tcptunnel"),
                    ("workloadHostPort", &port),
                    ("aztoken", aztoken),
                ],
            )
            .await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "POST /api/tokens on the pod: {status}: {}",
            resp.text().await?
        );
        Ok((pod, resp.json().await?))
    }

    /// The Azure CLI's token exchange for `ip:port`.
    pub async fn session(
        &self,
        aztoken: &str,
        ip: &str,
        port: u16,
    ) -> anyhow::Result<SessionTokens> {
        let resource_id = self.ip_resource_id(ip);
        let port = port.to_string();
        let resp = self
            .post_form(&[
                ("resourceId", &resource_id),
                ("protocol", "tcptunnel"),
                ("workloadHostPort", &port),
                ("aztoken", aztoken),
                ("hostname", ip),
            ])
            .await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "POST /api/tokens: {status}: {}",
            resp.text().await?
        );
        Ok(resp.json().await?)
    }

    /// A TLS connection to the emulator (for raw protocol tests).
    pub async fn tls_connect(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        self.tls_connect_to(&self.info.endpoint).await
    }

    /// A TLS connection to one of the emulator's hosts ("127.0.0.1:PORT").
    pub async fn tls_connect_to(&self, host: &str) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(host).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
        Ok(self.tls.connect(name, tcp).await?)
    }

    /// `GET /webtunnelv2/{token}?X-Node-Id=…` with an RFC 6455 client handshake.
    pub async fn open_ws(&self, websocket_token: &str, node_id: &str) -> anyhow::Result<ClientWs> {
        let path = format!("/webtunnelv2/{websocket_token}?X-Node-Id={node_id}");
        self.open_ws_at(&self.info.endpoint, &path).await
    }

    /// An RFC 6455 client handshake for `wss://{host}{path}` (a data pod's
    /// `/omni/webtunnel/{token}`, say).
    pub async fn open_ws_at(&self, host: &str, path: &str) -> anyhow::Result<ClientWs> {
        let mut req = format!("wss://{host}{path}").into_client_request()?;
        let origin = HeaderValue::from_str(&format!("https://{host}"))?;
        req.headers_mut().insert(http::header::ORIGIN, origin);
        let stream = self.tls_connect_to(host).await?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            req,
            stream,
            Some(WebSocketConfig::default()),
        )
        .await?;
        Ok(ws)
    }

    /// `DELETE /api/tokens/{authToken}` with `X-Node-Id`; returns the status.
    pub async fn delete(&self, session: &SessionTokens) -> anyhow::Result<http::StatusCode> {
        self.delete_on(&self.info.endpoint, session).await
    }

    /// `DELETE https://{host}/api/tokens/{authToken}` with `X-Node-Id`, as
    /// the Azure CLI sends it on every SKU.
    pub async fn delete_on(
        &self,
        host: &str,
        session: &SessionTokens,
    ) -> anyhow::Result<http::StatusCode> {
        let resp = self
            .http
            .delete(format!("https://{host}/api/tokens/{}", session.auth_token))
            .header("X-Node-Id", &session.node_id)
            .send()
            .await?;
        Ok(resp.status())
    }

    /// Token exchange plus WebSocket: a tunnel to `ip:port`.
    pub async fn tunnel(
        &self,
        aztoken: &str,
        ip: &str,
        port: u16,
    ) -> anyhow::Result<(SessionTokens, ClientWs)> {
        let session = self.session(aztoken, ip, port).await?;
        let ws = self
            .open_ws(&session.websocket_token, &session.node_id)
            .await?;
        Ok((session, ws))
    }
}

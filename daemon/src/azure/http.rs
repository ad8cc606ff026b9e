//! The one TLS configuration and the one pooled HTTPS client of the daemon.
//! Roots are the system's plus `tls.ca_file` plus `SSL_CERT_FILE`, so a
//! corporate CA (or the test emulator's) applies to ARM, Entra, the Bastion
//! API and the WebSocket tunnels alike. Proxies come from `HTTPS_PROXY` /
//! `NO_PROXY`, which reqwest reads from the environment.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::AzureError;

/// Reaching ARM or a Bastion takes one or two round trips; beyond this the
/// network is down and the user should hear so instead of waiting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request bound for the small JSON calls we make (ARM GET, Entra
/// token, DELETE); they answer within a second or two. A third of the
/// default `setup_timeout_secs` (30 s), so a request stuck on a connection
/// whose path went silent leaves room for a retry on a fresh one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep pooled connections to the Bastion warm between ssh connections, but
/// not forever (servers drop idle connections after a few minutes anyway).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle keep-alive connections kept per host. A burst of connections ending
/// together (an IDE closing its sessions) sends as many DELETEs at once; the
/// pool keeps enough for the next burst of token POSTs without holding ~1000
/// sockets (and file descriptors) open for the whole idle timeout.
const POOL_MAX_IDLE_PER_HOST: usize = 32;
/// Largest answer read from ARM or a Bastion's token endpoint: the real
/// ones are a few KiB; anything bigger is a broken or hostile server, and
/// reading it whole would grow the daemon's memory without bound.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Only HTTP/1.1 is offered: Bastion sessions hang over HTTP/2.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Builds the TLS client configuration shared by every outbound connection,
/// so TLS sessions resume across token requests and tunnels.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping unreadable system certificate");
    }
    roots.add_parsable_certificates(native.certs);
    let ssl_cert_file = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    if let Some(file) = ssl_cert_file.as_deref().filter(|f| f.is_file()) {
        add_pem_file(&mut roots, file).context("loading SSL_CERT_FILE")?;
    }
    if let Some(file) = ca_file {
        add_pem_file(&mut roots, file).context("loading `tls.ca_file`")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

fn add_pem_file(roots: &mut RootCertStore, file: &Path) -> Result<()> {
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(file)
        .with_context(|| format!("cannot read {}", file.display()))?
    {
        let cert = cert.with_context(|| format!("bad PEM in {}", file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("bad certificate in {}", file.display()))?;
        added += 1;
    }
    anyhow::ensure!(added > 0, "no certificates in {}", file.display());
    Ok(())
}

/// The pooled HTTPS client for ARM, the Bastion API and azure_identity.
pub fn client(tls: &rustls::ClientConfig) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bastiond/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTPS client")
}

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the answer is larger than {} KiB and was not read further (a proxy or the wrong endpoint answering?)",
        limit / 1024
    )]
    TooLarge { limit: usize },
    #[error(transparent)]
    Read(#[from] reqwest::Error),
}

impl BodyError {
    /// The error of a request for `what` whose answer could not be read.
    pub fn into_azure(self, what: &'static str) -> AzureError {
        match self {
            BodyError::Read(e) => AzureError::unreachable(what, &e),
            too_large @ BodyError::TooLarge { .. } => AzureError::TooLarge {
                what,
                message: too_large.to_string(),
            },
        }
    }
}

/// Reads `response`'s body, up to `limit` bytes; beyond that it stops
/// reading (the connection is dropped, not pooled) and fails.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    let too_large = BodyError::TooLarge { limit };
    if response
        .content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit))
    {
        return Err(too_large);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

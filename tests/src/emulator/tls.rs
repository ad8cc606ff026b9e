//! Certificates and TLS configs: a CA and a server certificate for 127.0.0.1 and
//! localhost, generated at every start; ALPN http/1.1 only, like the real Bastion.
//! The helpers (`Ca`, `Ca::issue`) also mint each managed cluster's PKI (`cluster_pki`).

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::ring;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Certificates are valid from a day before start (tolerates clock skew) for this long.
const CERT_VALIDITY: time::Duration = time::Duration::days(30);
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The generated CA (PEM) and an acceptor presenting the server certificate.
pub(crate) struct ServerTls {
    pub(crate) ca_pem: String,
    pub(crate) acceptor: TlsAcceptor,
}

/// A certificate authority generated at start: its certificate and what signs with it.
pub(crate) struct Ca {
    pub(crate) cert: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate issued by a [`Ca`], with its key.
pub(crate) struct Issued {
    pub(crate) cert: Certificate,
    pub(crate) key: KeyPair,
}

impl Issued {
    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// What an issued certificate is for.
pub(crate) enum Usage {
    /// A TLS server for these DNS names or IP addresses.
    Server(Vec<String>),
    /// A TLS client; `organization` is the group Kubernetes reads from it.
    Client { organization: &'static str },
}

fn validity() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    (not_before, not_before + CERT_VALIDITY)
}

impl Ca {
    pub(crate) fn new(common_name: &str) -> anyhow::Result<Ca> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = validity();
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    pub(crate) fn issue(&self, common_name: &str, usage: Usage) -> anyhow::Result<Issued> {
        let (names, purpose, organization) = match usage {
            Usage::Server(names) => (names, ExtendedKeyUsagePurpose::ServerAuth, None),
            Usage::Client { organization } => (
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
                Some(organization),
            ),
        };
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(organization) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        (params.not_before, params.not_after) = validity();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert, key })
    }
}

/// A rustls server config with the ring provider presenting `issued` (and its CA).
pub(crate) fn server_config(
    ca: &Ca,
    issued: &Issued,
    client_auth: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> anyhow::Result<rustls::ServerConfig> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_auth)
        .with_single_cert(
            vec![issued.cert.der().clone(), ca.cert.der().clone()],
            issued.key_der(),
        )
        .context("building the TLS server config")
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

pub(crate) fn generate() -> anyhow::Result<ServerTls> {
    let ca = Ca::new("bastion-emulator test CA")?;
    let server = ca.issue(
        "bastion-emulator",
        Usage::Server(vec!["127.0.0.1".into(), "localhost".into()]),
    )?;
    let mut config = server_config(
        &ca,
        &server,
        rustls::server::WebPkiClientVerifier::no_client_auth(),
    )?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(ServerTls {
        ca_pem: ca.cert.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

/// A client config trusting only the emulator's CA (PEM), ring provider, ALPN http/1.1:
/// what the fake az and the tests use.
pub fn client_config(ca_pem: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.context("parsing the CA PEM")?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

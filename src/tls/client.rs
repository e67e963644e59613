//! The client side: a TLS stream to a gateway, trusted by a pinned SHA-256 fingerprint of its
//! leaf certificate, by a CA file, or by the system's CA bundle. The check is part of the
//! handshake, so nothing of the HTTP request (which carries the token) is sent to a server
//! that fails it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How a client decides to trust the gateway's certificate (`clawgate call --fingerprint`,
/// `--ca`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The expected SHA-256 fingerprint of the leaf certificate (hex, `:` allowed).
    pub fingerprint: Option<String>,
    /// A PEM file of the CA certificates to trust.
    pub ca_file: Option<PathBuf>,
}

impl TlsOptions {
    /// Whether any option is set.
    pub fn is_set(&self) -> bool {
        self.fingerprint.is_some() || self.ca_file.is_some()
    }
}

/// The trust decided from [`TlsOptions`].
#[derive(Debug, Clone)]
pub enum ClientTrust {
    /// Exactly this leaf certificate (its SHA-256), whatever its names and issuer.
    Fingerprint([u8; 32]),
    /// Certificates chaining to these roots, for the host name of the URL.
    Roots(Arc<RootCertStore>),
}

/// Where the system's CA bundle is looked for when no option is given (after `SSL_CERT_FILE`).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

impl ClientTrust {
    /// The trust `options` ask for: the fingerprint, else the CA file, else the system bundle.
    pub fn from_options(options: &TlsOptions) -> Result<Self, String> {
        if options.fingerprint.is_some() && options.ca_file.is_some() {
            return Err("give either a fingerprint or a CA file, not both".into());
        }
        if let Some(hex) = &options.fingerprint {
            return parse_fingerprint(hex).map(Self::Fingerprint);
        }
        if let Some(file) = &options.ca_file {
            return roots_from(file).map(Self::Roots);
        }
        let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let bundle = env
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                "no CA bundle found on this system: pass --fingerprint HEX (the gateway logs it) or --ca FILE".to_string()
            })?;
        roots_from(&bundle).map(Self::Roots)
    }
}

/// Parses a SHA-256 fingerprint: 64 hex digits, in either case, optionally with `:` between
/// bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let clean: String = text.trim().chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&clean, &mut out).map_err(|_| {
        format!("found {text:?}, expected a SHA-256 fingerprint: 64 hex digits (the gateway logs it at start)")
    })?;
    Ok(out)
}

fn roots_from(file: &Path) -> Result<Arc<RootCertStore>, String> {
    let certs = super::read_certs(file)?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable CA certificate", file.display()));
    }
    Ok(Arc::new(roots))
}

/// Accepts exactly one leaf certificate, by its SHA-256; the handshake's signatures are still
/// checked against that certificate's key. A mismatch is kept to be reported.
#[derive(Debug)]
struct Pinned {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
    presented: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = super::fingerprint(end_entity);
        if presented == hex::encode(self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(presented);
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Makes the TLS connection over `tcp` to `host` (the URL's host: a name or an IP address),
/// checking the certificate as `trust` says. Returns the stream once the handshake is done;
/// the error of a pinned fingerprint that does not match names both fingerprints.
pub async fn connect(
    tcp: TcpStream,
    host: &str,
    trust: &ClientTrust,
) -> Result<TlsStream<TcpStream>, String> {
    let provider = super::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let presented = Arc::new(Mutex::new(None));
    let mut config = match trust {
        ClientTrust::Fingerprint(expected) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                expected: *expected,
                provider,
                presented: presented.clone(),
            }))
            .with_no_client_auth(),
        ClientTrust::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match connector.connect(name, tcp).await {
        Ok(stream) => Ok(stream),
        Err(err) => {
            let mismatch = presented.lock().ok().and_then(|mut p| p.take());
            match (mismatch, trust) {
                (Some(presented), ClientTrust::Fingerprint(expected)) => Err(format!(
                    "TLS fingerprint mismatch: expected {}, the server presented {presented}; nothing was sent",
                    hex::encode(expected)
                )),
                _ => Err(format!("TLS handshake failed: {err}")),
            }
        }
    }
}

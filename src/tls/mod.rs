//! TLS with rustls (the `ring` provider only): the gateway's certificate (PEM files reloaded
//! when they change, or a self-signed one made once with rcgen), its SHA-256 fingerprint, and
//! the client side that `clawgate call` uses (a pinned fingerprint or a CA file).
//!
//! This module knows nothing of the configuration: the gateway resolves `[gateway.tls]` into
//! file paths and hands them here.

pub mod client;
pub mod server;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

pub use client::{ClientTrust, TlsOptions};
pub use server::{ServerTls, self_signed};

/// The one crypto provider of both sides.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The fingerprint of a DER certificate: SHA-256, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Reads every certificate of a PEM file (the leaf first). The error names the file and what
/// is wrong with it.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a valid PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected a PEM `-----BEGIN CERTIFICATE-----` block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{} holds no private key (expected a PEM `-----BEGIN PRIVATE KEY-----` block)",
            path.display()
        ),
        other => format!("{} is not a valid PEM file: {other}", path.display()),
    })
}

/// Loads a certificate chain and its key and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let certs = read_certs(cert)?;
    let der = read_key(key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("{}: unusable private key: {e}", key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(format!(
                "the key in {} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ))
        }
        Err(e) => Err(format!("{}: unusable certificate: {e}", cert.display())),
    }
}

//! The gateway's side: the certificate served (swapped without a restart when its files
//! change), the acceptor, and the self-signed certificate made once into `<dataDir>/tls/`.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are looked at.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The certificate served now and its fingerprint.
struct Served {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

/// The gateway's TLS state: the certificate files, the certificate served, and the
/// [`ResolvesServerCert`] that hands it to every handshake.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    served: ArcSwap<Served>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl ResolvesServerCert for ServerTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served.load().key.clone())
    }
}

/// What identifies a version of a file without reading it.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl ServerTls {
    /// Loads the certificate chain in `cert` and its key in `key` (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, String> {
        let pair = super::load_pair(cert, key)?;
        Ok(Arc::new(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            served: ArcSwap::from_pointee(served(pair)),
        }))
    }

    /// The SHA-256 fingerprint of the leaf certificate served now (lowercase hex).
    pub fn fingerprint(&self) -> String {
        self.served.load().fingerprint.clone()
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// An acceptor serving the current certificate (TLS 1.3 and 1.2, ALPN `http/1.1`).
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, String> {
        let mut config = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Loads the files again; on success the new certificate is served from the next
    /// handshake on. A bad pair leaves the old certificate in place. Returns the new
    /// fingerprint.
    pub fn reload(&self) -> Result<String, String> {
        let pair = super::load_pair(&self.cert_path, &self.key_path)?;
        let next = served(pair);
        let fingerprint = next.fingerprint.clone();
        self.served.store(Arc::new(next));
        Ok(fingerprint)
    }

    /// Watches the files (their modification time and size, every second) until `stop`, and
    /// reloads them once a change has settled (the same for two looks in a row, so a cert and
    /// a key written one after the other are read as a pair). A bad new pair is logged at WARN
    /// once and the old certificate kept.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let look = |tls: &Self| (stamp(&tls.cert_path), stamp(&tls.key_path));
        let mut loaded = look(&self);
        let mut previous = loaded;
        let mut failed = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            let now = look(&self);
            let settled = now == previous;
            previous = now;
            if !settled || now == loaded || failed == Some(now) {
                continue;
            }
            let tls = self.clone();
            let result = tokio::task::spawn_blocking(move || tls.reload())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match result {
                Ok(fingerprint) => {
                    loaded = now;
                    failed = None;
                    tracing::info!(
                        cert = %self.cert_path.display(),
                        fingerprint_sha256 = %fingerprint,
                        "TLS certificate reloaded; fingerprint (SHA-256) {fingerprint}"
                    );
                }
                Err(err) => {
                    failed = Some(now);
                    tracing::warn!(%err, "the changed TLS certificate files cannot be used; still serving the previous certificate");
                }
            }
        }
    }
}

fn served(pair: CertifiedKey) -> Served {
    let fingerprint = pair
        .cert
        .first()
        .map(|c| super::fingerprint(c))
        .unwrap_or_default();
    Served {
        key: Arc::new(pair),
        fingerprint,
    }
}

/// The names a self-signed certificate is made for: `localhost`, the host name and
/// `<host>.local`, the loopback addresses and each of `addrs` that is not unspecified.
pub fn names_for(addrs: &[IpAddr]) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Some(host) = host_name() {
        names.push(format!("{host}.local"));
        names.push(host);
    }
    let loopback: [IpAddr; 2] = [[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    for ip in addrs
        .iter()
        .filter(|ip| !ip.is_unspecified())
        .chain(&loopback)
    {
        names.push(ip.to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// The machine's host name, when it is a valid DNS label sequence.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_string();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(name)
}

/// The self-signed certificate of `dir` (`cert.pem`, `key.pem`): made for `names` the first
/// time, reused as it is afterwards. The key file is written with mode 0600, the directory
/// with 0700. Returns the two paths.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key_pair =
        rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a TLS key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a certificate for {names:?}: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "clawgate self-signed");
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    write_new(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert, certificate.pem().as_bytes(), 0o644)?;
    tracing::info!(dir = %dir.display(), ?names, "made a self-signed TLS certificate");
    Ok((cert, key))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Writes `bytes` to `path` through a temporary file renamed over it, created with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        // A leftover from a crash may have another mode: start from nothing.
        let _ = std::fs::remove_file(&tmp);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

//! TLS on the gateway's port, as a client sees it: a self-signed certificate pinned by its
//! fingerprint (`clawgate call --fingerprint`), certificate files trusted through `--ca` and
//! replaced while the gateway runs, plain clients refused, bad configurations refused at
//! start, and a wrong pin refused before any byte of the request (the token) is sent.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::common::{Gateway, Launcher};

const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

/// Runs `clawgate call` with `args` (off the async runtime); success, stdout, stderr.
async fn call(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .arg("call")
            .args(&args)
            .env_remove("CLAWGATE_TOKEN")
            .env_remove("CLAWGATE_URL")
            .output()
            .expect("run clawgate call");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `gateway.status` over wss:// pinned to `fp`.
async fn status_pinned(url: &str, fp: &str) -> Value {
    let (ok, out, err) = call(args(&["--url", url, "--fingerprint", fp, "gateway.status"])).await;
    assert!(ok, "pinned call failed: {err}");
    serde_json::from_str(&out).expect("status JSON")
}

/// The fingerprint the gateway logged at start.
fn logged_fingerprint(gw: &Gateway) -> String {
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("INFO") && l.contains("TLS on"))
        .unwrap_or_else(|| panic!("no TLS line in the log: {log}"));
    let at = line.find("fingerprint_sha256=").expect("the field") + "fingerprint_sha256=".len();
    line[at..at + 64].to_string()
}

/// SHA-256 of the DER of the first certificate of a PEM file.
fn file_fingerprint(path: &Path) -> String {
    let der = CertificateDer::from_pem_file(path).expect("a PEM certificate");
    hex::encode(Sha256::digest(der.as_ref()))
}

fn tls_gateway(data_dir: &Path, config: &str) -> Gateway {
    Launcher::on(data_dir)
        .config(config)
        .env("RUST_LOG", "info")
        .start()
}

#[tokio::test]
async fn self_signed_certificate_is_pinned_by_its_fingerprint_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut gw = tls_gateway(&data, "[gateway.tls]\nself_signed = true\n");
    assert!(gw.url.starts_with("wss://"), "{}", gw.url);
    let logged = logged_fingerprint(&gw);
    let cert = data.join("tls/cert.pem");
    assert_eq!(file_fingerprint(&cert), logged);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("tls/key.pem"))
            .expect("key.pem")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key.pem mode {mode:o}");
    }

    let status = status_pinned(&gw.url, &logged).await;
    assert_eq!(status["tls"]["fingerprintSha256"], logged.as_str());
    // Upper case and colons name the same fingerprint.
    let colons: Vec<String> = logged
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    status_pinned(&gw.url, &colons.join(":")).await;

    // A wrong pin: refused, both fingerprints named, non-zero exit.
    let wrong = format!(
        "{}{}",
        if &logged[..2] == "00" { "11" } else { "00" },
        &logged[2..]
    );
    let (ok, out, err) = call(args(&[
        "--url",
        &gw.url,
        "--fingerprint",
        &wrong,
        "gateway.status",
    ]))
    .await;
    assert!(!ok, "a wrong pin was accepted: {out}");
    assert!(err.contains("fingerprint mismatch"), "{err}");
    assert!(err.contains(&wrong) && err.contains(&logged), "{err}");

    // The port speaks TLS only: a plain WebSocket client gets nowhere, nor plain HTTP.
    let plain = gw.url.replacen("wss://", "ws://", 1);
    let (ok, _, err) = call(args(&["--url", &plain, "gateway.health"])).await;
    assert!(!ok, "a plain client was served");
    assert!(!err.is_empty());
    assert!(plain_http_refused(gw.addr).await);
    // And a pin on a plain URL is a usage error.
    let (ok, _, err) = call(args(&[
        "--url",
        &plain,
        "--fingerprint",
        &logged,
        "gateway.health",
    ]))
    .await;
    assert!(!ok && err.contains("wss://"), "{err}");

    // The second start reuses the certificate.
    gw.terminate();
    let gw = tls_gateway(&data, "[gateway.tls]\nself_signed = true\n");
    assert_eq!(logged_fingerprint(&gw), logged);
    let status = status_pinned(&gw.url, &logged).await;
    assert_eq!(status["tls"]["fingerprintSha256"], logged.as_str());
}

/// Whether a plain HTTP request to the TLS port goes unanswered (no HTTP response comes back).
async fn plain_http_refused(addr: SocketAddr) -> bool {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    !buf.starts_with(b"HTTP/")
}

/// A CA and a leaf for `127.0.0.1` and `localhost` signed by it, as PEM.
struct Issued {
    cert_pem: String,
    key_pem: String,
    fingerprint: String,
}

fn make_ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "clawgate test CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA");
    (rcgen::Issuer::new(params, key), cert.pem())
}

fn issue(ca: &rcgen::Issuer<'static, rcgen::KeyPair>) -> Issued {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    let cert = params.signed_by(&key, ca).expect("leaf");
    Issued {
        fingerprint: hex::encode(Sha256::digest(cert.der().as_ref())),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn certificate_files_are_trusted_through_a_ca_and_reloaded_when_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let (ca, ca_pem) = make_ca();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("ca");
    let first = issue(&ca);
    std::fs::write(data.join("server.pem"), &first.cert_pem).expect("cert");
    std::fs::write(data.join("server.key"), &first.key_pem).expect("key");
    // Paths relative to the data directory.
    let gw = tls_gateway(
        &data,
        "[gateway.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n",
    );
    assert_eq!(logged_fingerprint(&gw), first.fingerprint);
    let ca_arg = ca_file.display().to_string();
    let (ok, out, err) = call(args(&["--url", &gw.url, "--ca", &ca_arg, "gateway.status"])).await;
    assert!(ok, "--ca call failed: {err}");
    let status: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        status["tls"]["fingerprintSha256"],
        first.fingerprint.as_str()
    );
    // The localhost name is in the certificate too.
    let by_name = format!("wss://localhost:{}/", gw.addr.port());
    let (ok, _, err) = call(args(&[
        "--url",
        &by_name,
        "--ca",
        &ca_arg,
        "gateway.health",
    ]))
    .await;
    assert!(ok, "--ca call by name failed: {err}");
    // Another CA does not vouch for it.
    let (_, other_pem) = make_ca();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_pem).expect("other ca");
    let (ok, _, err) = call(args(&[
        "--url",
        &gw.url,
        "--ca",
        &other.display().to_string(),
        "gateway.health",
    ]))
    .await;
    assert!(!ok, "an unknown issuer was trusted");
    assert!(err.contains("TLS handshake failed"), "{err}");

    // A broken replacement is refused with a WARN; the old certificate stays.
    std::fs::write(data.join("server.pem"), "not a certificate\n").expect("garbage");
    assert!(
        gw.wait_warnings("TLS certificate files cannot be used", 1)
            .await,
        "no WARN: {}",
        gw.log()
    );
    let status = status_pinned(&gw.url, &first.fingerprint).await;
    assert_eq!(
        status["tls"]["fingerprintSha256"],
        first.fingerprint.as_str()
    );

    // A good replacement is served within a few seconds, without a restart.
    let second = issue(&ca);
    std::fs::write(data.join("server.key"), &second.key_pem).expect("key");
    std::fs::write(data.join("server.pem"), &second.cert_pem).expect("cert");
    let t0 = Instant::now();
    loop {
        let (ok, out, _) = call(args(&[
            "--url",
            &gw.url,
            "--fingerprint",
            &second.fingerprint,
            "gateway.status",
        ]))
        .await;
        if ok {
            let status: Value = serde_json::from_str(&out).expect("JSON");
            assert_eq!(
                status["tls"]["fingerprintSha256"],
                second.fingerprint.as_str()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "the new certificate was not served: {}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.log_lines("INFO", &second.fingerprint), 1, "{}", gw.log());
}

#[test]
fn bad_tls_configurations_are_refused_at_start_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let (ca, _) = make_ca();
    let leaf = issue(&ca);
    std::fs::write(data.join("c.pem"), &leaf.cert_pem).expect("cert");

    let (code, err) = Launcher::on(&data)
        .config("[gateway.tls]\ncert = \"c.pem\"\nkey = \"missing.key\"\n")
        .run_to_exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gateway.tls.key"), "{err}");
    assert!(
        err.contains("missing.key") && err.contains("cannot read"),
        "{err}"
    );

    let (code, err) = Launcher::on(&data)
        .config("[gateway.tls]\nself_signed = true\ncert = \"c.pem\"\nkey = \"c.key\"\n")
        .run_to_exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gateway.tls.self_signed"), "{err}");

    let (code, err) = Launcher::on(&data)
        .config("[gateway.tls]\ncert = \"c.pem\"\n")
        .run_to_exit();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("gateway.tls.key") && err.contains("give both"),
        "{err}"
    );

    // A key that is no key, and a key of another certificate.
    std::fs::write(data.join("bad.key"), "-----BEGIN NOTHING-----\n").expect("bad key");
    let (code, err) = Launcher::on(&data)
        .config("[gateway.tls]\ncert = \"c.pem\"\nkey = \"bad.key\"\n")
        .run_to_exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.key"), "{err}");
    let other = issue(&ca);
    std::fs::write(data.join("other.key"), &other.key_pem).expect("other key");
    let (code, err) = Launcher::on(&data)
        .config("[gateway.tls]\ncert = \"c.pem\"\nkey = \"other.key\"\n")
        .run_to_exit();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not belong"), "{err}");
}

#[tokio::test]
async fn a_wrong_pin_is_refused_before_any_byte_of_the_request_is_sent() {
    // A server of our own with some certificate, counting what it receives after the
    // handshake: the client must stop inside the handshake, so nothing (no token) arrives.
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _) = make_ca();
    let leaf = issue(&ca);
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &leaf.cert_pem).expect("cert");
    std::fs::write(&key, &leaf.key_pem).expect("key");
    let tls = clawgate::tls::ServerTls::load(&cert, &key).expect("load");
    let acceptor = tls.acceptor().expect("acceptor");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let (r, h) = (received.clone(), handshakes.clone());
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, r, h) = (acceptor.clone(), r.clone(), h.clone());
            tokio::spawn(async move {
                if let Ok(mut stream) = acceptor.accept(tcp).await {
                    h.fetch_add(1, Ordering::SeqCst);
                    // The first bytes, then the connection is dropped (the client's wait ends).
                    let mut buf = [0u8; 4096];
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
                    {
                        r.fetch_add(n, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let url = format!("wss://{addr}/");
    let wrong = "ab".repeat(32);
    let (ok, _, err) = call(args(&[
        "--url",
        &url,
        "--fingerprint",
        &wrong,
        "--token",
        "a-secret-token-never-sent",
        "gateway.health",
    ]))
    .await;
    assert!(!ok);
    assert!(
        err.contains("fingerprint mismatch") && err.contains(&leaf.fingerprint),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "the handshake completed"
    );
    assert_eq!(received.load(Ordering::SeqCst), 0, "request bytes arrived");

    // The right pin does complete the handshake and send the request (the control).
    let (ok, _, _) = call(args(&[
        "--url",
        &url,
        "--fingerprint",
        &leaf.fingerprint,
        "gateway.health",
    ]))
    .await;
    assert!(!ok, "our fake server answers nothing");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
    assert!(received.load(Ordering::SeqCst) > 0);
    server.abort();
}

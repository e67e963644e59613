//! The real gateway binary as a child process: the one launcher of the integration tests and
//! the benchmarks (they include this file with `#[path]`, being a separate crate).
//!
//! ```ignore
//! let gw = Launcher::new().config("[gateway]\nmax_batch = 8\n").start();
//! let mut ws = RawWs::connect(gw.addr).await;
//! ```
//!
//! The child gets `--data-dir <dir> --port 0`, no `CLAWGATE_TOKEN` and `RUST_LOG=warn` (each
//! can be changed), its stderr goes to a log file, and it is killed and reaped when the handle
//! is dropped.

#![allow(dead_code)] // each crate that includes this file uses a part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The gateway binary of this package.
pub const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

/// A generous bound on waiting for a log line the gateway writes on its own; only against
/// hangs, never a speed test.
pub const LOG_PATIENCE: Duration = Duration::from_secs(20);

/// How to start the binary; [`Launcher::start`] runs it until it listens.
#[derive(Debug, Clone)]
pub struct Launcher {
    program: PathBuf,
    data_dir: Option<PathBuf>,
    port: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    config: Option<String>,
    log_dir: Option<PathBuf>,
    nofile: Option<u64>,
}

impl Default for Launcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Launcher {
    /// The gateway on a fresh temporary data directory, removed with the handle.
    pub fn new() -> Self {
        Launcher {
            program: PathBuf::from(BIN),
            data_dir: None,
            port: true,
            args: Vec::new(),
            env: Vec::new(),
            config: None,
            log_dir: None,
            nofile: None,
        }
    }

    /// The gateway on `data_dir`, which the caller keeps (a restart reuses it).
    pub fn on(data_dir: impl AsRef<Path>) -> Self {
        Self::new().data_dir(data_dir)
    }

    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Another server that speaks the gateway's command line (`--data-dir`, `--port`) and
    /// announces itself with the same first line, such as a benchmark's baseline.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Leaves `--port 0` out: the arguments say the port, or the run never gets that far.
    pub fn without_port(mut self) -> Self {
        self.port = false;
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable of the child; it overrides the defaults (`RUST_LOG`,
    /// `CLAWGATE_TOKEN`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        for (k, v) in pairs {
            self = self.env(k.as_ref(), v.as_ref());
        }
        self
    }

    /// Writes `text` as `<dataDir>/clawgate.toml` before the start.
    pub fn config(mut self, text: impl Into<String>) -> Self {
        self.config = Some(text.into());
        self
    }

    /// Where the stderr log goes (a file of its own per start). By default it is beside the
    /// data directory and removed with the handle; a directory given here keeps it.
    pub fn log_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.log_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets the child's `RLIMIT_NOFILE` (soft and hard) before it runs.
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// The data directory, made if it is a fresh one; the temporary root that holds it then.
    fn prepare(&self) -> (PathBuf, Option<tempfile::TempDir>) {
        let (data_dir, temp) = match &self.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let root = tempfile::tempdir().expect("tempdir");
                let dir = root.path().join("data");
                std::fs::create_dir(&dir).expect("data dir");
                (dir, Some(root))
            }
        };
        if let Some(text) = &self.config {
            std::fs::create_dir_all(&data_dir).expect("data dir");
            std::fs::write(data_dir.join("clawgate.toml"), text).expect("write the config");
        }
        (data_dir, temp)
    }

    fn command(&self, data_dir: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--data-dir").arg(data_dir);
        if self.port {
            cmd.args(["--port", "0"]);
        }
        cmd.args(&self.args);
        cmd.env_remove("CLAWGATE_TOKEN").env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit in the child between fork and exec touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Starts the binary and waits for its `listening on ws://…/` line; panics with the log
    /// when it does not start.
    pub fn start(self) -> Gateway {
        let (data_dir, temp) = self.prepare();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let (log, own_log) = match &self.log_dir {
            Some(dir) => (dir.join(format!("gateway-{nanos}.log")), false),
            None => (data_dir.with_extension(format!("stderr-{nanos}.log")), true),
        };
        let stderr = std::fs::File::create(&log).expect("log file");
        let t0 = Instant::now();
        let mut child = self
            .command(&data_dir)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn the gateway");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let ready_after = t0.elapsed();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_string);
        let addr = url.as_deref().and_then(|u| {
            u.strip_prefix("ws://")
                .or_else(|| u.strip_prefix("wss://"))?
                .trim_end_matches('/')
                .parse::<SocketAddr>()
                .ok()
        });
        let (Some(url), Some(addr)) = (url, addr) else {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if own_log {
                let _ = std::fs::remove_file(&log);
            }
            panic!("the gateway did not start (first line {line:?}): {text}");
        };
        Gateway {
            child,
            addr,
            url,
            log,
            own_log,
            data_dir,
            ready_after,
            _temp: temp,
        }
    }

    /// Runs the binary to its exit (a start it must refuse); its exit code and stderr.
    pub fn run_to_exit(self) -> (i32, String) {
        let (data_dir, _temp) = self.prepare();
        let out: Output = self.command(&data_dir).output().expect("run the gateway");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A started gateway: killed and reaped when dropped.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// `ws://addr/` (`wss://` with TLS), as the first line said it.
    pub url: String,
    log: PathBuf,
    own_log: bool,
    data_dir: PathBuf,
    ready_after: Duration,
    _temp: Option<tempfile::TempDir>,
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// From the spawn to the first line.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many lines of the log have `level` (`WARN`, `ERROR`) and contain `needle`.
    pub fn log_lines(&self, level: &str, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(level) && l.contains(needle))
            .count()
    }

    /// How many WARN lines of the log contain `needle`.
    pub fn warnings(&self, needle: &str) -> usize {
        self.log_lines("WARN", needle)
    }

    /// Waits (up to [`LOG_PATIENCE`]) until `warnings(needle)` reaches `count`; whether it did.
    pub async fn wait_warnings(&self, needle: &str, count: usize) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < LOG_PATIENCE {
            if self.warnings(needle) >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// A field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }

    /// The resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Sends SIGTERM (a graceful shutdown) without waiting.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// SIGTERM, then waits for the exit: the index and every transcript are written.
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.child.wait().expect("wait")
    }

    /// Whether it exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// SIGKILL and reap: a crash at this very moment.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        if self.own_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A field of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

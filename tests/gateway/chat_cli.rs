//! `clawgate chat` through a real pseudo-terminal against the real gateway binary: a streamed
//! answer, the commands (/sessions, /new, /switch, /history, /quit) and the last messages shown
//! at the start, an approval asked and answered, Ctrl-C aborting a run (and twice quitting), and
//! a restart of the gateway while the chat is open, with a line typed meanwhile sent once; and
//! lines piped in, answered before the chat ends.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::approvals::{asking, exec_message};
use crate::common::Transcript;
use crate::common::launcher::{BIN, Launcher};

/// A generous bound on seeing a piece of output; only against hangs, never a speed test.
const PATIENCE: Duration = Duration::from_secs(40);

/// `clawgate chat` on a pseudo-terminal of 200 × 50: what it printed (escape sequences and
/// carriage returns taken out), read in order by [`Chat::expect`].
struct Chat {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// How far [`Chat::expect`] has read the cleaned text.
    pos: usize,
    _home: tempfile::TempDir,
}

impl Chat {
    /// Starts `clawgate chat --url URL ARGS...` on a new pseudo-terminal, as its controlling
    /// terminal (so Ctrl-C outside a read is a SIGINT), with a HOME of its own.
    fn start(url: &str, args: &[&str]) -> Chat {
        let home = tempfile::tempdir().expect("home");
        let size = nix::pty::Winsize {
            ws_row: 50,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).expect("openpty");
        let stdio = || Stdio::from(pty.slave.try_clone().expect("dup the pty"));
        let mut cmd = Command::new(BIN);
        cmd.arg("chat")
            .arg("--url")
            .arg(url)
            .args(args)
            .env_remove("CLAWGATE_TOKEN")
            .env_remove("CLAWGATE_URL")
            .env_remove("CLAWGATE_DATA_DIR")
            .env("TERM", "xterm")
            .env("HOME", home.path())
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio());
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid and ioctl in the child between fork and exec touch only the child.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn clawgate chat");
        // Only the child holds the terminal's side now: its exit ends the reads below.
        drop(cmd);
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().expect("dup the master");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().expect("screen").extend_from_slice(&buf[..n]),
                }
            }
        });
        Chat {
            child,
            master,
            screen,
            pos: 0,
            _home: home,
        }
    }

    /// Everything printed so far, cleaned.
    fn text(&self) -> String {
        clean(&self.screen.lock().expect("screen"))
    }

    /// Waits until `needle` is printed after what was read so far, and reads past it.
    fn expect(&mut self, needle: &str) {
        let t0 = Instant::now();
        loop {
            let text = self.text();
            if let Some(i) = text.get(self.pos..).and_then(|rest| rest.find(needle)) {
                self.pos += i + needle.len();
                return;
            }
            if t0.elapsed() > PATIENCE {
                let seen = text.get(self.pos..).unwrap_or(&text);
                panic!("`{needle}` was not printed; after the last match came:\n{seen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `needle` is printed within `wait` after what was read so far (reading past it).
    fn sees(&mut self, needle: &str, wait: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < wait {
            let text = self.text();
            if let Some(i) = text.get(self.pos..).and_then(|rest| rest.find(needle)) {
                self.pos += i + needle.len();
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Types `keys` (no Enter).
    fn keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
        self.master.flush().expect("flush");
    }

    /// Types `line` and Enter.
    fn line(&mut self, line: &str) {
        self.keys(&format!("{line}\r"));
    }

    /// Waits for the prompt of `session`, then types `line` and Enter.
    fn say(&mut self, session: &str, line: &str) {
        self.expect(&format!("{session}> "));
        self.line(line);
    }

    /// Waits for the exit (up to [`PATIENCE`]).
    fn exit_status(&mut self) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if t0.elapsed() > PATIENCE {
                panic!("clawgate chat did not exit; it printed:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of terminal output: CSI and OSC sequences and carriage returns taken out. A
/// prefix of the bytes always cleans to a prefix of the whole (a split UTF-8 character waits).
fn clean(raw: &[u8]) -> String {
    let valid = match std::str::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut out = String::with_capacity(valid.len());
    let mut chars = valid.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\x07' || c == '\x1b' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The user messages of session `key` in `data_dir` whose text is `text`.
fn user_messages(data_dir: &Path, key: &str, text: &str) -> usize {
    Transcript::of_key(data_dir, key)
        .messages()
        .iter()
        .filter(|m| m["role"] == "user" && m["content"] == text)
        .count()
}

#[test]
fn a_streamed_answer_the_commands_and_the_last_messages_at_the_start() {
    let gw = Launcher::new().start();
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("chat_history");
    let history_arg = history.to_string_lossy().into_owned();
    let mut chat = Chat::start(&gw.url, &["--session", "t", "--history", &history_arg]);
    chat.expect("session t");
    chat.expect("a new session");
    chat.say("t", "hello");
    chat.expect("Echo: hello");

    chat.say("t", "/sessions");
    chat.expect("* t · 2 messages");
    chat.say("t", "/new other");
    chat.expect("── other: no messages yet ──");
    chat.say("other", "in other");
    chat.expect("Echo: in other");
    chat.say("other", "/switch t");
    chat.expect("── t: the last 2 messages ──");
    chat.expect("» hello");
    chat.expect("Echo: hello");
    chat.say("t", "/history 1");
    chat.expect("── t: the last message ──");
    chat.expect("Echo: hello");
    chat.say("t", "/switch nope");
    chat.expect("no session nope");
    chat.say("t", "/help");
    chat.expect("/switch KEY");
    chat.say("t", "/quit");
    assert!(chat.exit_status().success());
    let kept = std::fs::read_to_string(&history).expect("the history file");
    assert!(
        kept.contains("hello") && kept.contains("/switch t"),
        "{kept}"
    );

    // A new chat shows the last messages, and the typed lines come back with the Up arrow.
    let mut again = Chat::start(&gw.url, &["--session", "t", "--history", &history_arg]);
    again.expect("── t: the last 2 messages ──");
    again.expect("» hello");
    again.expect("Echo: hello");
    again.expect("t> ");
    // Up past the oldest line typed before (`hello`), then Enter.
    again.keys(&"\x1b[A".repeat(12));
    again.keys("\r");
    again.expect("Echo: hello");
    again.expect("t> ");
    again.keys("\x04");
    assert!(again.exit_status().success());
    assert_eq!(user_messages(gw.data_dir(), "t", "hello"), 2);
}

#[test]
fn an_approval_is_asked_and_answered() {
    let gw = Launcher::new().config(asking("")).start();
    let mut chat = Chat::start(&gw.url, &["--session", "t"]);
    chat.say("t", &exec_message("echo hi"));
    chat.expect(r#"allow exec {"command":"echo hi"}? [y]es / [n]o / [a]lways:"#);
    chat.line("y");
    chat.expect("✓ allowed");
    chat.expect(r#"⚙ exec {"command":"echo hi"}"#);
    chat.expect("✓ exec: exit code: 0");
    chat.expect("hi");
    chat.expect("Tool exec returned: exit code: 0");

    // A denial is the tool's (failed) result, and the run goes on.
    chat.say("t", &exec_message("echo no"));
    chat.expect(r#"allow exec {"command":"echo no"}? [y]es / [n]o / [a]lways:"#);
    chat.line("maybe");
    chat.expect("answer y (yes), n (no) or a (always)");
    chat.line("n");
    chat.expect("✗ denied");
    chat.expect("Tool exec failed");

    // `always` allows the later calls of the session without asking.
    chat.say("t", &exec_message("echo one"));
    chat.expect("[a]lways:");
    chat.line("a");
    chat.expect("Tool exec returned");
    chat.say("t", &exec_message("echo two"));
    chat.expect(r#"⚙ exec {"command":"echo two"}"#);
    chat.expect("Tool exec returned");
    assert!(!chat.text().contains(r#"allow exec {"command":"echo two"}"#));
}

#[test]
fn ctrl_c_aborts_the_run_and_twice_quits() {
    let config = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\nexec = \"on\"\n";
    let gw = Launcher::new().config(config).start();
    let mut chat = Chat::start(&gw.url, &["--session", "t"]);
    chat.say("t", &exec_message("sleep 30"));
    chat.expect(r#"⚙ exec {"command":"sleep 30"}"#);
    let t0 = Instant::now();
    chat.keys("\x03");
    chat.expect("aborting");
    chat.expect("✗ aborted");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the abort took {:?}",
        t0.elapsed()
    );
    chat.say("t", "still here");
    chat.expect("Echo: still here");

    // Twice within 2 s: the first aborts, the second quits.
    chat.say("t", &exec_message("sleep 30"));
    chat.expect(r#"⚙ exec {"command":"sleep 30"}"#);
    chat.keys("\x03");
    chat.expect("aborting");
    chat.keys("\x03");
    assert!(chat.exit_status().success());

    // At an idle prompt, one quits.
    let mut idle = Chat::start(&gw.url, &["--session", "t"]);
    idle.expect("t> ");
    idle.keys("\x03");
    assert!(idle.exit_status().success());
}

#[test]
fn the_chat_reconnects_after_a_restart_and_sends_what_was_typed_meanwhile_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let mut first = Launcher::on(&data).start();
    let port = first.addr.port().to_string();
    let mut chat = Chat::start(&first.url, &["--session", "t"]);
    chat.say("t", "before");
    chat.expect("Echo: before");

    assert!(first.terminate().success());
    chat.expect("reconnecting");
    chat.say("t", "while down");
    chat.expect("it will be sent when the connection is back");
    // A few attempts fail while nothing listens.
    std::thread::sleep(Duration::from_millis(1500));

    let second = Launcher::on(&data)
        .without_port()
        .args(&["--port", &port])
        .start();
    chat.expect("✓ reconnected");
    chat.expect("the gateway restarted");
    chat.expect("Echo: while down");
    chat.say("t", "after the restart");
    chat.expect("Echo: after the restart");
    assert!(
        !chat.sees("Echo: while down", Duration::from_millis(500)),
        "answered twice"
    );
    assert_eq!(user_messages(second.data_dir(), "t", "while down"), 1);
    assert_eq!(user_messages(second.data_dir(), "t", "before"), 1);
    chat.say("t", "/quit");
    assert!(chat.exit_status().success());
}

#[test]
fn piped_lines_are_answered_before_the_chat_ends() {
    let gw = Launcher::new().start();
    let mut child = Command::new(BIN)
        .args(["chat", "--url", &gw.url, "--session", "p", "--history"])
        .arg(gw.data_dir().join("piped_history"))
        .env_remove("CLAWGATE_TOKEN")
        .env_remove("CLAWGATE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn clawgate chat");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"one\ntwo\n")
        .expect("write");
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(t0.elapsed() < PATIENCE, "clawgate chat did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let one = text.find("Echo: one").unwrap_or_else(|| panic!("{text}"));
    let two = text.find("Echo: two").unwrap_or_else(|| panic!("{text}"));
    assert!(one < two, "{text}");
}

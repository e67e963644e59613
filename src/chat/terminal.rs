//! The terminal of `clawgate chat`: a thread that reads lines with rustyline (line editing,
//! history, Ctrl-C and Ctrl-D as events), and a thread that prints above the prompt through
//! rustyline's external printer, so text streamed while someone types never tears their line.
//!
//! The reading thread asks for each prompt: it reads a line only after the chat answered the
//! previous one with [`Reply::Prompt`], and stops at [`Reply::Exit`], so the terminal is back
//! in its normal mode whenever the chat decides to end.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};
use tokio::sync::mpsc;

/// What the person did at the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line (without its newline).
    Line(String),
    /// Ctrl-C (at the prompt, or SIGINT).
    Interrupt,
    /// Ctrl-D at an empty prompt, or the input ended.
    Eof,
}

/// The chat's answer to an [`Input`] (and the first prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Read the next line with this prompt.
    Prompt(String),
    /// Stop reading: the chat ends.
    Exit,
}

enum Printed {
    Text(String),
    Flush(std_mpsc::SyncSender<()>),
}

/// Prints whole lines above the prompt; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Printer {
    tx: std_mpsc::Sender<Printed>,
}

impl Printer {
    /// Prints `text` (one or more lines) and a newline.
    pub fn line(&self, text: impl Into<String>) {
        let mut text = text.into();
        text.push('\n');
        // The printing thread lives as long as a Printer does; nothing to do if it is gone.
        let _ = self.tx.send(Printed::Text(text));
    }

    /// Waits (a moment at most) until everything sent before has been printed.
    pub fn flush(&self) {
        let (tx, rx) = std_mpsc::sync_channel(1);
        if self.tx.send(Printed::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// The two threads, and the terminal mode to put back at the end.
pub struct Terminal {
    /// What the person does, in order.
    pub inputs: mpsc::UnboundedReceiver<Input>,
    replies: std_mpsc::Sender<Reply>,
    /// Prints above the prompt.
    pub printer: Printer,
    reader: Option<JoinHandle<()>>,
    saved: Option<SavedMode>,
}

impl Terminal {
    /// Starts both threads; nothing is read until the first [`Terminal::reply`].
    /// `history` is the file of earlier lines (loaded now, written at the end), if any.
    pub fn start(history: Option<PathBuf>) -> Terminal {
        let saved = SavedMode::take();
        let (input_tx, inputs) = mpsc::unbounded_channel();
        let (replies, reply_rx) = std_mpsc::channel::<Reply>();
        let (print_tx, print_rx) = std_mpsc::channel::<Printed>();
        let config = Config::builder()
            .auto_add_history(false)
            .history_ignore_space(true);
        let config = match config.clone().max_history_size(1000) {
            Ok(c) => c,
            Err(_) => config,
        }
        .build();
        let mut editor = DefaultEditor::with_config(config).ok();
        // Not a terminal (a pipe, TERM=dumb): lines are still read, text printed plainly.
        let external = editor
            .as_mut()
            .and_then(|e| e.create_external_printer().ok());
        std::thread::Builder::new()
            .name("chat-print".into())
            .spawn(move || print_loop(print_rx, external))
            .ok();
        let reader = std::thread::Builder::new()
            .name("chat-read".into())
            .spawn(move || read_loop(editor, history, reply_rx, input_tx))
            .ok();
        Terminal {
            inputs,
            replies,
            printer: Printer { tx: print_tx },
            reader,
            saved,
        }
    }

    /// Whether standard input is a terminal (a person types), not a pipe or a file.
    pub fn interactive(&self) -> bool {
        self.saved.is_some()
    }

    /// Answers the last input (or gives the first prompt).
    pub fn reply(&self, reply: Reply) {
        let _ = self.replies.send(reply);
    }

    /// Ends the chat's terminal: prints what is pending, lets the reading thread write the
    /// history (`wait`: it is waiting for a reply, as after /quit, Ctrl-D or Ctrl-C at the
    /// prompt), and puts the terminal back as it was at the start (in case a line was still
    /// being read, as when SIGINT ends the chat).
    pub async fn close(mut self, wait: bool) {
        self.printer.flush();
        let _ = self.replies.send(Reply::Exit);
        if let Some(reader) = self.reader.take().filter(|_| wait) {
            let joined = tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while !reader.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            let _ = joined.await;
        }
        if let Some(saved) = self.saved.take() {
            saved.restore();
        }
    }
}

fn print_loop(
    rx: std_mpsc::Receiver<Printed>,
    mut external: Option<impl rustyline::ExternalPrinter>,
) {
    use std::io::Write as _;
    while let Ok(item) = rx.recv() {
        match item {
            Printed::Text(text) => {
                let printed = match external.as_mut() {
                    Some(p) => p.print(text.clone()).is_ok(),
                    None => false,
                };
                if !printed {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
            }
            Printed::Flush(ack) => {
                let _ = ack.try_send(());
            }
        }
    }
}

fn read_loop(
    mut editor: Option<DefaultEditor>,
    history: Option<PathBuf>,
    replies: std_mpsc::Receiver<Reply>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    if let (Some(editor), Some(path)) = (editor.as_mut(), history.as_ref()) {
        // A missing or unreadable file is an empty history.
        let _ = editor.load_history(path);
    }
    while let Ok(Reply::Prompt(prompt)) = replies.recv() {
        let input = match editor.as_mut() {
            Some(editor) => read_one(editor, &prompt),
            None => {
                use std::io::{BufRead as _, Write as _};
                print!("{prompt}");
                let _ = std::io::stdout().flush();
                // Locked for this line only: rustyline locks standard input too.
                let mut line = String::new();
                match std::io::stdin().lock().read_line(&mut line) {
                    Ok(n) if n > 0 => Input::Line(line.trim_end_matches(['\n', '\r']).to_string()),
                    _ => Input::Eof,
                }
            }
        };
        if inputs.send(input).is_err() {
            break;
        }
    }
    if let (Some(editor), Some(path)) = (editor.as_mut(), history.as_ref()) {
        let _ = editor.save_history(path);
    }
}

fn read_one(editor: &mut DefaultEditor, prompt: &str) -> Input {
    loop {
        match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                return Input::Line(line);
            }
            Err(ReadlineError::Interrupted) => return Input::Interrupt,
            // A window resize while reading: read again.
            Err(ReadlineError::Signal(_)) => continue,
            Err(_) => return Input::Eof,
        }
    }
}

/// The terminal mode of standard input at the start, put back at the end whatever happened
/// (a signal may end the chat while a line is being read in raw mode).
struct SavedMode {
    #[cfg(unix)]
    termios: libc::termios,
}

impl SavedMode {
    #[cfg(unix)]
    fn take() -> Option<SavedMode> {
        // SAFETY: isatty and tcgetattr only read the state of descriptor 0 into a local
        // value that tcgetattr fills completely when it succeeds.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut termios: libc::termios = std::mem::zeroed();
            (libc::tcgetattr(0, &mut termios) == 0).then_some(SavedMode { termios })
        }
    }

    #[cfg(not(unix))]
    fn take() -> Option<SavedMode> {
        None
    }

    fn restore(self) {
        #[cfg(unix)]
        {
            use std::io::Write as _;
            // Bracketed paste off, as rustyline leaves it after a line.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\x1b[?2004l");
            let _ = out.flush();
            // SAFETY: tcsetattr reads the termios saved from the same descriptor.
            unsafe {
                libc::tcsetattr(0, libc::TCSADRAIN, &self.termios);
            }
        }
    }
}

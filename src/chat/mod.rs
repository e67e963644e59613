//! `clawgate chat`: a terminal chat with one session of a gateway, over the Rust client.
//!
//! It prints the session's last messages, sends each line typed (with `mode: "steer"` while a
//! run is active), streams the answer in whole lines above the prompt, shows tool calls and
//! their results, asks approvals (`y` / `n` / `a`lways), aborts a run on Ctrl-C (a second
//! Ctrl-C within 2 s, or one at an idle prompt, quits) and knows `/new`, `/sessions`,
//! `/switch KEY`, `/history [N]`, `/abort`, `/quit` and `/help` (any other `/…` line is a message,
//! such as echo's `/tool`). On a lost connection it says `… reconnecting`, retries with
//! backoff, resumes the events from its `{epoch, seq}` cursor, reprints the recent history after
//! a `gap` (a restart, expired or lagged events), and sends the lines typed meanwhile once each
//! (each keeps its idempotency key). Lines piped in are sent in order, and the chat ends once
//! their replies have. Nothing the gateway or the person sends makes it panic.

mod link;
mod render;
mod terminal;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::core::client::Subscription;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::GatewayClient;
use crate::protocol::{
    ApprovalDecision, ApprovalsListResult, ChatEvent, ChatHistoryResult, RunPhase, RunsListResult,
    Session, SessionsListResult,
};
use link::{Cursor, Failure};
use render::Answer;
use terminal::{Input, Printer, Reply, Terminal};

/// What `clawgate chat` is given.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// The gateway's WebSocket URL.
    pub url: String,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The session to start in.
    pub session: String,
    /// The agent of the sessions this chat creates (`None`: the gateway's default).
    pub agent: Option<String>,
    /// Where the typed lines are kept between chats (`None`: only in memory).
    pub history_file: Option<PathBuf>,
    /// How a `wss://` gateway's certificate is trusted.
    pub tls: crate::tls::TlsOptions,
}

/// How many messages are shown on start, on `/switch` and `/new`, and after a gap.
const RECENT: u32 = 10;
/// A second Ctrl-C within this long quits.
const DOUBLE_INTERRUPT: Duration = Duration::from_secs(2);
/// How many message ids, run ids and idempotency keys are remembered (oldest forgotten first).
const REMEMBERED: usize = 2000;
/// Every this many failed reconnect attempts, say so again.
const RETELL_EVERY: u32 = 20;

const HELP: &str = "commands:
  /new [KEY]      start a new session (a generated key when none is given) and switch to it
  /sessions       list the sessions, most recent first
  /switch KEY     chat in another session
  /history [N]    show the last N messages (10)
  /abort          abort the running reply (also Ctrl-C; Ctrl-C twice quits)
  /quit           leave (also Ctrl-D)
any other line, also one starting with `/` (such as `/tool NAME {json}`), is sent as a message;
while a reply runs it steers it; when asked to allow a tool call, answer y, n or a (always).";

/// Runs the chat until the person leaves; exit code 1 when the gateway cannot be reached at
/// the start.
pub async fn run(options: ChatOptions) -> ExitCode {
    let url = options.url.clone();
    let start = async {
        let client = link::connect(&url, options.token.as_deref(), &options.tls).await?;
        let cursor = link::hello(&client).await?;
        let sub = link::subscribe(&client, &options.session, &cursor).await?;
        Ok::<_, Failure>((client, cursor, sub))
    };
    let (client, cursor, sub) = match start.await {
        Ok(started) => started,
        Err(err) => {
            eprintln!("clawgate: cannot chat with {url}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // SIGINT is the chat's from now on (Ctrl-C outside a read, or `kill -INT`).
    let mut sigint = Interrupts::new();
    let mut terminal = Terminal::start(options.history_file.clone());
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let mut chat = Chat::new(options, terminal.printer.clone(), notes_tx, cursor);
    chat.link = Link::Up { client, sub };
    chat.greet().await;
    terminal.reply(Reply::Prompt(chat.prompt()));
    let reading = chat.run(&mut terminal, &mut notes, &mut sigint).await;
    drop(chat);
    terminal.close(!reading).await;
    ExitCode::SUCCESS
}

/// A line waiting to be sent (or to be answered): it keeps its idempotency key across
/// reconnects, so it starts one run however often it is sent.
#[derive(Debug, Clone)]
struct Outgoing {
    session: String,
    text: String,
    key: String,
    mode: &'static str,
    agent: Option<String>,
}

/// An approval waiting for the person's answer.
#[derive(Debug, Clone)]
struct Pending {
    approval_id: String,
    run_id: Option<String>,
    name: String,
    input: Value,
}

/// What a spawned call reports back.
enum Note {
    Sent {
        generation: u64,
        key: String,
        result: Result<Value, Failure>,
    },
    Resolved {
        generation: u64,
        pending: Pending,
        result: Result<Value, Failure>,
    },
    Aborted {
        result: Result<Value, Failure>,
    },
}

enum Link {
    Up {
        client: Arc<GatewayClient>,
        sub: Subscription<Value>,
    },
    Down {
        attempt: u32,
        retry_at: Instant,
    },
}

/// What the connection did.
enum LinkEvent {
    Envelope(Value),
    Garbled(String),
    Closed,
    Retry,
}

/// Waits for the next thing of the connection: a notification, its end, or (while down)
/// the time of the next attempt.
async fn link_event(link: &mut Link) -> LinkEvent {
    match link {
        Link::Up { sub, .. } => match sub.next().await {
            Some(Ok(value)) => LinkEvent::Envelope(value),
            Some(Err(err)) => LinkEvent::Garbled(err.to_string()),
            None => LinkEvent::Closed,
        },
        Link::Down { retry_at, .. } => {
            tokio::time::sleep_until((*retry_at).into()).await;
            LinkEvent::Retry
        }
    }
}

/// A set that forgets its oldest members past [`REMEMBERED`].
#[derive(Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    fn insert(&mut self, item: String) {
        if self.set.insert(item.clone()) {
            self.order.push_back(item);
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, item: &str) -> bool {
        self.set.contains(item)
    }
}

/// What to do after an input.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Stay,
    Quit,
}

struct Chat {
    options: ChatOptions,
    out: Printer,
    notes: mpsc::UnboundedSender<Note>,
    link: Link,
    /// Counts connections, so a late failure of a call made on an old one is told apart.
    generation: u64,
    cursor: Cursor,
    session: String,
    /// Whether the session exists on the gateway (as far as the chat knows).
    session_exists: bool,
    outbox: VecDeque<Outgoing>,
    sending: bool,
    /// The run whose payloads are being shown.
    active: Option<String>,
    queued: HashSet<String>,
    stream: render::TextStream,
    approvals: VecDeque<Pending>,
    /// Idempotency keys of the lines typed here (their user message is not printed again).
    our_keys: Recent,
    /// Message ids already printed (from the history).
    shown: Recent,
    /// Runs the printed history shows ended: their replayed payloads are not printed again.
    ended: Recent,
    last_interrupt: Option<Instant>,
    /// Runs started (or steered) by the lines typed here and not ended yet.
    waiting: HashSet<String>,
    /// The input ended (piped lines): the chat ends once nothing is left to wait for.
    leaving: bool,
}

impl Chat {
    fn new(
        options: ChatOptions,
        out: Printer,
        notes: mpsc::UnboundedSender<Note>,
        cursor: Cursor,
    ) -> Chat {
        Chat {
            session: options.session.clone(),
            options,
            out,
            notes,
            link: Link::Down {
                attempt: 0,
                retry_at: Instant::now(),
            },
            generation: 0,
            cursor,
            session_exists: false,
            outbox: VecDeque::new(),
            sending: false,
            active: None,
            queued: HashSet::new(),
            stream: render::TextStream::default(),
            approvals: VecDeque::new(),
            our_keys: Recent::default(),
            shown: Recent::default(),
            ended: Recent::default(),
            last_interrupt: None,
            waiting: HashSet::new(),
            leaving: false,
        }
    }

    fn client(&self) -> Option<Arc<GatewayClient>> {
        match &self.link {
            Link::Up { client, .. } => Some(client.clone()),
            Link::Down { .. } => None,
        }
    }

    /// The prompt: the session's key, or the question of the oldest pending approval.
    fn prompt(&self) -> String {
        match self.approvals.front() {
            Some(p) => render::approval_question(&p.name, &p.input),
            None => format!("{}> ", self.session),
        }
    }

    fn busy(&self) -> bool {
        self.active.is_some() || !self.queued.is_empty() || !self.approvals.is_empty()
    }

    /// The loop: inputs, notifications, reports of spawned calls, reconnect attempts and
    /// SIGINT, until the person leaves. Whether the reading thread may still be reading a line.
    async fn run(
        &mut self,
        terminal: &mut Terminal,
        notes: &mut mpsc::UnboundedReceiver<Note>,
        sigint: &mut Interrupts,
    ) -> bool {
        loop {
            tokio::select! {
                input = terminal.inputs.recv() => {
                    let input = input.unwrap_or(Input::Eof);
                    if input == Input::Eof && !terminal.interactive() && self.has_work() {
                        // The end of piped lines: leave once their replies are done.
                        self.leaving = true;
                        continue;
                    }
                    let verdict = self.on_input(input).await;
                    if verdict == Verdict::Quit {
                        return false;
                    }
                    terminal.reply(Reply::Prompt(self.prompt()));
                }
                event = link_event(&mut self.link) => match event {
                    LinkEvent::Envelope(value) => self.on_envelope(value).await,
                    LinkEvent::Garbled(err) => self.out.line(format!("… an unreadable notification was skipped: {err}")),
                    LinkEvent::Closed => self.lost("the connection closed"),
                    LinkEvent::Retry => self.reconnect().await,
                },
                Some(note) = notes.recv() => self.on_note(note).await,
                () = sigint.next() => {
                    // Only outside a read (the terminal is in raw mode while one runs), or
                    // from `kill -INT`.
                    if self.on_interrupt() == Verdict::Quit {
                        return !self.leaving;
                    }
                }
            }
            if self.leaving && !self.has_work() {
                return false;
            }
        }
    }

    /// Whether a line is still to be sent or a reply to one still runs.
    fn has_work(&self) -> bool {
        self.sending || !self.outbox.is_empty() || !self.waiting.is_empty() || self.busy()
    }

    /// The banner, the session's last messages, its runs and pending approvals.
    async fn greet(&mut self) {
        self.out.line(format!(
            "clawgate chat · {} · session {} · /help for commands, Ctrl-C aborts a reply, twice quits",
            self.options.url, self.session
        ));
        if let (Some(agent), Some(client)) = (self.options.agent.clone(), self.client())
            && let Ok(value) =
                link::call(&client, "sessions.get", json!({"key": self.session})).await
            && let Ok(session) = serde_json::from_value::<Session>(value)
            && session.agent_id != agent
        {
            self.out.line(format!(
                "… session {} belongs to agent {}: --agent {agent} applies to new sessions only",
                self.session, session.agent_id
            ));
        }
        self.load_session().await;
    }

    /// Prints the recent history, then reads the session's runs and pending approvals.
    async fn load_session(&mut self) {
        self.show_history(RECENT).await;
        self.refresh_runs().await;
        self.refresh_approvals().await;
    }

    async fn on_input(&mut self, input: Input) -> Verdict {
        match input {
            Input::Eof => Verdict::Quit,
            Input::Interrupt => self.on_interrupt(),
            Input::Line(line) => self.on_line(line).await,
        }
    }

    /// Ctrl-C: aborts what runs; quits when nothing runs or at the second within 2 s.
    fn on_interrupt(&mut self) -> Verdict {
        let now = Instant::now();
        let again = self
            .last_interrupt
            .is_some_and(|t| now.duration_since(t) < DOUBLE_INTERRUPT);
        if again || !self.busy() {
            return Verdict::Quit;
        }
        self.last_interrupt = Some(now);
        self.out.line("… aborting (Ctrl-C again to quit)");
        self.abort();
        Verdict::Stay
    }

    async fn on_line(&mut self, line: String) -> Verdict {
        let trimmed = line.trim();
        let (command, arg) = match trimmed.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (trimmed, ""),
        };
        let is_command = matches!(
            command,
            "/quit" | "/exit" | "/help" | "/new" | "/sessions" | "/switch" | "/history" | "/abort"
        );
        if !self.approvals.is_empty() && !is_command {
            match render::parse_answer(trimmed) {
                Some(answer) => self.resolve(answer),
                None => self
                    .out
                    .line("… answer y (yes), n (no) or a (always), or /abort"),
            }
            return Verdict::Stay;
        }
        if trimmed.is_empty() {
            return Verdict::Stay;
        }
        match command {
            "/quit" | "/exit" => return Verdict::Quit,
            "/help" => self.out.line(HELP),
            "/new" => self.new_session(arg).await,
            "/sessions" => self.list_sessions().await,
            "/switch" => self.switch(arg).await,
            "/history" => match arg {
                "" => self.show_history(RECENT).await,
                n => match n.parse::<u32>() {
                    Ok(n) if (1..=1000).contains(&n) => self.show_history(n).await,
                    _ => self.out.line("… /history N takes a number from 1 to 1000"),
                },
            },
            "/abort" => {
                if self.busy() {
                    self.abort();
                } else {
                    self.out.line("… nothing to abort");
                }
            }
            _ => self.send(line),
        }
        Verdict::Stay
    }

    /// Queues a line for sending (steering the active run, if any) and sends what is queued.
    fn send(&mut self, text: String) {
        let key = uuid::Uuid::new_v4().to_string();
        self.our_keys.insert(key.clone());
        let outgoing = Outgoing {
            session: self.session.clone(),
            text,
            key,
            mode: if self.active.is_some() {
                "steer"
            } else {
                "queue"
            },
            agent: if self.session_exists {
                None
            } else {
                self.options.agent.clone()
            },
        };
        self.outbox.push_back(outgoing);
        if self.client().is_none() {
            self.out
                .line("… not connected: it will be sent when the connection is back");
        }
        self.kick();
    }

    /// Sends the oldest queued line, unless a send is under way or the connection is down.
    fn kick(&mut self) {
        if self.sending {
            return;
        }
        let (Some(client), Some(next)) = (self.client(), self.outbox.front()) else {
            return;
        };
        let mut params = json!({
            "sessionKey": next.session,
            "message": next.text,
            "idempotencyKey": next.key,
            "mode": next.mode,
        });
        if let Some(agent) = &next.agent {
            params["agent"] = json!(agent);
        }
        self.sending = true;
        let key = next.key.clone();
        let generation = self.generation;
        let notes = self.notes.clone();
        tokio::spawn(async move {
            let result = link::call(&client, "chat.send", params).await;
            let _ = notes.send(Note::Sent {
                generation,
                key,
                result,
            });
        });
    }

    fn resolve(&mut self, answer: Answer) {
        let Some(pending) = self.approvals.pop_front() else {
            return;
        };
        let Some(client) = self.client() else {
            self.out
                .line("… not connected: answer again when the connection is back");
            self.approvals.push_front(pending);
            return;
        };
        let decision = match answer {
            Answer::Yes | Answer::Always => "allow",
            Answer::No => "deny",
        };
        let mut params = json!({"approvalId": pending.approval_id, "decision": decision});
        if answer == Answer::Always {
            params["remember"] = json!("session");
        }
        let generation = self.generation;
        let notes = self.notes.clone();
        tokio::spawn(async move {
            let result = link::call(&client, "approvals.resolve", params).await;
            let _ = notes.send(Note::Resolved {
                generation,
                pending,
                result,
            });
        });
    }

    /// Aborts the session's active run and drops its queued ones.
    fn abort(&mut self) {
        let Some(client) = self.client() else {
            self.out.line("… not connected: cannot abort now");
            return;
        };
        let params = json!({"sessionKey": self.session});
        let notes = self.notes.clone();
        tokio::spawn(async move {
            let result = link::call(&client, "chat.abort", params).await;
            let _ = notes.send(Note::Aborted { result });
        });
    }

    async fn on_note(&mut self, note: Note) {
        match note {
            Note::Sent {
                generation,
                key,
                result,
            } => {
                self.sending = false;
                match result {
                    Ok(value) => {
                        let sent = self.take_outgoing(&key);
                        if sent.is_some_and(|s| s.session == self.session) {
                            self.session_exists = true;
                        }
                        if value["status"] == "steered" {
                            self.out.line("↪ steering the running reply");
                        }
                        if let Some(run_id) = value["runId"].as_str()
                            && value["status"] != "done"
                            && !self.ended.contains(run_id)
                        {
                            self.waiting.insert(run_id.to_string());
                        }
                    }
                    Err(Failure::Refused { code, message }) => {
                        let sent = self.take_outgoing(&key);
                        let text = sent.map(|s| render::clip(&s.text, 60)).unwrap_or_default();
                        self.out
                            .line(format!("✗ not sent ({text}): {message} ({code})"));
                    }
                    Err(Failure::Lost(why)) => {
                        if generation == self.generation {
                            self.lost(&why);
                        }
                    }
                }
                self.kick();
            }
            Note::Resolved {
                generation,
                pending,
                result,
            } => match result {
                Ok(_) => {}
                Err(Failure::Refused { code, message }) => {
                    self.out.line(format!("✗ the approval: {message} ({code})"));
                }
                Err(Failure::Lost(why)) => {
                    self.out.line(format!(
                        "… the answer did not reach the gateway ({why}): answer again"
                    ));
                    self.out
                        .line(render::approval_question(&pending.name, &pending.input));
                    self.approvals.push_front(pending);
                    if generation == self.generation {
                        self.lost(&why);
                    }
                }
            },
            Note::Aborted { result } => match result {
                Ok(value) => {
                    if value["aborted"].as_array().is_some_and(|a| a.is_empty()) {
                        self.out.line("… nothing was running");
                    }
                }
                Err(err) => self.out.line(format!("✗ abort: {err}")),
            },
        }
    }

    fn take_outgoing(&mut self, key: &str) -> Option<Outgoing> {
        let at = self.outbox.iter().position(|o| o.key == key)?;
        self.outbox.remove(at)
    }

    /// The connection is gone: says so once and starts reconnecting.
    fn lost(&mut self, why: &str) {
        if matches!(self.link, Link::Down { .. }) {
            return;
        }
        self.flush_stream();
        self.out.line(format!("… reconnecting ({why})"));
        self.generation += 1;
        self.link = Link::Down {
            attempt: 0,
            retry_at: Instant::now() + link::backoff(1),
        };
    }

    async fn reconnect(&mut self) {
        let Link::Down { attempt, .. } = self.link else {
            return;
        };
        let attempt = attempt.saturating_add(1);
        let attempted = async {
            let client = link::connect(
                &self.options.url,
                self.options.token.as_deref(),
                &self.options.tls,
            )
            .await?;
            match link::subscribe(&client, &self.session, &self.cursor).await {
                Ok(sub) => Ok((client, sub, false)),
                // The cursor is refused (beyond the gateway's seq): start afresh.
                Err(Failure::Refused { .. }) => {
                    let cursor = link::hello(&client).await?;
                    let sub = link::subscribe(&client, &self.session, &cursor).await?;
                    self.cursor = cursor;
                    Ok((client, sub, true))
                }
                Err(err) => Err(err),
            }
        };
        match attempted.await {
            Ok((client, sub, afresh)) => {
                self.generation += 1;
                self.link = Link::Up { client, sub };
                self.out.line("✓ reconnected");
                if afresh {
                    self.reset_run();
                    self.show_history(RECENT).await;
                }
                self.refresh_runs().await;
                self.kick();
            }
            Err(err) => {
                if attempt % RETELL_EVERY == 0 {
                    self.out.line(format!("… still reconnecting ({err})"));
                }
                self.link = Link::Down {
                    attempt,
                    retry_at: Instant::now() + link::backoff(attempt.saturating_add(1)),
                };
            }
        }
    }

    async fn on_envelope(&mut self, envelope: Value) {
        self.cursor.advance(&envelope);
        let payload = &envelope["payload"];
        match envelope["event"].as_str() {
            Some("chat") => match serde_json::from_value::<ChatEvent>(payload.clone()) {
                Ok(event) if event.session_key == self.session => self.on_chat(event),
                Ok(_) => {}
                Err(err) => self
                    .out
                    .line(format!("… an unreadable chat event was skipped: {err}")),
            },
            Some("gap") => {
                let why = match payload["reason"].as_str() {
                    Some("restart") => "the gateway restarted",
                    Some("expired") => "events were missed while away",
                    _ => "events were dropped (a slow connection)",
                };
                self.flush_stream();
                self.out.line(format!("… {why}: the recent history again"));
                self.reset_run();
                self.show_history(RECENT).await;
            }
            Some("shutdown") => {
                let reason = payload["reason"].as_str().unwrap_or("shutdown");
                self.flush_stream();
                self.out
                    .line(format!("… the gateway is shutting down ({reason})"));
            }
            _ => {}
        }
    }

    /// Forgets what is shown of a run (its state comes again from history and events).
    fn reset_run(&mut self) {
        self.active = None;
        self.queued.clear();
        self.stream.reset();
    }

    fn print_lines(&self, lines: Vec<String>) {
        if !lines.is_empty() {
            self.out.line(lines.join("\n"));
        }
    }

    /// Prints the streamed text not printed yet (a last line without its newline).
    fn flush_stream(&mut self) {
        if let Some(rest) = self.stream.finish() {
            self.out.line(rest);
        }
    }

    /// Starts showing `run_id` (a new run, or one resumed).
    fn begin_run(&mut self, run_id: Option<&str>) {
        if self.active.as_deref() != run_id {
            self.flush_stream();
        }
        self.stream.reset();
        if let Some(id) = run_id {
            self.queued.remove(id);
            self.active = Some(id.to_string());
        }
    }

    fn end_run(&mut self, run_id: Option<&str>) {
        if let Some(id) = run_id {
            self.waiting.remove(id);
            self.queued.remove(id);
            self.ended.insert(id.to_string());
            self.approvals.retain(|p| p.run_id.as_deref() != Some(id));
        }
        if self.active.as_deref() == run_id || run_id.is_none() {
            self.active = None;
        }
        self.stream.reset();
        self.last_interrupt = None;
    }

    fn on_chat(&mut self, event: ChatEvent) {
        let run_id = event.run_id.as_deref();
        if run_id.is_some_and(|id| self.ended.contains(id)) {
            return;
        }
        match event.state.as_str() {
            "queued" => {
                if let Some(id) = run_id {
                    self.queued.insert(id.to_string());
                }
                let ahead = event.position.unwrap_or(0);
                self.out.line(format!("… queued ({ahead} ahead)"));
            }
            "started" => {
                self.begin_run(run_id);
                if let Some(m) = &event.user_message {
                    let ours = m
                        .idempotency_key
                        .as_deref()
                        .is_some_and(|k| self.our_keys.contains(k));
                    if !ours && !self.shown.contains(&m.id) {
                        self.out.line(render::user_line(&m.content));
                    }
                    self.shown.insert(m.id.clone());
                }
            }
            "resumed" => {
                self.begin_run(run_id);
                let attempt = event.attempt.unwrap_or(1);
                self.out.line(format!(
                    "… a reply interrupted by the restart goes on (attempt {attempt})"
                ));
            }
            "delta" => {
                if self.active.as_deref() != run_id {
                    self.begin_run(run_id);
                }
                let lines = self.stream.push(event.text.as_deref().unwrap_or(""));
                self.print_lines(lines);
            }
            "tool_start" => {
                self.flush_stream();
                self.stream.reset();
                let name = event.name.as_deref().unwrap_or("tool");
                let input = event.input.clone().unwrap_or(Value::Null);
                self.out.line(render::tool_start(name, &input));
            }
            "tool_end" => {
                self.flush_stream();
                let name = event.name.as_deref().unwrap_or("tool");
                self.out.line(render::tool_end(
                    name,
                    event.output.as_deref().unwrap_or(""),
                    event.is_error == Some(true),
                ));
            }
            "approval_requested" => {
                self.flush_stream();
                self.stream.reset();
                let Some(approval_id) = event.approval_id.clone() else {
                    return;
                };
                self.ask(Pending {
                    approval_id,
                    run_id: event.run_id.clone(),
                    name: event.name.clone().unwrap_or_else(|| "tool".into()),
                    input: event.input.clone().unwrap_or(Value::Null),
                });
            }
            "approval_resolved" => {
                if let Some(id) = &event.approval_id {
                    self.approvals.retain(|p| &p.approval_id != id);
                }
                let by = event
                    .by
                    .as_deref()
                    .map(|b| format!(" (by {b})"))
                    .unwrap_or_default();
                match event.decision {
                    Some(ApprovalDecision::Allow) => self.out.line(format!("✓ allowed{by}")),
                    _ => self.out.line(format!("✗ denied{by}")),
                }
            }
            "steered" => {
                if let Some(m) = &event.user_message {
                    let ours = m
                        .idempotency_key
                        .as_deref()
                        .is_some_and(|k| self.our_keys.contains(k));
                    if !ours {
                        self.flush_stream();
                        self.out.line(render::user_line(&m.content));
                    }
                    self.shown.insert(m.id.clone());
                }
            }
            "final" => {
                self.flush_stream();
                if let Some(m) = &event.message {
                    if !self.stream.seen_text && !self.shown.contains(&m.id) {
                        let text = m.content.trim_end();
                        if !text.is_empty() {
                            self.out.line(text);
                        }
                    }
                    self.shown.insert(m.id.clone());
                }
                if event.stop_reason.as_deref() == Some("max_turns") {
                    self.out.line("… stopped at the turn limit");
                }
                self.end_run(run_id);
            }
            "aborted" => {
                self.flush_stream();
                self.out.line("✗ aborted");
                self.end_run(run_id);
            }
            "error" => {
                self.flush_stream();
                match &event.error {
                    Some(err) => self
                        .out
                        .line(format!("✗ error ({}): {}", err.kind, err.message)),
                    None => self.out.line("✗ error"),
                }
                self.end_run(run_id);
            }
            "injected" => {
                if let Some(m) = event.message {
                    if !self.shown.contains(&m.id) {
                        self.print_lines(render::history(std::slice::from_ref(&m)));
                    }
                    self.shown.insert(m.id);
                }
            }
            "compacted" => {
                let before = event.tokens_before.unwrap_or(0);
                let after = event.tokens_after.unwrap_or(0);
                self.out
                    .line(format!("… context compacted: ~{before} → ~{after} tokens"));
            }
            _ => {}
        }
    }

    /// Asks an approval (once per id).
    fn ask(&mut self, pending: Pending) {
        if self
            .approvals
            .iter()
            .any(|p| p.approval_id == pending.approval_id)
        {
            return;
        }
        self.out
            .line(render::approval_question(&pending.name, &pending.input).trim_end());
        self.approvals.push_back(pending);
    }

    async fn show_history(&mut self, limit: u32) {
        let Some(client) = self.client() else {
            self.out.line("… not connected");
            return;
        };
        let params = json!({"sessionKey": self.session, "limit": limit});
        match link::call(&client, "chat.history", params).await {
            Ok(value) => match serde_json::from_value::<ChatHistoryResult>(value) {
                Ok(page) => {
                    self.session_exists = true;
                    for id in render::ended_runs(&page.messages) {
                        self.waiting.remove(&id);
                        self.ended.insert(id);
                    }
                    for m in &page.messages {
                        self.shown.insert(m.id.clone());
                    }
                    if page.messages.is_empty() {
                        self.out
                            .line(format!("── {}: no messages yet ──", self.session));
                        return;
                    }
                    let what = match page.messages.len() {
                        1 => "the last message".to_string(),
                        n => format!("the last {n} messages"),
                    };
                    let mut lines = vec![format!("── {}: {what} ──", self.session)];
                    lines.extend(render::history(&page.messages));
                    lines.push("──".into());
                    self.print_lines(lines);
                }
                Err(err) => self.out.line(format!("✗ unreadable history: {err}")),
            },
            Err(Failure::Refused { code: -32022, .. }) => {
                self.session_exists = false;
                self.out.line(format!(
                    "── {}: a new session (the first message creates it) ──",
                    self.session
                ));
            }
            Err(err) => self.out.line(format!("✗ history: {err}")),
        }
    }

    /// Reads which runs of the session are active or queued.
    async fn refresh_runs(&mut self) {
        let Some(client) = self.client() else {
            return;
        };
        let params = json!({"sessionKey": self.session});
        let Ok(value) = link::call(&client, "runs.list", params).await else {
            return;
        };
        let Ok(list) = serde_json::from_value::<RunsListResult>(value) else {
            return;
        };
        self.queued.clear();
        let mut active = None;
        for run in list.runs {
            match run.state {
                RunPhase::Queued => {
                    self.queued.insert(run.run_id);
                }
                RunPhase::Running | RunPhase::WaitingApproval => active = Some(run.run_id),
                RunPhase::Done => {}
            }
        }
        if active != self.active {
            self.flush_stream();
            self.stream.reset();
            self.active = active;
        }
    }

    /// Asks the session's pending approvals not asked yet.
    async fn refresh_approvals(&mut self) {
        let Some(client) = self.client() else {
            return;
        };
        let params = json!({"sessionKey": self.session});
        let Ok(value) = link::call(&client, "approvals.list", params).await else {
            return;
        };
        let Ok(list) = serde_json::from_value::<ApprovalsListResult>(value) else {
            return;
        };
        for a in list.approvals {
            self.ask(Pending {
                approval_id: a.approval_id,
                run_id: Some(a.run_id),
                name: a.name,
                input: a.input,
            });
        }
    }

    async fn list_sessions(&mut self) {
        let Some(client) = self.client() else {
            self.out.line("… not connected");
            return;
        };
        match link::call(&client, "sessions.list", json!({"limit": 50})).await {
            Ok(value) => match serde_json::from_value::<SessionsListResult>(value) {
                Ok(list) => {
                    let mut lines = vec![format!("── sessions ({}) ──", list.total)];
                    for s in &list.sessions {
                        let mark = if s.key == self.session { '*' } else { ' ' };
                        let label = s
                            .label
                            .as_deref()
                            .map(|l| format!(" “{l}”"))
                            .unwrap_or_default();
                        let preview = s
                            .last_message_preview
                            .as_deref()
                            .map(|p| {
                                format!(" · {}", render::clip(p.lines().next().unwrap_or(""), 60))
                            })
                            .unwrap_or_default();
                        lines.push(format!(
                            "{mark} {}{label} · {} messages · agent {}{preview}",
                            s.key, s.message_count, s.agent_id
                        ));
                    }
                    if list.next_cursor.is_some() {
                        lines.push("  …".into());
                    }
                    self.print_lines(lines);
                }
                Err(err) => self.out.line(format!("✗ unreadable session list: {err}")),
            },
            Err(err) => self.out.line(format!("✗ sessions: {err}")),
        }
    }

    async fn switch(&mut self, key: &str) {
        if key.is_empty() {
            self.out.line("… /switch KEY (see /sessions)");
            return;
        }
        if key == self.session {
            self.out.line(format!("… already in {key}"));
            return;
        }
        let Some(client) = self.client() else {
            self.out.line("… not connected");
            return;
        };
        match link::call(&client, "sessions.get", json!({"key": key})).await {
            Ok(_) => self.enter(key.to_string()).await,
            Err(Failure::Refused { code: -32022, .. }) => self
                .out
                .line(format!("… no session {key} (/new {key} creates it)")),
            Err(err) => self.out.line(format!("✗ switch: {err}")),
        }
    }

    async fn new_session(&mut self, key: &str) {
        let Some(client) = self.client() else {
            self.out.line("… not connected");
            return;
        };
        let mut params = json!({});
        if !key.is_empty() {
            params["key"] = json!(key);
        }
        if let Some(agent) = &self.options.agent {
            params["agent"] = json!(agent);
        }
        match link::call(&client, "sessions.create", params).await {
            Ok(value) => match serde_json::from_value::<Session>(value) {
                Ok(session) => self.enter(session.key).await,
                Err(err) => self.out.line(format!("✗ unreadable session: {err}")),
            },
            Err(err) => self.out.line(format!("✗ new session: {err}")),
        }
    }

    /// Moves the chat to session `key`: subscribes to its events from now, then shows it.
    async fn enter(&mut self, key: String) {
        let Some(client) = self.client() else {
            self.out.line("… not connected");
            return;
        };
        self.flush_stream();
        let subscribed = async {
            let cursor = link::hello(&client).await?;
            let sub = link::subscribe(&client, &key, &cursor).await?;
            Ok::<_, Failure>((cursor, sub))
        };
        match subscribed.await {
            Ok((cursor, sub)) => {
                self.cursor = cursor;
                self.link = Link::Up { client, sub };
                self.session = key;
                self.reset_run();
                self.approvals.clear();
                self.waiting.clear();
                self.load_session().await;
            }
            Err(Failure::Refused { code, message }) => {
                self.out
                    .line(format!("✗ cannot follow {key}: {message} ({code})"));
            }
            Err(Failure::Lost(why)) => self.lost(&why),
        }
    }
}

/// SIGINT as a stream (Unix); never on other systems.
struct Interrupts {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Interrupts {
        Interrupts {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}

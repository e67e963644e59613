//! The JSONL transcript format: lines, the one writer per file, forward and backward readers.
//!
//! A transcript is append-only. Each message is one `write` of one whole line, flushed to disk
//! (`fdatasync`) before the call that wrote it is answered. Readers skip a torn or unparsable
//! line with a warning and keep every valid line; nothing here ever truncates or rewrites bytes.
//!
//! One file of about 700 lines (a fifth of them tests) because the line format, the one writer
//! and the two readers change together: a change of the format is a change of all three. The
//! run, tool and approval lines and the serializer of every typed line are in `markers`
//! (re-exported here).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::markers::tagged_line;
pub use super::markers::{
    ApprovalLine, RunMarker, RunMarkerState, ToolMarker, approval_line, run_line, tool_line,
};
use crate::protocol::{Compaction, CompactionReason, Patch, TranscriptMessage, Usage};

/// The format version new transcripts are written with. Version 2 adds `compaction`, `run`,
/// `tool` and `approval` lines; a header cannot be rewritten in an append-only file, so every
/// new transcript says 2 from the start. Readers take both (1 is 2 without those lines).
pub const HEADER_VERSION: u32 = 2;

/// Line 1 of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Format version: 1 or 2 ([`HEADER_VERSION`]).
    pub version: u32,
    /// The session id (also the file name).
    pub id: String,
    /// The session key.
    pub key: String,
    /// When the transcript was created.
    pub created_at: u64,
    /// Where a fork came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkedFrom>,
    /// The agent the session belongs to (a header without one: `main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl Header {
    /// A version-1 header of transcript `id` for session `key`, as tests write them.
    #[cfg(test)]
    pub(crate) fn for_test(id: &str, key: &str, created_at: u64) -> Self {
        Self {
            version: 1,
            id: id.into(),
            key: key.into(),
            created_at,
            forked_from: None,
            agent: None,
        }
    }
}

/// The origin of a forked transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkedFrom {
    /// The original transcript.
    pub session_id: String,
    /// The last message copied.
    pub message_id: String,
}

/// A change of the session's label or model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// When.
    pub ts: u64,
    /// The new label (`null` clears).
    #[serde(default, skip_serializing_if = "is_keep")]
    pub label: Patch<String>,
    /// The new model (`null` clears).
    #[serde(default, skip_serializing_if = "is_keep")]
    pub model: Patch<String>,
}

/// A compaction: from this line on, a model call's context is `summary`, then the messages from
/// `first_kept_id` on (every one of them is before this line, nothing is removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactionLine {
    /// The compaction's id.
    pub id: String,
    /// When.
    pub ts: u64,
    /// What the older part said (rolling in the previous summary).
    pub summary: String,
    /// The oldest message kept verbatim.
    pub first_kept_id: String,
    /// The estimate of the context before, in tokens.
    pub tokens_before: u64,
    /// The estimate of the context after, in tokens.
    pub tokens_after: u64,
    /// Why.
    pub reason: CompactionReason,
    /// What the summary call used (it is not a turn of any run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl CompactionLine {
    /// The compaction as `chat.history` lists it.
    pub fn entry(&self) -> Compaction {
        Compaction {
            id: self.id.clone(),
            ts: self.ts,
            summary: self.summary.clone(),
            first_kept_id: self.first_kept_id.clone(),
            reason: self.reason,
        }
    }
}

fn is_keep<T>(p: &Patch<T>) -> bool {
    matches!(p, Patch::Keep)
}

/// One parsed line.
#[derive(Debug, Clone)]
pub enum Line {
    /// The header.
    Header(Header),
    /// A message.
    Message(Box<TranscriptMessage>),
    /// A label/model change.
    Meta(Meta),
    /// A compaction (version 2).
    Compaction(Box<CompactionLine>),
    /// A run marker (version 2).
    Run(RunMarker),
    /// A tool marker (version 2).
    Tool(ToolMarker),
    /// An approval asked or resolved (version 2).
    Approval(Box<ApprovalLine>),
    /// Valid JSON with a `type` this version does not know; kept on disk, ignored.
    Unknown(String),
    /// Not a valid line (torn, garbage); kept on disk, ignored.
    Bad(String),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Known {
    Session(Header),
    Message(Box<TranscriptMessage>),
    Meta(Meta),
    Compaction(Box<CompactionLine>),
    Run(RunMarker),
    Tool(ToolMarker),
    Approval(Box<ApprovalLine>),
}

/// The `type`s this version reads; a line of another type is [`Line::Unknown`].
const KNOWN_TYPES: [&str; 7] = [
    "session",
    "message",
    "meta",
    "compaction",
    "run",
    "tool",
    "approval",
];

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
}

/// Parses one line (without its newline).
pub fn parse_line(bytes: &[u8]) -> Line {
    match serde_json::from_slice::<Known>(bytes) {
        Ok(Known::Session(h)) => Line::Header(h),
        Ok(Known::Message(m)) => Line::Message(m),
        Ok(Known::Meta(m)) => Line::Meta(m),
        Ok(Known::Compaction(c)) => Line::Compaction(c),
        Ok(Known::Run(r)) => Line::Run(r),
        Ok(Known::Tool(t)) => Line::Tool(t),
        Ok(Known::Approval(a)) => Line::Approval(a),
        Err(err) => match serde_json::from_slice::<Probe>(bytes) {
            Ok(Probe {
                kind: Some(serde_json::Value::String(kind)),
            }) if !KNOWN_TYPES.contains(&kind.as_str()) => Line::Unknown(kind),
            _ => Line::Bad(err.to_string()),
        },
    }
}

/// The header as a line (with its newline).
pub fn header_line(header: &Header) -> io::Result<Vec<u8>> {
    tagged_line("session", header)
}

/// A message as a line (with its newline).
pub fn message_line(msg: &TranscriptMessage) -> io::Result<Vec<u8>> {
    tagged_line("message", msg)
}

/// A meta change as a line (with its newline).
pub fn meta_line(meta: &Meta) -> io::Result<Vec<u8>> {
    tagged_line("meta", meta)
}

/// A compaction as a line (with its newline).
pub fn compaction_line(compaction: &CompactionLine) -> io::Result<Vec<u8>> {
    tagged_line("compaction", compaction)
}

/// Any parsed line written back (with its newline); an unknown or bad line has no form.
pub fn line_bytes(line: &Line) -> io::Result<Vec<u8>> {
    match line {
        Line::Header(h) => header_line(h),
        Line::Message(m) => message_line(m),
        Line::Meta(m) => meta_line(m),
        Line::Compaction(c) => compaction_line(c),
        Line::Run(r) => run_line(r),
        Line::Tool(t) => tool_line(t),
        Line::Approval(a) => approval_line(a),
        Line::Unknown(_) | Line::Bad(_) => Err(io::Error::other("not a line this version writes")),
    }
}

/// Creates a file readable and writable by its owner only, for appending, failing if it exists.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// A directory kept open, so it can be flushed later without opening anything (when no
/// descriptor is left, the flush that makes a rename durable must not be the step that fails).
pub struct DirSync {
    #[cfg(unix)]
    file: File,
}

impl DirSync {
    /// Opens `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        #[cfg(unix)]
        {
            Ok(Self {
                file: File::open(dir)?,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(Self {})
        }
    }

    /// Flushes the directory's entries (created, renamed, removed files) to disk.
    pub fn sync(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            self.file.sync_all()
        }
        #[cfg(not(unix))]
        {
            Ok(())
        }
    }
}

/// What a transcript being written is named until it is complete: `<final name>` + this.
/// Such a file is never read as a session; the store removes any it finds when it opens.
pub const STAGING_SUFFIX: &str = ".partial";

/// The staging name of the transcript `path`.
pub fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(STAGING_SUFFIX);
    PathBuf::from(name)
}

/// A new transcript, written in full and flushed under its staging name: not yet a session.
pub struct Staged {
    file: File,
    staging: PathBuf,
    len: u64,
    lines: u64,
}

impl Staged {
    /// Writes `header` and `lines` to the staging name of `path` and flushes them (`fsync`).
    /// On failure nothing is left behind (the staging file is removed).
    pub fn write(path: &Path, header: &Header, lines: &[Vec<u8>]) -> io::Result<Self> {
        let mut all = Vec::with_capacity(lines.len() + 1);
        all.push(header_line(header)?);
        all.extend(lines.iter().cloned());
        Self::write_lines(path, &all)
    }

    /// Writes whole lines (the header first) as they are to the staging name of `path`, and
    /// flushes them; on failure nothing is left behind.
    pub fn write_lines(path: &Path, lines: &[Vec<u8>]) -> io::Result<Self> {
        let staging = staging_path(path);
        let buf = lines.concat();
        let mut file = create_private(&staging)?;
        let written = file.write_all(&buf).and_then(|()| file.sync_all());
        if let Err(err) = written {
            drop(file);
            let _ = std::fs::remove_file(&staging);
            return Err(err);
        }
        Ok(Self {
            file,
            staging,
            len: buf.len() as u64,
            lines: lines.len() as u64,
        })
    }

    /// Renames the file to `path`, its final name, and returns its writer; the caller flushes
    /// the directory. On failure the staging file is removed.
    pub fn commit(self, path: &Path) -> io::Result<Writer> {
        if let Err(err) = std::fs::rename(&self.staging, path) {
            let _ = std::fs::remove_file(&self.staging);
            return Err(err);
        }
        Ok(Writer {
            file: Arc::new(self.file),
            path: path.to_path_buf(),
            len: self.len,
            lines: self.lines,
            needs_newline: false,
            #[cfg(test)]
            appends: 0,
        })
    }

    /// Removes the staging file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.staging);
    }
}

/// The one writer of a transcript file.
pub struct Writer {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    lines: u64,
    needs_newline: bool,
    /// Calls of [`append`](Self::append) (each one write and one flush), for tests.
    #[cfg(test)]
    pub(crate) appends: u64,
}

impl Writer {
    /// Creates a transcript with `header` and `lines` after it, durably: written in full under
    /// its staging name, then renamed. A failure leaves no file behind, complete or not.
    pub fn create(path: &Path, header: &Header, lines: &[Vec<u8>]) -> io::Result<Self> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = DirSync::open(dir)?;
        let writer = Staged::write(path, header, lines)?.commit(path)?;
        if let Err(err) = dir.sync() {
            drop(writer);
            let _ = std::fs::remove_file(path);
            return Err(err);
        }
        Ok(writer)
    }

    /// Opens an existing transcript for appending; `lines` is how many lines it has.
    pub fn open(path: &Path, lines: u64) -> io::Result<Self> {
        let mut file = OpenOptions::new().read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let mut needs_newline = false;
        if len > 0 {
            file.seek(SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            needs_newline = last[0] != b'\n';
        }
        Ok(Self {
            file: Arc::new(file),
            path: path.to_path_buf(),
            len,
            lines,
            needs_newline,
            #[cfg(test)]
            appends: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes committed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is written (never true for a valid transcript).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lines committed so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Appends whole lines (each ending in a newline) in one write, then `fdatasync`.
    /// Runs on the blocking pool; returns the new committed length.
    pub async fn append(&mut self, lines: Vec<u8>, count: u64) -> io::Result<u64> {
        let mut buf = lines;
        if self.needs_newline {
            // A torn last line stays on disk untouched; the next record starts on a fresh line.
            buf.insert(0, b'\n');
        }
        let file = self.file.clone();
        let written = buf.len() as u64;
        #[cfg(test)]
        {
            self.appends += 1;
        }
        let result = tokio::task::spawn_blocking(move || -> io::Result<()> {
            (&*file).write_all(&buf)?;
            crate::metrics::fsync(|| file.sync_data())
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        if let Err(err) = result {
            // Part of the line may be on disk (a full disk): learn the real length, and start
            // the next record on a fresh line so no valid line is glued to the fragment.
            if let Ok(meta) = self.file.metadata()
                && meta.len() != self.len
            {
                self.len = meta.len();
                self.needs_newline = true;
            }
            return Err(err);
        }
        self.needs_newline = false;
        self.len += written;
        self.lines += count;
        Ok(self.len)
    }
}

/// A line met by a forward scan.
pub struct ScannedLine {
    /// 1-based line number.
    pub number: u64,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// The parsed line.
    pub line: Line,
}

/// Reads `path` forward from `offset` (which starts line `first_line`), calling `visit` for each
/// complete line. A last line without its newline is torn: it is reported as `Bad`.
/// Returns (bytes read up to the end of the last complete line, lines seen).
pub fn scan_forward(
    path: &Path,
    offset: u64,
    first_line: u64,
    mut visit: impl FnMut(ScannedLine),
) -> io::Result<(u64, u64)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut buf = Vec::new();
    let mut pos = offset;
    let mut number = first_line;
    let mut complete_end = offset;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        let body = if complete {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        let line = if complete {
            if body.iter().all(u8::is_ascii_whitespace) {
                pos += n as u64;
                complete_end = pos;
                number += 1;
                continue;
            }
            parse_line(body)
        } else {
            Line::Bad("torn line: no newline at the end of the file".into())
        };
        visit(ScannedLine {
            number,
            offset: pos,
            line,
        });
        pos += n as u64;
        number += 1;
        if complete {
            complete_end = pos;
        }
    }
    Ok((complete_end, number - first_line))
}

/// Reads the complete lines of `path` before byte `end`, newest first, until `visit` returns
/// `false`. Each call gets the line's end offset and its bytes (without the newline).
pub fn scan_backward(
    path: &Path,
    end: u64,
    mut visit: impl FnMut(u64, &[u8]) -> bool,
) -> io::Result<()> {
    const CHUNK: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let mut pos = end;
    // Bytes from `pos` up to the end of the oldest line not yet emitted.
    let mut tail: Vec<u8> = Vec::new();
    let mut tail_end = end;
    loop {
        // Emit every complete line at the end of `tail`.
        while let Some(i) = tail.iter().rposition(|b| *b == b'\n') {
            let line = &tail[i + 1..];
            let line_end = tail_end;
            if !line.is_empty()
                && !line.iter().all(u8::is_ascii_whitespace)
                && !visit(line_end, line)
            {
                return Ok(());
            }
            tail_end -= (tail.len() - i) as u64;
            tail.truncate(i);
        }
        if pos == 0 {
            if !tail.is_empty() && !tail.iter().all(u8::is_ascii_whitespace) {
                visit(tail_end, &tail);
            }
            return Ok(());
        }
        let start = pos.saturating_sub(CHUNK.max(tail.len() as u64));
        let mut block = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        pos = start;
        block.extend_from_slice(&tail);
        tail = block;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;

    fn msg(id: &str, content: &str) -> TranscriptMessage {
        let mut m = crate::store::NewMessage::new(Role::User, content).message;
        m.id = id.into();
        m.ts = 1;
        m
    }

    #[test]
    fn lines_round_trip() {
        let header = Header::for_test("s", "k", 5);
        let line = header_line(&header).expect("line");
        assert!(
            line.starts_with(br#"{"type":"session","#),
            "{}",
            String::from_utf8_lossy(&line)
        );
        match parse_line(&line[..line.len() - 1]) {
            Line::Header(h) => assert_eq!(h, header),
            other => panic!("{other:?}"),
        }
        let m = msg("a", "hi\nthere");
        let line = message_line(&m).expect("line");
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        match parse_line(&line[..line.len() - 1]) {
            Line::Message(back) => assert_eq!(*back, m),
            other => panic!("{other:?}"),
        }
        let meta = Meta {
            ts: 1,
            label: Patch::Clear,
            model: Patch::Keep,
        };
        let line = meta_line(&meta).expect("line");
        assert_eq!(line, b"{\"type\":\"meta\",\"ts\":1,\"label\":null}\n");
        let compaction = CompactionLine {
            id: "c".into(),
            ts: 2,
            summary: "s".into(),
            first_kept_id: "a".into(),
            tokens_before: 9,
            tokens_after: 3,
            reason: CompactionReason::Overflow,
            usage: None,
        };
        let line = compaction_line(&compaction).expect("line");
        assert_eq!(
            line,
            b"{\"type\":\"compaction\",\"id\":\"c\",\"ts\":2,\"summary\":\"s\",\"firstKeptId\":\"a\",\"tokensBefore\":9,\"tokensAfter\":3,\"reason\":\"overflow\"}\n"
        );
        match parse_line(&line[..line.len() - 1]) {
            Line::Compaction(back) => assert_eq!(*back, compaction),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_line(br#"{"type":"future","x":1}"#), Line::Unknown(k) if k == "future")
        );
        assert!(matches!(
            parse_line(br#"{"type":"message","id":"#),
            Line::Bad(_)
        ));
        assert!(matches!(parse_line(b"\x00garbage"), Line::Bad(_)));
    }

    #[tokio::test]
    async fn torn_tail_is_kept_and_the_next_append_starts_a_fresh_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let header = Header::for_test("t", "k", 1);
        let w = Writer::create(
            &path,
            &header,
            &[message_line(&msg("a", "one")).expect("line")],
        )
        .expect("create");
        drop(w);
        // Simulate a crash mid-write: a torn line without its newline.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"type":"message","id":"b","con"#)
            .expect("write");
        drop(f);
        let mut w = Writer::open(&path, 3).expect("open");
        w.append(message_line(&msg("c", "three")).expect("line"), 1)
            .await
            .expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains(
                "{\"type\":\"message\",\"id\":\"b\",\"con\n{\"type\":\"message\",\"id\":\"c\""
            ),
            "{text}"
        );
        let mut ids = Vec::new();
        let mut bad = Vec::new();
        scan_forward(&path, 0, 1, |l| match l.line {
            Line::Message(m) => ids.push(m.id.clone()),
            Line::Bad(_) => bad.push(l.number),
            _ => {}
        })
        .expect("scan");
        assert_eq!(ids, vec!["a", "c"]);
        assert_eq!(bad, vec![3]);
        let mut back = Vec::new();
        scan_backward(&path, w.len(), |_, line| {
            if let Line::Message(m) = parse_line(line) {
                back.push(m.id.clone());
            }
            true
        })
        .expect("scan back");
        assert_eq!(back, vec!["c", "a"]);
    }

    #[test]
    fn backward_scan_handles_lines_longer_than_a_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("long.jsonl");
        let mut text = Vec::new();
        for i in 0..50 {
            let len = if i % 7 == 0 { 200_000 } else { 10 + i };
            text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
            text.push(b'\n');
        }
        std::fs::write(&path, &text).expect("write");
        let mut seen = Vec::new();
        scan_backward(&path, text.len() as u64, |end, line| {
            seen.push((end, line.len()));
            true
        })
        .expect("scan");
        assert_eq!(seen.len(), 50);
        let mut expect_end = text.len() as u64;
        for (i, (end, len)) in seen.iter().enumerate() {
            let n = 49 - i;
            let want = if n % 7 == 0 { 200_000 } else { 10 + n };
            assert_eq!(*len, want);
            assert_eq!(*end, expect_end - 1, "end offset excludes the newline");
            expect_end -= (*len + 1) as u64;
        }
    }
}

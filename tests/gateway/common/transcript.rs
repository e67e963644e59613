//! The one reader of transcript files (`<dataDir>/sessions/<sessionId>.jsonl`) for the tests:
//! a header line, then one JSON object a line. Like the gateway, it takes a damaged line (a
//! torn last line after a crash, garbage) as damaged instead of failing; a test that wants
//! every line whole says so with [`Transcript::whole`].

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One line after the header, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Message(Value),
    Meta(Value),
    /// A type this reader does not know (the gateway skips it with a warning).
    Other(Value),
    /// Not JSON: a torn or damaged line, with its 1-based line number.
    Damaged {
        line: usize,
        text: String,
    },
}

/// A parsed transcript.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub path: PathBuf,
    /// The first line when it is a `session` header; `Value::Null` for a headerless file.
    pub header: Value,
    /// Every line after the header, in file order.
    pub lines: Vec<Line>,
}

/// The path of a session's transcript in `data_dir`.
pub fn transcript_path(data_dir: &Path, session_id: &str) -> PathBuf {
    data_dir
        .join("sessions")
        .join(format!("{session_id}.jsonl"))
}

/// The transcript files (`*.jsonl`, not the archived `*.jsonl.reset.*` and the like) in
/// `<data_dir>/sessions`, sorted: what a restart reads.
pub fn transcript_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("sessions"))
        .expect("sessions dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

impl Transcript {
    /// Reads `path` (which must exist).
    pub fn read(path: impl AsRef<Path>) -> Transcript {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("transcript {}: {e}", path.display()));
        Self::parse(path, &text)
    }

    /// Reads the transcript of `session_id` in `data_dir`.
    pub fn of(data_dir: &Path, session_id: &str) -> Transcript {
        Self::read(transcript_path(data_dir, session_id))
    }

    /// Reads the live transcript of session `key` in `data_dir` (the one whose header names
    /// it and is newest).
    pub fn of_key(data_dir: &Path, key: &str) -> Transcript {
        transcript_files(data_dir)
            .into_iter()
            .map(Transcript::read)
            .filter(|t| t.header["key"] == key)
            .max_by_key(|t| t.header["createdAt"].as_u64().unwrap_or(0))
            .unwrap_or_else(|| panic!("no transcript of session `{key}`"))
    }

    /// The lines of `type` (`run`, `tool`, `approval`, ...), in file order.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.values(
            |l| matches!(l, Line::Message(v) | Line::Meta(v) | Line::Other(v) if v["type"] == kind),
        )
    }

    pub fn parse(path: &Path, text: &str) -> Transcript {
        let mut header = Value::Null;
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = match serde_json::from_str::<Value>(raw) {
                Err(_) => Line::Damaged {
                    line: i + 1,
                    text: raw.to_string(),
                },
                Ok(v) if i == 0 && v["type"] == "session" => {
                    header = v;
                    continue;
                }
                Ok(v) => match v["type"].as_str() {
                    Some("message") => Line::Message(v),
                    Some("meta") => Line::Meta(v),
                    _ => Line::Other(v),
                },
            };
            lines.push(line);
        }
        Transcript {
            path: path.to_path_buf(),
            header,
            lines,
        }
    }

    /// Asserts that there is a header and that every line parses; returns the transcript.
    pub fn whole(self) -> Transcript {
        assert!(
            self.header.is_object(),
            "{}: no session header",
            self.path.display()
        );
        let damaged: Vec<&Line> = self.damaged().collect();
        assert!(
            damaged.is_empty(),
            "{}: damaged lines {damaged:?}",
            self.path.display()
        );
        self
    }

    /// The message lines, oldest first.
    pub fn messages(&self) -> Vec<Value> {
        self.values(|l| matches!(l, Line::Message(_)))
    }

    /// The meta lines (label, model), in file order.
    pub fn metas(&self) -> Vec<Value> {
        self.values(|l| matches!(l, Line::Meta(_)))
    }

    /// The JSON of the lines `pick` takes.
    fn values(&self, pick: impl Fn(&Line) -> bool) -> Vec<Value> {
        self.lines
            .iter()
            .filter(|l| pick(l))
            .filter_map(|l| match l {
                Line::Message(v) | Line::Meta(v) | Line::Other(v) => Some(v.clone()),
                Line::Damaged { .. } => None,
            })
            .collect()
    }

    /// The lines that do not parse.
    pub fn damaged(&self) -> impl Iterator<Item = &Line> {
        self.lines
            .iter()
            .filter(|l| matches!(l, Line::Damaged { .. }))
    }

    /// How many lines the file has, the header included.
    pub fn len(&self) -> usize {
        self.lines.len() + usize::from(!self.header.is_null())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

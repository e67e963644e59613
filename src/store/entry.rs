//! What the store knows of one transcript without reading it (an index entry), and how each
//! transcript line changes it.

use serde::{Deserialize, Serialize};

use super::transcript::Line;
use crate::protocol::{Patch, Session};

/// Characters of the last message kept as its preview.
pub(super) const PREVIEW_CHARS: usize = 120;

/// What the store knows of one transcript without reading it; also the index's record of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<String>,
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
    pub(super) message_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_message_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_message_id: Option<String>,
    /// Committed bytes.
    pub(super) len: u64,
    /// Lines in those bytes.
    pub(super) lines: u64,
    /// The agent the session belongs to.
    #[serde(default = "main_agent")]
    pub(super) agent_id: String,
}

/// The agent of a session recorded before sessions had one.
pub(super) fn main_agent() -> String {
    crate::config::DEFAULT_AGENT.to_string()
}

impl Entry {
    /// A transcript of `key` with id `id`, created at `created_at`, nothing in it yet.
    pub(super) fn new(key: String, id: &str, created_at: u64) -> Self {
        Self {
            key,
            session_id: id.to_string(),
            label: None,
            model: None,
            created_at,
            updated_at: created_at,
            message_count: 0,
            last_message_preview: None,
            last_message_id: None,
            len: 0,
            lines: 0,
            agent_id: main_agent(),
        }
    }

    /// The session as clients see it.
    pub(super) fn session(&self) -> Session {
        Session {
            key: self.key.clone(),
            session_id: self.session_id.clone(),
            label: self.label.clone(),
            model: self.model.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            message_count: self.message_count,
            last_message_preview: self.last_message_preview.clone(),
            agent_id: self.agent_id.clone(),
        }
    }

    /// Folds one line into the entry (`len` and `lines` are the caller's to set).
    pub(super) fn apply(&mut self, line: &Line) {
        match line {
            Line::Message(m) => {
                self.message_count += 1;
                self.updated_at = self.updated_at.max(m.ts);
                self.last_message_id = Some(m.id.clone());
                self.last_message_preview = preview(&m.content);
            }
            Line::Meta(meta) => {
                self.updated_at = self.updated_at.max(meta.ts);
                apply_patch(&mut self.label, &meta.label);
                apply_patch(&mut self.model, &meta.model);
            }
            _ => {}
        }
    }
}

fn apply_patch(slot: &mut Option<String>, patch: &Patch<String>) {
    match patch {
        Patch::Keep => {}
        Patch::Clear => *slot = None,
        Patch::Set(v) => *slot = Some(v.clone()),
    }
}

/// The preview of a message: its text on one line (runs of whitespace become one space), cut
/// to [`PREVIEW_CHARS`] characters; `None` when nothing but whitespace is left.
pub(super) fn preview(content: &str) -> Option<String> {
    let flat: String = content.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return None;
    }
    Some(flat.chars().take(PREVIEW_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Role, TranscriptMessage};
    use crate::store::transcript::Meta;

    #[test]
    fn a_preview_is_one_line_of_at_most_its_length_in_characters() {
        assert_eq!(
            preview("  hello \n\n  world\t!  ").as_deref(),
            Some("hello world !")
        );
        assert_eq!(preview(""), None);
        assert_eq!(preview(" \n\t "), None);
        let exact = "a".repeat(PREVIEW_CHARS);
        assert_eq!(preview(&exact).as_deref(), Some(exact.as_str()));
        let long = format!("{exact}bcd");
        assert_eq!(preview(&long).as_deref(), Some(exact.as_str()));
        // Characters, not bytes: a multi-byte character is never split.
        let wide = "é".repeat(PREVIEW_CHARS + 5);
        let cut = preview(&wide).unwrap_or_default();
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn lines_fold_into_counts_times_preview_and_patches() {
        let mut entry = Entry::new("k".into(), "id", 10);
        let mut m = crate::store::NewMessage::new(Role::User, "first  message").message;
        m.id = "m1".into();
        m.ts = 20;
        entry.apply(&Line::Message(Box::new(m.clone())));
        let older = TranscriptMessage {
            id: "m2".into(),
            ts: 5,
            content: " \n".into(),
            ..m
        };
        entry.apply(&Line::Message(Box::new(older)));
        assert_eq!(entry.message_count, 2);
        assert_eq!(
            entry.updated_at, 20,
            "a clock that went back never moves it back"
        );
        assert_eq!(entry.last_message_id.as_deref(), Some("m2"));
        assert_eq!(entry.last_message_preview, None);
        entry.apply(&Line::Meta(Meta {
            ts: 30,
            label: Patch::Set("L".into()),
            model: Patch::Set("M".into()),
        }));
        entry.apply(&Line::Meta(Meta {
            ts: 31,
            label: Patch::Keep,
            model: Patch::Clear,
        }));
        assert_eq!(entry.label.as_deref(), Some("L"));
        assert_eq!(entry.model, None);
        assert_eq!(entry.updated_at, 31);
        entry.apply(&Line::Bad("torn".into()));
        entry.apply(&Line::Unknown("future".into()));
        assert_eq!(entry.message_count, 2);
        let session = entry.session();
        assert_eq!((session.key.as_str(), session.created_at), ("k", 10));
    }
}

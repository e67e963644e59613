//! The system prompt of a run's model calls: the agent's `instructions`, then each instruction
//! file of its workspace that exists (`\n\n# <path>\n\n<content>`, each cut at 64 KiB), then the
//! content of the session's injected `system` messages (docs/PROTOCOL.md, "Agents and
//! instructions"). The files are read at the start of every run, so an edit applies to the next.

use std::path::Path;

use crate::config::AgentConfig;
use crate::protocol::{Role, TranscriptMessage};

use super::tools::{Protected, read_workspace_prefix};

/// The most bytes of one instruction file that reach the prompt.
pub const MAX_INSTRUCTIONS_FILE: u64 = 64 * 1024;

/// One instruction file as read: its configured path and its text (cut, with the marker).
#[derive(Debug, Clone, PartialEq)]
pub struct InstructionFile {
    /// The workspace-relative path, as configured.
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Reads the agent's instruction files that exist in `workspace`, confined like the file tools;
/// one that cannot be read is left out with a warning (the run goes on).
pub fn read_files(
    agent: &AgentConfig,
    workspace: &Path,
    protected: &Protected,
) -> Vec<InstructionFile> {
    let mut out = Vec::new();
    for path in &agent.instructions_files {
        match read_workspace_prefix(workspace, protected, path, MAX_INSTRUCTIONS_FILE) {
            Ok(None) => {}
            Ok(Some((bytes, more))) => {
                let mut text = String::from_utf8_lossy(&bytes).into_owned();
                if more {
                    // A cut may split a character; from_utf8_lossy already made it U+FFFD.
                    text.push_str(&format!(
                        "\n[... cut: {path} is longer than {MAX_INSTRUCTIONS_FILE} bytes]"
                    ));
                }
                out.push(InstructionFile {
                    path: path.clone(),
                    text,
                });
            }
            Err(why) => {
                tracing::warn!(file = %path, %why, "an instruction file cannot be read; left out of the system prompt");
            }
        }
    }
    out
}

/// The system prompt from the instructions, the files and the injected system messages of
/// `context`; `None` when all three are empty.
pub fn system_prompt(
    instructions: Option<&str>,
    files: &[InstructionFile],
    context: &[TranscriptMessage],
) -> Option<String> {
    let mut prompt = instructions.unwrap_or("").to_string();
    for file in files {
        prompt.push_str(&format!("\n\n# {}\n\n{}", file.path, file.text));
    }
    for m in context.iter().filter(|m| m.role == Role::System) {
        if !prompt.is_empty() {
            prompt.push_str("\n\n");
        }
        prompt.push_str(&m.content);
    }
    (!prompt.is_empty()).then_some(prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(text: &str) -> TranscriptMessage {
        crate::store::NewMessage::new(Role::System, text).message
    }

    #[test]
    fn instructions_then_files_then_injected_system_messages() {
        let files = vec![InstructionFile {
            path: "AGENTS.md".into(),
            text: "Use tabs.".into(),
        }];
        let context = vec![
            system("Be brief."),
            crate::store::NewMessage::new(Role::User, "hi").message,
        ];
        assert_eq!(
            system_prompt(Some("You are careful."), &files, &context).as_deref(),
            Some("You are careful.\n\n# AGENTS.md\n\nUse tabs.\n\nBe brief.")
        );
        assert_eq!(
            system_prompt(None, &[], &context).as_deref(),
            Some("Be brief.")
        );
        assert_eq!(system_prompt(None, &[], &context[1..]), None);
    }

    #[test]
    fn files_are_read_confined_and_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("AGENTS.md"), "x".repeat(70 * 1024)).expect("write");
        std::fs::write(outside.path().join("secret"), "s3cret").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("LINK.md"))
            .expect("symlink");
        let agent = AgentConfig {
            instructions_files: vec!["AGENTS.md".into(), "MISSING.md".into(), "LINK.md".into()],
            ..AgentConfig::default()
        };
        let protected = Protected {
            data_dir: outside.path().join("data"),
            config_file: outside.path().join("c.toml"),
        };
        let files = read_files(&agent, dir.path(), &protected);
        assert_eq!(
            files.len(),
            1,
            "the missing file is skipped, the escaping link refused"
        );
        assert!(files[0].text.starts_with(&"x".repeat(64 * 1024)));
        assert!(
            files[0].text.ends_with("longer than 65536 bytes]"),
            "{}",
            &files[0].text[65536..]
        );
    }
}

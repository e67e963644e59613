//! Which tools an agent is offered and which calls wait for a person: `tools.deny` and
//! `tools.ask` globs over tool names (built-in, plugin and MCP alike), and `tools.exec`.

use crate::config::{ExecMode, ToolsConfig};

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (also none)
/// and every other character for itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole name.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// An agent's tool rules.
pub(super) struct ToolPolicy<'a> {
    tools: &'a ToolsConfig,
}

impl<'a> ToolPolicy<'a> {
    /// The rules of `tools`.
    pub(super) fn new(tools: &'a ToolsConfig) -> Self {
        Self { tools }
    }

    /// Never offered to the model (and refused if called anyway).
    pub(super) fn denied(&self, name: &str) -> bool {
        self.tools.deny.iter().any(|p| glob_match(p, name))
    }

    /// Each call waits for a person (deny wins over ask).
    pub(super) fn asks(&self, name: &str) -> bool {
        !self.denied(name)
            && ((name == "exec" && self.tools.exec == ExecMode::Ask)
                || self.tools.ask.iter().any(|p| glob_match(p, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names_with_star_as_any_run() {
        for (pattern, name, expected) in [
            ("exec", "exec", true),
            ("exec", "exec2", false),
            ("exec", "xexec", false),
            ("*", "", true),
            ("*", "anything", true),
            ("files__*", "files__write", true),
            ("files__*", "files_write", false),
            ("*__write*", "files__write_file", true),
            ("*__write*", "files__read", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("**", "x", true),
        ] {
            assert_eq!(glob_match(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn deny_wins_over_ask_and_exec_ask_asks_for_exec_only() {
        let tools = ToolsConfig {
            exec: ExecMode::Ask,
            deny: vec!["danger*".into()],
            ask: vec!["write_*".into(), "danger_zone".into()],
            ..ToolsConfig::default()
        };
        let policy = ToolPolicy::new(&tools);
        assert!(policy.asks("exec"));
        assert!(policy.asks("write_file"));
        assert!(!policy.asks("read_file"));
        assert!(policy.denied("danger_zone") && !policy.asks("danger_zone"));
        let on = ToolsConfig {
            exec: ExecMode::On,
            ..ToolsConfig::default()
        };
        assert!(!ToolPolicy::new(&on).asks("exec"));
    }
}

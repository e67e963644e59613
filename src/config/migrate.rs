//! Version 1's `[agent]` table as version 2's `[agents.<default>]`: the rewrite of a config
//! file's text (every comment kept) and the same move on a parsed table, each naming its changes.
//!
//! docs/PROTOCOL.md, "Agents and instructions", is the rule: `agent.*` is an alias of
//! `agents.<gateway.default_agent>.*`; a file holding both is invalid; `agent.max_context_messages`
//! is dropped (compaction replaces it).

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table};

use super::error::ConfigError;

pub use super::types::DEFAULT_AGENT;

/// The version-1 key that version 2 drops.
const DROPPED: &str = "max_context_messages";

/// A file's text after the move, and one line per change (`agent.model -> agents.main.model`).
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// The rewritten file.
    pub text: String,
    /// What moved or went, in file order.
    pub changes: Vec<String>,
}

/// The line that says a version-1 key went.
fn dropped_line() -> String {
    format!("agent.{DROPPED} dropped (compaction replaces it)")
}

fn both_error(default: &str) -> ConfigError {
    ConfigError::new(
        "agent",
        format!(
            "the file holds both [agent] (version 1) and [agents.{default}] (version 2), which name the same agent: move the keys of [agent] into [agents.{default}] and delete [agent]"
        ),
    )
}

/// Rewrites `text` when it holds `[agent]`; `Ok(None)` when there is nothing to migrate.
pub fn migrate_text(text: &str) -> Result<Option<Migration>, ConfigError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| ConfigError::new("", format!("not valid TOML: {e}")))?;
    let Some(old) = doc.remove("agent") else {
        return Ok(None);
    };
    let default = doc
        .get("gateway")
        .and_then(|g| g.get("default_agent"))
        .and_then(Item::as_str)
        .unwrap_or(DEFAULT_AGENT)
        .to_string();
    let mut table = match old {
        Item::Table(t) => t,
        Item::Value(toml_edit::Value::InlineTable(t)) => t.into_table(),
        _ => {
            return Err(ConfigError::new(
                "agent",
                "expected a table: [agent] (version 1) or [agents.<id>] (version 2)",
            ));
        }
    };
    let mut changes = Vec::new();
    if table.remove(DROPPED).is_some() {
        changes.push(dropped_line());
    }
    let mut leaves = Vec::new();
    leaf_paths(&table, "", &mut leaves);
    changes.splice(
        0..0,
        leaves
            .iter()
            .map(|p| format!("agent.{p} -> agents.{default}.{p}")),
    );
    let dotted = table.is_dotted();
    match doc.get_mut("agents") {
        Some(Item::Table(agents)) => {
            if agents.contains_key(&default) {
                return Err(both_error(&default));
            }
            agents.insert(&default, Item::Table(table));
        }
        Some(Item::Value(toml_edit::Value::InlineTable(agents))) => {
            if agents.contains_key(&default) {
                return Err(both_error(&default));
            }
            agents.insert(
                &default,
                toml_edit::Value::InlineTable(table.into_inline_table()),
            );
        }
        Some(_) => {
            return Err(ConfigError::new(
                "agents",
                "expected a table of agents ([agents.<id>])",
            ));
        }
        None => {
            let mut agents = Table::new();
            agents.set_implicit(true);
            agents.set_dotted(dotted);
            agents.insert(&default, Item::Table(table));
            doc.insert("agents", Item::Table(agents));
        }
    }
    Ok(Some(Migration {
        text: doc.to_string(),
        changes,
    }))
}

/// The same move on a parsed table (the environment's `CLAWGATE_AGENT__*` and a file that
/// cannot be rewritten): `[agent]` merged under `agents.<default>`, returning the changes.
pub fn alias_table(root: &mut toml::Table, default: &str) -> Result<Vec<String>, ConfigError> {
    let Some(old) = root.remove("agent") else {
        return Ok(Vec::new());
    };
    let toml::Value::Table(mut old) = old else {
        return Err(ConfigError::new(
            "agent",
            "expected a table: [agent] (version 1) or [agents.<id>] (version 2)",
        ));
    };
    let mut changes = Vec::new();
    if old.remove(DROPPED).is_some() {
        changes.push(dropped_line());
    }
    let agents = root
        .entry("agents")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(agents) = agents else {
        return Err(ConfigError::new(
            "agents",
            "expected a table of agents ([agents.<id>])",
        ));
    };
    if agents.contains_key(default) {
        return Err(both_error(default));
    }
    let mut leaves = Vec::new();
    toml_leaf_paths(&old, "", &mut leaves);
    changes.splice(
        0..0,
        leaves
            .iter()
            .map(|p| format!("agent.{p} -> agents.{default}.{p}")),
    );
    agents.insert(default.to_string(), toml::Value::Table(old));
    Ok(changes)
}

/// What [`migrate_file`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum FileMigration {
    /// No file, or a file without `[agent]`.
    Nothing,
    /// The file was rewritten after a backup of it was written.
    Written {
        /// The backup, `<file>.bak.<ms>` (owner-only).
        backup: PathBuf,
        /// One line per change.
        changes: Vec<String>,
    },
    /// The file cannot be written: the loader applies the same move in memory at every start.
    ReadOnly {
        /// Why the file cannot be written.
        why: String,
        /// One line per change.
        changes: Vec<String>,
    },
}

/// What [`migrate_file`] would change in `path`, without changing anything: `Ok(None)` when
/// nothing is pending. A file that is not UTF-8 or not TOML is left to the loader's error.
pub fn pending(path: &Path) -> Result<Option<Migration>, ConfigError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(ConfigError::new(
                "",
                format!("cannot read {}: {err}", path.display()),
            ));
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(None);
    };
    if toml::from_str::<toml::Table>(&text).is_err() {
        return Ok(None);
    }
    migrate_text(&text)
}

/// Rewrites a version-1 file at `path` in place: a backup first (if it cannot be written,
/// nothing is changed and the error says what to do), then the new text, atomically. The
/// original bytes are never lost: they are in the backup before the file changes.
pub fn migrate_file(path: &Path) -> Result<FileMigration, ConfigError> {
    let Some(migration) = pending(path)? else {
        return Ok(FileMigration::Nothing);
    };
    // Root may open a file without write bits: those bits still say "leave it alone".
    let read_only = match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().readonly() => Some("it has no write permission".into()),
        _ => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .err()
            .map(|e| e.to_string()),
    };
    if let Some(why) = read_only {
        return Ok(FileMigration::ReadOnly {
            why,
            changes: migration.changes,
        });
    }
    let original = std::fs::read(path)
        .map_err(|err| ConfigError::new("", format!("cannot read {}: {err}", path.display())))?;
    let backup = backup_path(path, crate::util::now_ms());
    write_backup(&backup, &original).map_err(|err| {
        ConfigError::new(
            "",
            format!(
                "{} uses version 1's [agent] table and must be migrated, but its backup {} cannot be written ({err}); nothing was changed. Make its directory writable, or move the keys of [agent] into [agents.main] by hand (`clawgate config migrate --check` lists them)",
                path.display(),
                backup.display()
            ),
        )
    })?;
    crate::util::write_atomically(path, migration.text.as_bytes()).map_err(|err| {
        ConfigError::new(
            "",
            format!(
                "cannot write the migrated {} ({err}); the file is unchanged and its backup is {}",
                path.display(),
                backup.display()
            ),
        )
    })?;
    Ok(FileMigration::Written {
        backup,
        changes: migration.changes,
    })
}

fn backup_path(path: &Path, ts: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".bak.{ts}"));
    path.with_file_name(name)
}

/// Writes a new owner-only file with `bytes`, synced; an existing file is never overwritten.
fn write_backup(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::util::sync_dir(dir)?;
    }
    Ok(())
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn leaf_paths(table: &dyn toml_edit::TableLike, prefix: &str, out: &mut Vec<String>) {
    for (key, item) in table.iter() {
        let path = join(prefix, key);
        match item {
            Item::Table(t) => leaf_paths(t, &path, out),
            Item::Value(toml_edit::Value::InlineTable(t)) => leaf_paths(t, &path, out),
            _ => out.push(path),
        }
    }
}

fn toml_leaf_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = join(prefix, key);
        match value {
            toml::Value::Table(t) => toml_leaf_paths(t, &path, out),
            _ => out.push(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated(text: &str) -> Migration {
        match migrate_text(text) {
            Ok(Some(m)) => m,
            other => panic!("expected a migration, got {other:?}"),
        }
    }

    #[test]
    fn a_version_one_file_moves_under_the_default_agent_with_its_comments() {
        let m = migrated(
            "# top\n[gateway]\nport = 1 # the port\n\n# the agent\n[agent]\n# which model\nmodel = \"x\" # trailing\nmax_context_messages = 5\n\n[agent.tools]\nexec = \"on\"\n\n[[plugins]]\nname = \"a\"\n",
        );
        assert_eq!(
            m.text,
            "# top\n[gateway]\nport = 1 # the port\n\n# the agent\n[agents.main]\n# which model\nmodel = \"x\" # trailing\n\n[agents.main.tools]\nexec = \"on\"\n\n[[plugins]]\nname = \"a\"\n"
        );
        assert_eq!(
            m.changes,
            vec![
                "agent.model -> agents.main.model",
                "agent.tools.exec -> agents.main.tools.exec",
                "agent.max_context_messages dropped (compaction replaces it)",
            ]
        );
        assert_eq!(
            migrate_text(&m.text).ok(),
            Some(None),
            "a second pass changes nothing"
        );
    }

    #[test]
    fn dotted_and_inline_forms_and_a_named_default() {
        let m = migrated("agent.model = \"x\"\nagent.tools.exec = \"on\"\n[gateway]\nport = 2\n");
        assert_eq!(
            m.text,
            "agents.main.model = \"x\"\nagents.main.tools.exec = \"on\"\n[gateway]\nport = 2\n"
        );
        let m = migrated(
            "agent = { model = \"x\" }\n[gateway]\ndefault_agent = \"coder\"\n[agents.other]\nmodel = \"y\"\n",
        );
        let doc: toml::Table = toml::from_str(&m.text).expect("valid TOML");
        assert_eq!(doc["agents"]["coder"]["model"].as_str(), Some("x"));
        assert_eq!(doc["agents"]["other"]["model"].as_str(), Some("y"));
        assert_eq!(m.changes, vec!["agent.model -> agents.coder.model"]);
    }

    #[test]
    fn both_forms_at_once_are_refused_naming_both() {
        let err = migrate_text("[agent]\nmodel = \"x\"\n[agents.main]\nmodel = \"y\"\n")
            .expect_err("both");
        assert!(
            err.message.contains("[agent]") && err.message.contains("[agents.main]"),
            "{err}"
        );
        let mut root: toml::Table =
            toml::from_str("[agent]\nmodel = \"x\"\n[agents.main]\nmodel = \"y\"\n").expect("toml");
        assert!(alias_table(&mut root, "main").is_err());
    }

    #[test]
    fn a_file_is_backed_up_before_it_is_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let original = "# mine\n[agent]\nmodel = \"x\" # keep\n";
        std::fs::write(&path, original).expect("write");
        let FileMigration::Written { backup, changes } = migrate_file(&path).expect("migrates")
        else {
            panic!("expected a rewrite");
        };
        assert_eq!(changes, vec!["agent.model -> agents.main.model"]);
        assert_eq!(std::fs::read_to_string(&backup).expect("backup"), original);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("new"),
            "# mine\n[agents.main]\nmodel = \"x\" # keep\n"
        );
        assert_eq!(migrate_file(&path).expect("again"), FileMigration::Nothing);
    }

    #[test]
    fn the_table_alias_merges_beside_other_agents() {
        let mut root: toml::Table = toml::from_str(
            "[agent]\nmodel = \"x\"\nmax_context_messages = 3\n[agents.b]\nmodel = \"y\"\n",
        )
        .expect("toml");
        let changes = alias_table(&mut root, "main").expect("alias");
        assert_eq!(
            changes,
            vec![
                "agent.model -> agents.main.model",
                "agent.max_context_messages dropped (compaction replaces it)"
            ]
        );
        assert!(!root.contains_key("agent"));
        assert_eq!(root["agents"]["main"]["model"].as_str(), Some("x"));
        assert!(root["agents"]["main"].get("max_context_messages").is_none());
        assert_eq!(root["agents"]["b"]["model"].as_str(), Some("y"));
    }
}

//! Live configuration: apply a new snapshot, `config.patch` (RFC 7396 onto the TOML file,
//! keeping comments), and the file watcher. An invalid edit keeps the last good config.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{self, AuthMode, Config, ConfigError, Loaded, REDACTED, Reload};
use crate::protocol::ConfigChangedEvent;

/// What the live configuration needs from the application that hosts it.
pub trait LiveHost: Send + Sync + 'static {
    /// The live-configuration state.
    fn live(&self) -> &Live;
    /// The configuration in force.
    fn config(&self) -> Arc<Config>;
    /// Swaps in a new configuration snapshot and the hash of the file it came from.
    fn set_config(&self, config: Config, hash: String);
    /// The config file.
    fn config_path(&self) -> &std::path::PathBuf;
    /// The hash of the file the configuration in force came from.
    fn config_hash(&self) -> Arc<String>;
    /// The event hub (`config.changed`).
    fn hub(&self) -> &Arc<crate::events::EventHub>;
    /// Whether shutdown has begun (the watcher stops).
    fn is_shutting_down(&self) -> bool;
    /// A key under `agent` changed: rebuild what depends on it.
    fn agent_changed(&self, config: &Config);
    /// `mcp_servers` changed: start, stop or restart servers to match.
    fn mcp_changed(&self, config: &Config);
    /// The `plugins` configuration changed.
    fn plugins_changed(&self);
}

/// What an applied change did.
#[derive(Debug, Clone)]
pub struct Change {
    /// The file's new hash.
    pub hash: String,
    /// Keys whose effective value changed.
    pub changed_paths: Vec<String>,
    /// `restart` if any changed key needs one.
    pub reload_kind: Reload,
}

/// State of the live configuration.
pub struct Live {
    overrides: config::Overrides,
    env: Vec<(String, String)>,
    startup: Config,
    pending: Mutex<BTreeSet<String>>,
    /// What the watcher last refused (the file's hash, or [`GONE`]), so it is logged once.
    refused: Mutex<Option<String>>,
    /// Serializes patches and reloads.
    write: tokio::sync::Mutex<()>,
}

impl Live {
    /// From the configuration the gateway started with.
    pub fn new(loaded: &Loaded) -> Self {
        Self {
            overrides: loaded.overrides.clone(),
            env: loaded.env.clone(),
            startup: loaded.config.clone(),
            pending: Mutex::new(BTreeSet::new()),
            refused: Mutex::new(None),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// Restart-class keys changed since start.
    pub fn pending_restart(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the watcher refused `what` last time (it was logged then).
    fn refused_already(&self, what: &str) -> bool {
        self.refused
            .lock()
            .map(|last| last.as_deref() == Some(what))
            .unwrap_or(false)
    }

    /// Remembers that the watcher refused `what` (`None`: it applied a change).
    fn set_refused(&self, what: Option<&str>) {
        if let Ok(mut last) = self.refused.lock() {
            *last = what.map(str::to_string);
        }
    }

    /// Loads `bytes` as the config file: the file must be valid on its own (see
    /// [`config::parse_file`]) and, with the environment and flags applied, valid as a whole.
    /// Returns the loaded config and the file's own table.
    fn load(&self, path: &Path, bytes: &[u8]) -> Result<(Loaded, toml::Table), ConfigError> {
        // The effective config first: its message is the plainer one when both fail.
        let loaded = config::load_bytes(&self.overrides, self.env.clone(), bytes)?;
        let file = config::parse_file(path, bytes)?;
        Ok((loaded, file))
    }
}

/// Refuses a change that would switch token authentication off unless the new file itself says
/// `[gateway.auth] mode = "none"`: a truncated, half-written or stripped file must not open the
/// gateway to every caller. Compares effective configs, so a token from `CLAWGATE_TOKEN` counts.
fn guard_auth(old: &Config, new: &Config, file: &toml::Table) -> Result<(), ConfigError> {
    if old.gateway.auth.mode == AuthMode::Token
        && new.gateway.auth.mode == AuthMode::None
        && !config::says_auth_none(file)
    {
        return Err(ConfigError {
            path: "gateway.auth".into(),
            message: "this would switch token authentication off and make every caller admin: the file has no [gateway.auth] with mode = \"token\" and its tokens. To do that on purpose, set gateway.auth.mode = \"none\" explicitly".into(),
        });
    }
    Ok(())
}

/// Stands for a missing config file in [`Live::set_refused`].
const GONE: &str = "(no file)";

/// Swaps in `loaded` and tells everyone what changed.
pub fn apply<G: LiveHost>(gw: &Arc<G>, loaded: Loaded) -> Change {
    let old = gw.config();
    let changed = config::changed_paths(&old, &loaded.config);
    let live = gw.live();
    let restart_changed: Vec<&String> = changed
        .iter()
        .filter(|p| config::reload_kind(p) == Reload::Restart)
        .collect();
    // Pending: restart keys that differ from what the process started with.
    let still_pending: BTreeSet<String> = config::changed_paths(&live.startup, &loaded.config)
        .into_iter()
        .filter(|p| config::reload_kind(p) == Reload::Restart)
        .collect();
    live.set_refused(None);
    if let Ok(mut pending) = live.pending.lock() {
        *pending = still_pending;
    }
    let reload_kind = if restart_changed.is_empty() {
        Reload::Hot
    } else {
        Reload::Restart
    };
    let agent_changed = changed.iter().any(|p| p.starts_with("agents"));
    let plugins_changed = changed
        .iter()
        .any(|p| p == "plugins" || p.starts_with("plugins"));
    let (from, to) = (old.gateway.auth.mode, loaded.config.gateway.auth.mode);
    if from != to {
        tracing::warn!(
            from = from.as_str(),
            to = to.as_str(),
            "authentication mode changed"
        );
    }
    let new_config = loaded.config.clone();
    gw.set_config(loaded.config, loaded.hash.clone());
    if agent_changed {
        gw.agent_changed(&new_config);
    }
    if changed.iter().any(|p| p.starts_with("mcp_servers")) {
        gw.mcp_changed(&new_config);
    }
    if plugins_changed {
        gw.plugins_changed();
    }
    if !changed.is_empty() {
        tracing::info!(paths = ?changed, kind = ?reload_kind, "configuration changed");
    }
    gw.hub().emit(
        None,
        &ConfigChangedEvent {
            hash: loaded.hash.clone(),
            changed_paths: changed.clone(),
            reload_kind: match reload_kind {
                Reload::Hot => "hot".into(),
                Reload::Restart => "restart".into(),
            },
        },
    );
    Change {
        hash: loaded.hash,
        changed_paths: changed,
        reload_kind,
    }
}

/// Reads the file again; a valid change is applied, anything else logged and ignored: an invalid
/// file, a file invalid on its own (even if flags or the environment cover it), a file that is
/// gone or empty (zero bytes, or only whitespace and comments), and a file that would switch
/// token authentication off without saying `mode = "none"`. Each keeps the last good config.
pub async fn reload_from_disk<G: LiveHost>(gw: &Arc<G>) {
    let live = gw.live();
    let _guard = live.write.lock().await;
    let path = gw.config_path().clone();
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // No file at start and none now: nothing happened.
            if config::hash_bytes(b"") != *gw.config_hash() && !live.refused_already(GONE) {
                live.set_refused(Some(GONE));
                tracing::warn!(file = %path.display(), "the config file is gone; keeping the last good config (write the settings you want instead of deleting the file)");
            }
            return;
        }
        Err(err) => {
            tracing::error!(file = %path.display(), %err, "cannot read the config file; keeping the running config");
            return;
        }
    };
    let hash = config::hash_bytes(&bytes);
    if hash == *gw.config_hash() {
        live.set_refused(None);
        return;
    }
    if live.refused_already(&hash) {
        // Logged when it was refused.
        return;
    }
    if is_blank(&bytes) {
        live.set_refused(Some(&hash));
        // Truncated, or an editor's first step of a save in place: not a wish for the defaults.
        tracing::warn!(file = %path.display(), "the config file is empty; keeping the last good config");
        return;
    }
    let (loaded, file) = match live.load(&path, &bytes) {
        Ok(l) => l,
        Err(err) => {
            live.set_refused(Some(&hash));
            tracing::error!(file = %path.display(), key = %err.path, error = %err.message, "invalid config edit ignored; keeping the last good config");
            return;
        }
    };
    if let Err(err) = guard_auth(&gw.config(), &loaded.config, &file) {
        live.set_refused(Some(&hash));
        tracing::warn!(file = %path.display(), key = %err.path, error = %err.message, "config edit refused; keeping the last good config");
        return;
    }
    apply(gw, loaded);
}

/// Whether `bytes` are a TOML document without a single key (nothing, whitespace, comments).
fn is_blank(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(text).ok())
        .is_some_and(|table| table.is_empty())
}

/// Why `config.patch` changed nothing; the file is untouched in every case.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PatchError {
    /// The patch is not a JSON object.
    #[error("expected a JSON object (an RFC 7396 merge patch)")]
    NotAnObject,
    /// The patch sends back the redaction placeholder of `config.get` at `key` (dotted).
    #[error(
        "this is the {REDACTED} placeholder of config.get, not a value: send the real secret or leave the key out"
    )]
    Placeholder {
        /// Dotted key inside the patch.
        key: String,
    },
    /// The file changed since the caller read it.
    #[error(
        "stale baseHash: the config file changed (its hash is now {current}); call config.get and patch again"
    )]
    Stale {
        /// The file's hash now.
        current: String,
    },
    /// The file on disk cannot be edited by a patch.
    #[error("the config file is not UTF-8; fix it by hand")]
    NotUtf8,
    /// The file on disk is not TOML.
    #[error("the config file is not valid TOML ({0}); fix it by hand")]
    NotToml(String),
    /// The file would be invalid once patched.
    #[error("the patched config would be invalid: {}", .0.message)]
    Invalid(ConfigError),
    /// The patch would weaken authentication in a way only the file itself may.
    #[error("patch refused: {}", .0.message)]
    Refused(ConfigError),
    /// The file cannot be read or written.
    #[error("{0}")]
    Io(String),
}

/// Applies an RFC 7396 merge patch to the config file, if its hash is still `base_hash`.
pub async fn patch<G: LiveHost>(
    gw: &Arc<G>,
    patch: &Value,
    base_hash: &str,
) -> Result<Change, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject);
    };
    if let Some(key) = find_placeholder(&Value::Object(patch.clone()), "") {
        return Err(PatchError::Placeholder { key });
    }
    let live = gw.live();
    let _guard = live.write.lock().await;
    let path = gw.config_path().clone();
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return Err(PatchError::Io(format!(
                "cannot read {}: {err}",
                path.display()
            )));
        }
    };
    let current = config::hash_bytes(&bytes);
    if current != base_hash {
        return Err(PatchError::Stale { current });
    }
    let text = String::from_utf8(bytes).map_err(|_| PatchError::NotUtf8)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| PatchError::NotToml(e.to_string()))?;
    // Version 1's `agent.*` is the default agent's, unless the file still holds `[agent]`
    // (a read-only file is migrated in memory only): then it patches that table.
    let patch = if doc.contains_key("agent") {
        patch.clone()
    } else {
        alias_agent(patch.clone(), gw.config().default_agent_id())?
    };
    merge(doc.as_table_mut(), &patch, false);
    let new_text = doc.to_string();
    let (loaded, file) = live
        .load(&path, new_text.as_bytes())
        .map_err(PatchError::Invalid)?;
    guard_auth(&gw.config(), &loaded.config, &file).map_err(PatchError::Refused)?;
    write_atomically(&path, new_text.as_bytes())
        .await
        .map_err(|e| PatchError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(apply(gw, loaded))
}

/// Version 1's `agent.*` in a patch is `agents.<default>.*`.
fn alias_agent(
    mut patch: Map<String, Value>,
    default: &str,
) -> Result<Map<String, Value>, PatchError> {
    let Some(old) = patch.remove("agent") else {
        return Ok(patch);
    };
    let agents = patch
        .entry("agents")
        .or_insert_with(|| Value::Object(Map::new()));
    match agents {
        Value::Object(agents) if !agents.contains_key(default) => {
            agents.insert(default.to_string(), old);
            Ok(patch)
        }
        _ => Err(PatchError::Invalid(ConfigError::new(
            "agent",
            format!(
                "the patch holds both `agent` (version 1) and `agents` for the default agent `{default}`: send only `agents.{default}`"
            ),
        ))),
    }
}

/// The dotted path (below `path`, "" for the top) of the first redaction placeholder in `value`.
fn find_placeholder(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) if s == REDACTED => Some(path.to_string()),
        Value::Object(map) => map.iter().find_map(|(k, v)| match path {
            "" => find_placeholder(v, k),
            _ => find_placeholder(v, &format!("{path}.{k}")),
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_placeholder(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// RFC 7396 onto a TOML table: `null` removes, objects merge, anything else replaces. Comments
/// and formatting of untouched keys stay as they are. Inline tables (`gateway = { ... }`) are
/// merged into like the others; `inline` says `table` is one (or lies inside one), so what is
/// added to it is written inline too.
fn merge(table: &mut dyn toml_edit::TableLike, patch: &Map<String, Value>, inline: bool) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                table.remove(key);
            }
            Value::Object(inner) => {
                if let Some(item) = table.get_mut(key) {
                    let sub_inline = inline || item.is_inline_table();
                    if let Some(sub) = item.as_table_like_mut() {
                        merge(sub, inner, sub_inline);
                        continue;
                    }
                }
                let item = if inline {
                    let mut sub = toml_edit::InlineTable::new();
                    merge(&mut sub, inner, true);
                    toml_edit::Item::Value(toml_edit::Value::InlineTable(sub))
                } else {
                    let mut sub = toml_edit::Table::new();
                    merge(&mut sub, inner, false);
                    toml_edit::Item::Table(sub)
                };
                table.insert(key, item);
            }
            other => {
                // Inside an inline table only values may go (no `[[tables]]`).
                let item = if inline {
                    to_value(other).map(toml_edit::Item::Value)
                } else {
                    to_item(other)
                };
                let Some(mut item) = item else {
                    continue;
                };
                match table.get_mut(key) {
                    // Replace in place: the key and its comments stay, and so does the value's
                    // trailing comment (none inside an inline table, where it is only spacing).
                    Some(existing) => {
                        if let (false, Some(old), Some(new)) =
                            (inline, existing.as_value(), item.as_value_mut())
                        {
                            *new.decor_mut() = old.decor().clone();
                        }
                        *existing = item;
                    }
                    None => {
                        table.insert(key, item);
                    }
                }
            }
        }
    }
}

fn to_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            let mut array = toml_edit::Array::new();
            for item in items {
                if let Some(v) = to_value(item) {
                    array.push(v);
                }
            }
            toml_edit::Value::Array(array)
        }
        Value::Object(map) => {
            let mut inline = toml_edit::InlineTable::new();
            for (k, v) in map {
                if let Some(v) = to_value(v) {
                    inline.insert(k, v);
                }
            }
            toml_edit::Value::InlineTable(inline)
        }
    })
}

/// Arrays of objects become arrays of tables (`[[plugins]]`), as a person would write them.
fn to_item(value: &Value) -> Option<toml_edit::Item> {
    if let Value::Array(items) = value
        && !items.is_empty()
        && items.iter().all(Value::is_object)
    {
        let mut tables = toml_edit::ArrayOfTables::new();
        for item in items {
            if let Value::Object(map) = item {
                let mut t = toml_edit::Table::new();
                merge(&mut t, map, false);
                tables.push(t);
            }
        }
        return Some(toml_edit::Item::ArrayOfTables(tables));
    }
    to_value(value).map(toml_edit::Item::Value)
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = path.to_path_buf();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || crate::util::write_atomically(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// Watches the config file (its directory, so a file created or replaced later is seen) and
/// reloads it, debounced. The watcher lives as long as the returned handle.
pub fn watch<G: LiveHost>(gw: &Arc<G>) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, EventKind};
    use notify::{RecursiveMode, Watcher};
    let path = gw.config_path().clone();
    let dir = path.parent().map(Path::to_path_buf)?;
    let name = path.file_name()?.to_os_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening or reading the file is no edit (and the reload itself reads it).
        let edit = |kind: &EventKind| {
            !matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
        };
        if let Ok(event) = event
            && edit(&event.kind)
            && event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| tracing::warn!(%e, "cannot watch the config file; edits apply at restart"))
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), %e, "cannot watch the config directory; edits apply at restart");
        return None;
    }
    let gw = gw.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: editors write in several steps.
            loop {
                match tokio::time::timeout(Duration::from_millis(150), rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if gw.is_shutting_down() {
                return;
            }
            reload_from_disk(&gw).await;
        }
    });
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(text: &str, patch: Value) -> String {
        let mut doc: toml_edit::DocumentMut = text.parse().expect("toml");
        let Value::Object(patch) = patch else {
            panic!("a patch is an object")
        };
        merge(doc.as_table_mut(), &patch, false);
        doc.to_string()
    }

    #[test]
    fn config_patch_merges_into_inline_tables() {
        let out = merged(
            "gateway = { port = 1, max_batch = 8 } # mine\n",
            serde_json::json!({"gateway": {"max_batch": 9, "auth": {"mode": "none"}, "allowed_origins": [{"a": 1}]}}),
        );
        assert_eq!(
            out,
            "gateway = { port = 1, max_batch = 9, allowed_origins = [{ a = 1 }], auth = { mode = \"none\" } } # mine\n"
        );
        let out = merged(
            "gateway = { port = 1, max_batch = 8 }\n",
            serde_json::json!({"gateway": {"max_batch": 9}}),
        );
        assert_eq!(out, "gateway = { port = 1, max_batch = 9 }\n");
        let out = merged(
            "[gateway]\nport = 1\nauth = { mode = \"token\", tokens = [] }\n",
            serde_json::json!({"gateway": {"auth": {"tokens": null, "extra": {"x": null, "y": 2}}}}),
        );
        assert_eq!(
            out,
            "[gateway]\nport = 1\nauth = { mode = \"token\", extra = { y = 2 } }\n"
        );
    }
}

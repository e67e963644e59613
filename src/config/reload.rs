//! How each key reloads (one table), redaction of secrets, the diff of two configurations and
//! the annotated JSON Schema.

use serde::{Deserialize, Serialize};

use super::types::*;

/// Whether a key takes effect at once or at the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reload {
    /// Applied while the gateway runs.
    Hot,
    /// Applied at the next start; reported as pending until then.
    Restart,
}

/// Every configuration key, classified. The longest matching prefix wins; this one table feeds
/// the reloader, `config.schema` (`x-reload`) and the docs.
pub const RELOAD: &[(&str, Reload)] = &[
    ("gateway", Reload::Hot),
    ("gateway.bind", Reload::Restart),
    ("gateway.port", Reload::Restart),
    ("gateway.bind_wait_ms", Reload::Restart),
    // Read when a WebSocket connection opens: new connections get the new value.
    ("gateway.ping_interval_ms", Reload::Hot),
    ("gateway.ping_timeout_ms", Reload::Hot),
    ("gateway.send_buffer_bytes", Reload::Hot),
    // The acceptor is made once; the certificate files themselves are reloaded when they change.
    ("gateway.tls", Reload::Restart),
    // The hub is sized once.
    ("events", Reload::Restart),
    ("agents", Reload::Hot),
    ("plugins", Reload::Hot),
    // Adding, removing or changing a server starts, stops or restarts it at once.
    ("mcp_servers", Reload::Hot),
    // The recorder is installed once, at start.
    ("metrics", Reload::Restart),
    // Read when a model call's usage is recorded: later ledger lines get the new price.
    ("prices", Reload::Hot),
    // The announcement is made once, at start.
    ("discovery", Reload::Restart),
    // Read at each request.
    ("http", Reload::Hot),
    // The scheduler re-reads its jobs when the configuration changes.
    ("cron", Reload::Hot),
    // Read at each request to /hooks/<name>.
    ("hooks", Reload::Hot),
    // Adding, removing or changing a webhook starts, stops or restarts its worker at once.
    ("webhooks", Reload::Hot),
    // The NATS connection, streams and buckets are set up once, at start.
    ("cluster", Reload::Restart),
];

/// How `path` (dotted) reloads.
pub fn reload_kind(path: &str) -> Reload {
    RELOAD
        .iter()
        .filter(|(prefix, _)| {
            path == *prefix
                || path.starts_with(&format!("{prefix}."))
                || path.starts_with(&format!("{prefix}["))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or(Reload::Restart, |(_, kind)| *kind)
}

/// Every secret value the configuration holds or names: token values, the API keys in the
/// environment variables the agents read, plugin environments, MCP servers' environments
/// and headers. The log ring replaces them wherever they appear.
pub fn secrets(config: &Config) -> Vec<String> {
    let mut out: Vec<String> = config
        .gateway
        .auth
        .tokens
        .iter()
        .map(|t| t.token.to_string())
        .collect();
    for agent in config.agents.values() {
        let var = agent
            .api_key_env
            .clone()
            .unwrap_or_else(|| match agent.provider {
                crate::config::ProviderKind::Anthropic => "ANTHROPIC_API_KEY".into(),
                crate::config::ProviderKind::Openai => "OPENAI_API_KEY".into(),
                crate::config::ProviderKind::Echo => String::new(),
            });
        if let Some(key) = (!var.is_empty())
            .then(|| std::env::var(&var).ok())
            .flatten()
        {
            out.push(key);
        }
    }
    for plugin in &config.plugins {
        out.extend(plugin.env.values().cloned());
    }
    for server in config.mcp_servers.values() {
        out.extend(server.env.values().cloned());
        out.extend(server.headers.values().cloned());
    }
    out.extend(config.hooks.values().map(|h| h.secret.clone()));
    out.extend(config.webhooks.values().map(|w| w.secret.clone()));
    if let Some(cluster) = &config.cluster {
        for one in cluster.nats_url.split(',') {
            let rest = one.split_once("://").map_or(one, |(_, r)| r);
            if let Some((creds, _)) = rest.rsplit_once('@') {
                out.push(creds.to_string());
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The configuration as JSON with secrets (token values, plugin environment, MCP servers'
/// environment and headers, the secrets of hooks and webhooks) replaced.
pub fn redacted(config: &Config) -> serde_json::Value {
    let mut value = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    if let Some(tokens) = value
        .pointer_mut("/gateway/auth/tokens")
        .and_then(|t| t.as_array_mut())
    {
        for token in tokens {
            token["token"] = serde_json::Value::from(REDACTED);
        }
    }
    if let Some(plugins) = value.pointer_mut("/plugins").and_then(|p| p.as_array_mut()) {
        for plugin in plugins {
            if let Some(env) = plugin.get_mut("env").and_then(|e| e.as_object_mut()) {
                for v in env.values_mut() {
                    *v = serde_json::Value::from(REDACTED);
                }
            }
        }
    }
    if let Some(servers) = value
        .pointer_mut("/mcp_servers")
        .and_then(|s| s.as_object_mut())
    {
        for server in servers.values_mut() {
            for secret in ["env", "headers"] {
                if let Some(map) = server.get_mut(secret).and_then(|e| e.as_object_mut()) {
                    for v in map.values_mut() {
                        *v = serde_json::Value::from(REDACTED);
                    }
                }
            }
        }
    }
    if let Some(url) = value
        .pointer_mut("/cluster/nats_url")
        .and_then(|u| u.as_str().map(redact_url))
    {
        value["cluster"]["nats_url"] = serde_json::Value::from(url);
    }
    for table in ["/hooks", "/webhooks"] {
        if let Some(entries) = value.pointer_mut(table).and_then(|s| s.as_object_mut()) {
            for entry in entries.values_mut() {
                if entry.get("secret").is_some() {
                    entry["secret"] = serde_json::Value::from(REDACTED);
                }
            }
        }
    }
    value
}

/// Dotted paths of the leaves that differ between two configurations (arrays compare whole).
pub fn changed_paths(old: &Config, new: &Config) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        &p,
                        out,
                    );
                }
            }
            _ if a != b => out.push(path.to_string()),
            _ => {}
        }
    }
    let a = serde_json::to_value(old).unwrap_or_default();
    let b = serde_json::to_value(new).unwrap_or_default();
    let mut out = Vec::new();
    walk(&a, &b, "", &mut out);
    out
}

/// The JSON Schema of the configuration, each property annotated with `x-reload`.
pub fn schema() -> serde_json::Value {
    let generator = crate::protocol::schema_settings()
        .with(|s| s.definitions_path = "/definitions".into())
        .into_generator();
    let mut root = generator.into_root_schema_for::<Config>().to_value();
    let defs = root.get("definitions").cloned().unwrap_or_default();
    fn annotate(
        schema: &mut serde_json::Value,
        path: &str,
        defs: &serde_json::Value,
        depth: usize,
    ) -> Option<serde_json::Value> {
        if depth > 8 {
            return None;
        }
        let props = schema.get_mut("properties")?.as_object_mut()?;
        for (name, prop) in props.iter_mut() {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            prop["x-reload"] = serde_json::to_value(reload_kind(&p)).unwrap_or_default();
            // Nested objects are references to definitions: annotate a copy inline.
            // A reference, alone or wrapped in `allOf` (with a default beside it).
            let target = prop
                .get("$ref")
                .or_else(|| prop.pointer("/allOf/0/$ref"))
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_prefix("#/definitions/"))
                .and_then(|n| defs.get(n))
                .cloned();
            if let Some(mut inner) = target
                && inner.get("properties").is_some()
            {
                annotate(&mut inner, &p, defs, depth + 1);
                inner["x-reload"] = prop["x-reload"].clone();
                if let Some(d) = prop.get("description") {
                    inner["description"] = d.clone();
                }
                *prop = inner;
            }
            // A table of named tables (`[agents.<id>]`): each entry annotated as `<path>.*`.
            let entry = prop
                .pointer("/additionalProperties/$ref")
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_prefix("#/definitions/"))
                .and_then(|n| defs.get(n))
                .cloned();
            if let Some(mut inner) = entry
                && inner.get("properties").is_some()
            {
                let entry_path = format!("{p}.*");
                annotate(&mut inner, &entry_path, defs, depth + 1);
                inner["x-reload"] =
                    serde_json::to_value(reload_kind(&entry_path)).unwrap_or_default();
                prop["additionalProperties"] = inner;
            }
        }
        None
    }
    annotate(&mut root, "", &defs, 0);
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> Config {
        match toml::from_str(toml_text) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}"),
        }
    }

    #[test]
    fn the_longest_prefix_decides_and_unknown_keys_need_a_restart() {
        assert_eq!(reload_kind("gateway.max_batch"), Reload::Hot);
        assert_eq!(reload_kind("gateway.port"), Reload::Restart);
        assert_eq!(reload_kind("gateway.ping_interval_ms"), Reload::Hot);
        assert_eq!(reload_kind("events.buffer_size"), Reload::Restart);
        assert_eq!(reload_kind("plugins[2].env.X"), Reload::Hot);
        assert_eq!(reload_kind("agents.main.model"), Reload::Hot);
        assert_eq!(reload_kind("gateway.default_agent"), Reload::Hot);
        // A prefix counts only at a dot or a bracket: `gatewayx` is not under `gateway`.
        assert_eq!(reload_kind("gatewayx.port"), Reload::Restart);
        assert_eq!(reload_kind("unknown"), Reload::Restart);
    }

    #[test]
    fn the_diff_names_each_changed_leaf_and_arrays_whole() {
        let old = config("[gateway]\nport = 1\n[agents.main]\nmodel = \"a\"\n");
        assert!(changed_paths(&old, &old).is_empty());
        let new = config("[gateway]\nport = 2\n[agents.main]\nmodel = \"b\"\n");
        assert_eq!(
            changed_paths(&old, &new),
            vec!["agents.main.model", "gateway.port"]
        );
        let with_plugin = config(
            "[gateway]\nport = 1\n[agents.main]\nmodel = \"a\"\n[[plugins]]\nname = \"p\"\ncommand = [\"x\"]\n",
        );
        assert_eq!(changed_paths(&old, &with_plugin), vec!["plugins"]);
        let mut renamed = with_plugin.clone();
        renamed.plugins[0].command.push("y".into());
        assert_eq!(changed_paths(&with_plugin, &renamed), vec!["plugins"]);
        // An optional key appearing is a change of that key alone.
        let mut timed = with_plugin.clone();
        timed.plugins[0].call_timeout_ms = Some(5);
        assert_eq!(changed_paths(&with_plugin, &timed), vec!["plugins"]);
    }

    #[test]
    fn redaction_hides_every_secret_and_nothing_else() {
        let c = config(
            "[gateway.auth]\nmode = \"token\"\n[[gateway.auth.tokens]]\nname = \"ci\"\ntoken = \"s3cret\"\nscopes = [\"read\"]\n[[plugins]]\nname = \"p\"\ncommand = [\"x\"]\nenv = { KEY = \"k3y\" }\n",
        );
        let value = redacted(&c);
        let text = value.to_string();
        assert!(!text.contains("s3cret") && !text.contains("k3y"), "{text}");
        assert_eq!(value["gateway"]["auth"]["tokens"][0]["token"], REDACTED);
        assert_eq!(value["gateway"]["auth"]["tokens"][0]["name"], "ci");
        assert_eq!(value["plugins"][0]["env"]["KEY"], REDACTED);
        assert_eq!(value["plugins"][0]["command"][0], "x");
    }

    #[test]
    fn hook_and_webhook_secrets_are_redacted_and_reload_hot() {
        assert_eq!(reload_kind("hooks.gh.secret"), Reload::Hot);
        assert_eq!(reload_kind("webhooks.out.url"), Reload::Hot);
        let c = config(
            "[hooks.gh]\nsecret = \"in-s3cret\"\nmessage = \"{{body.x}}\"\nsessionKey = \"k\"\n[webhooks.out]\nurl = \"http://127.0.0.1:1/\"\nevents = [\"chat.final\"]\nsecret = \"out-s3cret\"\n",
        );
        let value = redacted(&c);
        let text = value.to_string();
        assert!(
            !text.contains("in-s3cret") && !text.contains("out-s3cret"),
            "{text}"
        );
        assert_eq!(value["hooks"]["gh"]["secret"], REDACTED);
        assert_eq!(value["hooks"]["gh"]["session_key"], "k");
        assert_eq!(value["webhooks"]["out"]["secret"], REDACTED);
        assert_eq!(value["webhooks"]["out"]["max_attempts"], 8);
        let all = secrets(&c);
        assert!(all.contains(&"in-s3cret".to_string()) && all.contains(&"out-s3cret".to_string()));
    }

    #[test]
    fn mcp_servers_reload_hot_and_their_env_and_headers_are_redacted() {
        assert_eq!(reload_kind("mcp_servers"), Reload::Hot);
        assert_eq!(reload_kind("mcp_servers.files.command"), Reload::Hot);
        let c = config(
            "[mcp_servers.files]\ncommand = [\"srv\", \"--flag\"]\nenv = { API_KEY = \"s3cret-env\" }\n[mcp_servers.web]\nurl = \"https://mcp.example.com/mcp\"\nheaders = { Authorization = \"Bearer s3cret-header\" }\n",
        );
        let value = redacted(&c);
        let text = value.to_string();
        assert!(
            !text.contains("s3cret-env") && !text.contains("s3cret-header"),
            "{text}"
        );
        assert_eq!(value["mcp_servers"]["files"]["env"]["API_KEY"], REDACTED);
        assert_eq!(
            value["mcp_servers"]["web"]["headers"]["Authorization"],
            REDACTED
        );
        // What is not a secret stays readable.
        assert_eq!(value["mcp_servers"]["files"]["command"][1], "--flag");
        assert_eq!(
            value["mcp_servers"]["web"]["url"],
            "https://mcp.example.com/mcp"
        );
        assert_eq!(value["mcp_servers"]["web"]["timeout_ms"], 60_000);
        assert_eq!(value["mcp_servers"]["web"]["enabled"], true);
        // config.schema shows the table and each key of an entry, with its reload kind.
        let schema = schema();
        let table = &schema["properties"]["mcp_servers"];
        assert_eq!(table["x-reload"], "hot");
        let entry = &table["additionalProperties"];
        for key in ["command", "url", "env", "headers", "enabled", "timeout_ms"] {
            assert_eq!(
                entry["properties"][key]["x-reload"], "hot",
                "{key}: {entry}"
            );
        }
        // A changed server is a change under its own name.
        let mut other = c.clone();
        if let Some(web) = other.mcp_servers.get_mut("web") {
            web.timeout_ms = 5;
        }
        assert_eq!(
            changed_paths(&c, &other),
            vec!["mcp_servers.web.timeout_ms"]
        );
    }
}

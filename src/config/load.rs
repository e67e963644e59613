//! The layered loader (defaults < TOML file < environment < flags) and validation.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::protocol::Scope;

pub use super::error::ConfigError;
use super::types::*;

/// What the command line contributes (the top layer).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `CLAWGATE_CONFIG`.
    pub config_path: Option<PathBuf>,
    /// `--data-dir` / `CLAWGATE_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--bind` / `CLAWGATE_BIND`.
    pub bind: Option<String>,
    /// `--port` / `CLAWGATE_PORT`.
    pub port: Option<u16>,
    /// `CLAWGATE_TOKEN`: token auth with one admin token.
    pub token: Option<String>,
}

/// A loaded, validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The config file's path (it may not exist).
    pub path: PathBuf,
    /// Hex SHA-256 of the file's bytes (of the empty string when there is none).
    pub hash: String,
    /// Keys set by the environment or flags.
    pub overridden_paths: Vec<String>,
    /// The top layers, kept to load the file again on a change.
    pub overrides: Overrides,
    /// The `CLAWGATE_*` environment as it was at start.
    pub env: Vec<(String, String)>,
    /// What the version-1 alias moved in memory (`agent.model -> agents.main.model`), to log.
    pub migrations: Vec<String>,
}

/// Environment variables with a meaning of their own, not config paths.
const SPECIAL_ENV: &[&str] = &[
    "CONFIG",
    "DATA_DIR",
    "BIND",
    "PORT",
    "TOKEN",
    "LOG",
    "LOG_FORMAT",
    "URL",
];

/// Loads the configuration from the file, `env` (pairs of name and value) and `overrides`.
pub fn load(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let data_dir = data_dir_of(overrides)?;
    let path = config_path_of(overrides, &data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return Err(ConfigError::new(
                "",
                format!("cannot read {}: {err}", path.display()),
            ));
        }
    };
    let loaded = load_bytes(overrides, env, &bytes)?;
    check_tls_files(&loaded.config.gateway.tls, &loaded.data_dir)?;
    Ok(loaded)
}

/// At start: the configured certificate and key files must be readable PEM files that belong
/// together. (A reload does not read them: `gateway.tls` applies at the next start, and the
/// files themselves are watched by the gateway.)
pub fn check_tls_files(tls: &TlsConfig, data_dir: &Path) -> Result<(), ConfigError> {
    let Some((cert, key)) = tls.files(data_dir) else {
        return Ok(());
    };
    crate::tls::read_certs(&cert).map_err(|m| ConfigError::new("gateway.tls.cert", m))?;
    crate::tls::read_key(&key).map_err(|m| ConfigError::new("gateway.tls.key", m))?;
    crate::tls::load_pair(&cert, &key).map_err(|m| ConfigError::new("gateway.tls", m))?;
    Ok(())
}

/// The data directory the overrides name (or the default).
pub fn data_dir_of(overrides: &Overrides) -> Result<PathBuf, ConfigError> {
    match &overrides.data_dir {
        Some(dir) => Ok(dir.clone()),
        None => default_data_dir(),
    }
}

/// The config file the overrides name (or `<dataDir>/clawgate.toml`).
pub fn config_path_of(overrides: &Overrides, data_dir: &Path) -> PathBuf {
    overrides
        .config_path
        .clone()
        .unwrap_or_else(|| data_dir.join("clawgate.toml"))
}

/// Hex SHA-256 of a config file's bytes.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Loads the configuration from the file's `bytes` (which may be empty) and the upper layers.
pub fn load_bytes(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
    bytes: &[u8],
) -> Result<Loaded, ConfigError> {
    let data_dir = data_dir_of(overrides)?;
    let path = config_path_of(overrides, &data_dir);
    let hash = hash_bytes(bytes);
    let mut root = parse_toml(&path, bytes)?;

    let mut overridden = Vec::new();
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("CLAWGATE_"))
        .collect();
    env.sort();
    // Version 1's `[agent]` names the default agent: the default as the environment or the
    // file sets it (the environment's own `agent.*` keys are moved below).
    let default_agent = env_default_agent(&env)
        .or_else(|| file_default_agent(&root))
        .unwrap_or_else(|| DEFAULT_AGENT.to_string());
    let migrations = super::migrate::alias_table(&mut root, &default_agent)?;
    for (name, value) in env.clone() {
        let Some(rest) = name.strip_prefix("CLAWGATE_") else {
            continue;
        };
        if SPECIAL_ENV.contains(&rest) {
            continue;
        }
        // Config paths have a section and a key (`CLAWGATE_AGENT__MODEL`); a single word is some
        // other tool's variable (`CLAWGATE_BIN` in our test scripts), not a config key.
        if !rest.contains("__") {
            continue;
        }
        let mut keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys[0] == "agent" {
            // `CLAWGATE_AGENT__MODEL` is `agents.<default>.model`.
            keys.splice(0..1, ["agents".to_string(), default_agent.clone()]);
        }
        if keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::new(
                "",
                format!("environment variable {name}: empty key (use `__` between levels)"),
            ));
        }
        set_path(&mut root, &keys, parse_env_value(&value))?;
        overridden.push(keys.join("."));
    }
    if let Some(bind) = &overrides.bind {
        set_path(
            &mut root,
            &["gateway".into(), "bind".into()],
            toml::Value::String(bind.clone()),
        )?;
        overridden.push("gateway.bind".into());
    }
    if let Some(port) = overrides.port {
        set_path(
            &mut root,
            &["gateway".into(), "port".into()],
            toml::Value::Integer(i64::from(port)),
        )?;
        overridden.push("gateway.port".into());
    }

    let mut config = from_table(root)?;
    config.agents.entry(DEFAULT_AGENT.to_string()).or_default();
    if let Some(token) = &overrides.token {
        config.gateway.auth.mode = AuthMode::Token;
        config.gateway.auth.tokens.push(TokenConfig {
            name: "CLAWGATE_TOKEN".into(),
            token: token.clone(),
            scopes: vec![Scope::Admin],
        });
        overridden.push("gateway.auth".into());
    }
    validate(&config)?;
    overridden.sort();
    overridden.dedup();
    Ok(Loaded {
        config,
        data_dir,
        path,
        hash,
        overridden_paths: overridden,
        overrides: overrides.clone(),
        env,
        migrations,
    })
}

/// `gateway.default_agent` as the environment sets it.
fn env_default_agent(env: &[(String, String)]) -> Option<String> {
    env.iter()
        .find(|(name, _)| name == "CLAWGATE_GATEWAY__DEFAULT_AGENT")
        .map(|(_, value)| value.clone())
}

/// `gateway.default_agent` as the file sets it.
fn file_default_agent(root: &toml::Table) -> Option<String> {
    root.get("gateway")
        .and_then(toml::Value::as_table)
        .and_then(|g| g.get("default_agent"))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
}

fn parse_toml(path: &Path, bytes: &[u8]) -> Result<toml::Table, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ConfigError::new("", format!("{} is not UTF-8", path.display())))?;
    toml::from_str(text).map_err(|err| {
        ConfigError::new(
            "",
            format!("{} is not valid TOML: {}", path.display(), err.message()),
        )
    })
}

/// Parses the config file's `bytes` on their own, before the environment and flags are layered
/// on: they must be UTF-8 TOML that deserializes into a [`Config`] by itself (types, ranges,
/// unknown keys), so a flag such as `--port` cannot hide a bad value that the next start,
/// without that flag, would refuse. [`validate`] is not applied: the upper layers may complete
/// the file (a token from `CLAWGATE_TOKEN`). Returns the file's table.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<toml::Table, ConfigError> {
    let root = parse_toml(path, bytes)?;
    let mut aliased = root.clone();
    let default = file_default_agent(&root).unwrap_or_else(|| DEFAULT_AGENT.to_string());
    super::migrate::alias_table(&mut aliased, &default)?;
    from_table(aliased).map_err(|err| ConfigError {
        message: format!(
            "{} (in the file itself: a flag or the environment may set this key now, but a start without them would refuse the file)",
            err.message
        ),
        ..err
    })?;
    Ok(root)
}

/// Whether a config file's table says `[gateway.auth] mode = "none"` in so many words.
pub fn says_auth_none(file: &toml::Table) -> bool {
    file.get("gateway")
        .and_then(toml::Value::as_table)
        .and_then(|g| g.get("auth"))
        .and_then(toml::Value::as_table)
        .and_then(|a| a.get("mode"))
        .and_then(toml::Value::as_str)
        == Some("none")
}

/// Deserializes a TOML table into a [`Config`], naming the full path of any bad key.
pub fn from_table(root: toml::Table) -> Result<Config, ConfigError> {
    let value = toml::Value::Table(root);
    serde_path_to_error::deserialize::<_, Config>(value).map_err(|err| {
        let mut path = err.path().to_string();
        let message = err.inner().message().to_string();
        // For an unknown key the path names its parent; name the key itself.
        if let Some(key) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            && path.rsplit('.').next() != Some(key)
        {
            path = if path == "." || path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
        }
        if path == "." {
            path.clear();
        }
        ConfigError::new(path, message)
    })
}

/// Checks what types alone cannot.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let gw = &config.gateway;
    // `lan` and `tailnet` are not loopback: refused here, before any interface is looked up.
    let target = parse_bind(&gw.bind)?;
    if gw.auth.mode == AuthMode::None && !target.is_loopback() {
        return Err(ConfigError::new(
            "gateway.auth.mode",
            format!(
                "refusing to listen on {} without authentication: anyone who can reach it could drive \
                 your agent. Set a token (CLAWGATE_TOKEN=<a long random secret>, or \
                 gateway.auth.mode = \"token\" with [[gateway.auth.tokens]] in the config file), or bind \
                 127.0.0.1",
                gw.bind
            ),
        ));
    }
    if gw.auth.mode == AuthMode::Token && gw.auth.tokens.is_empty() {
        return Err(ConfigError::new(
            "gateway.auth.tokens",
            "mode is \"token\" but no token is configured: add [[gateway.auth.tokens]] name, token, scopes, or set CLAWGATE_TOKEN",
        ));
    }
    for (i, token) in gw.auth.tokens.iter().enumerate() {
        if token.token.len() < 8 {
            return Err(ConfigError::new(
                format!("gateway.auth.tokens[{i}].token"),
                "expected a secret of at least 8 characters",
            ));
        }
        if token.scopes.is_empty() {
            return Err(ConfigError::new(
                format!("gateway.auth.tokens[{i}].scopes"),
                "expected at least one of \"read\", \"write\", \"admin\"",
            ));
        }
    }
    for (i, origin) in gw.allowed_origins.iter().enumerate() {
        let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.ends_with('/');
        if !ok {
            return Err(ConfigError::new(
                format!("gateway.allowed_origins[{i}]"),
                format!(
                    "found {origin:?}, expected an origin like \"https://app.example.com\" (scheme, host, optional port, no path)"
                ),
            ));
        }
    }
    let positive = [
        ("gateway.max_connections", gw.max_connections as u64),
        ("gateway.max_batch", gw.max_batch as u64),
        (
            "gateway.max_subscriptions_per_connection",
            gw.max_subscriptions_per_connection as u64,
        ),
        (
            "gateway.max_in_flight_per_connection",
            gw.max_in_flight_per_connection as u64,
        ),
        ("gateway.ping_interval_ms", gw.ping_interval_ms),
        ("gateway.ping_timeout_ms", gw.ping_timeout_ms),
        ("gateway.max_queued_bytes", gw.max_queued_bytes as u64),
        ("gateway.body_timeout_ms", gw.body_timeout_ms),
        ("gateway.auth.failure_window_ms", gw.auth.failure_window_ms),
        (
            "events.subscriber_queue_bytes",
            config.events.subscriber_queue_bytes as u64,
        ),
        (
            "events.subscriber_queue",
            config.events.subscriber_queue as u64,
        ),
    ];
    for (path, value) in positive {
        if value == 0 {
            return Err(ConfigError::new(
                path,
                "found 0, expected a number greater than 0",
            ));
        }
    }
    if u32::try_from(gw.max_queued_bytes).is_err() {
        return Err(ConfigError::new(
            "gateway.max_queued_bytes",
            format!("found {}, expected at most 4294967295", gw.max_queued_bytes),
        ));
    }
    if gw.tick_interval_ms < 100 {
        return Err(ConfigError::new(
            "gateway.tick_interval_ms",
            format!("found {}, expected at least 100", gw.tick_interval_ms),
        ));
    }
    if gw.max_payload_bytes < 1024 {
        return Err(ConfigError::new(
            "gateway.max_payload_bytes",
            format!("found {}, expected at least 1024", gw.max_payload_bytes),
        ));
    }
    validate_tls(&gw.tls)?;
    if let Some(name) = &config.discovery.name
        && (name.trim().is_empty() || name.len() > 63 || name.contains(['.', '\0']))
    {
        return Err(ConfigError::new(
            "discovery.name",
            format!(
                "found {name:?}, expected a name of 1 to 63 bytes without `.` (one DNS label, such as \"living-room\")"
            ),
        ));
    }
    validate_agents(config)?;
    let mut names = std::collections::BTreeSet::new();
    for (i, plugin) in config.plugins.iter().enumerate() {
        if !names.insert(plugin.name.as_str()) {
            return Err(ConfigError::new(
                format!("plugins[{i}].name"),
                format!("plugin {:?} is declared twice", plugin.name),
            ));
        }
    }
    for (name, server) in &config.mcp_servers {
        validate_mcp_server(name, server)?;
    }
    for (name, job) in &config.cron {
        validate_cron_job(config, name, job)?;
    }
    validate_prices(config)?;
    validate_hooks(config)?;
    validate_webhooks(config)?;
    if let Some(cluster) = &config.cluster {
        validate_cluster(cluster)?;
    }
    Ok(())
}

/// `[cluster]`: NATS URLs, a node id of safe characters (it is part of NATS subjects and keys),
/// 1 to 5 replicas, a lease of at least a second, TLS key and certificate together.
fn validate_cluster(cluster: &crate::config::types::ClusterConfig) -> Result<(), ConfigError> {
    for one in cluster.nats_url.split(',') {
        let one = one.trim();
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| one.starts_with(s));
        let host = one.split_once("://").map_or("", |(_, r)| r);
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if !scheme_ok || host.is_empty() || host.contains('/') {
            return Err(ConfigError::new(
                "cluster.nats_url",
                format!(
                    "found {:?}, expected NATS server URLs like \"nats://127.0.0.1:4222\" (several separated by commas)",
                    redact_url(one)
                ),
            ));
        }
    }
    if let Some(id) = &cluster.node_id
        && !is_node_id(id)
    {
        return Err(ConfigError::new(
            "cluster.node_id",
            format!("found {id:?}, expected 1 to 64 letters, digits, `-` or `_` (like \"node-a\")"),
        ));
    }
    if !(1..=5).contains(&cluster.replicas) {
        return Err(ConfigError::new(
            "cluster.replicas",
            format!(
                "found {}, expected 1 to 5 (JetStream's limit)",
                cluster.replicas
            ),
        ));
    }
    if cluster.lease_ms < 1_000 {
        return Err(ConfigError::new(
            "cluster.lease_ms",
            format!("found {}, expected at least 1000 (ms)", cluster.lease_ms),
        ));
    }
    if cluster.tls_cert.is_some() != cluster.tls_key.is_some() {
        return Err(ConfigError::new(
            if cluster.tls_cert.is_some() {
                "cluster.tls_key"
            } else {
                "cluster.tls_cert"
            },
            "expected tls_cert and tls_key together (the client certificate and its key)",
        ));
    }
    Ok(())
}

/// The name `/hooks/agent` takes: no `[hooks.<name>]` may use it.
pub const RESERVED_HOOK: &str = "agent";

/// `[hooks.<name>]`: a name of the MCP servers' form (not `agent`), a secret, a template
/// whose placeholders are `{{body}}` or `{{body.<path>}}`.
fn validate_hooks(config: &Config) -> Result<(), ConfigError> {
    for (name, hook) in &config.hooks {
        if !is_mcp_server_name(name) || name == RESERVED_HOOK {
            return Err(ConfigError::new(
                format!("hooks.{name}"),
                format!(
                    "found the hook name {name:?}, expected lowercase letters and digits in words joined by single `-` \
                     (like \"github\" or \"ci-alerts\"), at most {MCP_SERVER_NAME_MAX} characters, not \"{RESERVED_HOOK}\" (that is /hooks/agent)"
                ),
            ));
        }
        if hook.secret.is_empty() {
            return Err(ConfigError::new(
                format!("hooks.{name}.secret"),
                "expected the secret the sender signs with (a long random string)",
            ));
        }
        if let Err(message) = check_template(&hook.message) {
            return Err(ConfigError::new(format!("hooks.{name}.message"), message));
        }
        if let Some(key) = &hook.session_key
            && let Err(reason) = crate::protocol::validate_session_key(key)
        {
            return Err(ConfigError::new(
                format!("hooks.{name}.session_key"),
                reason,
            ));
        }
    }
    Ok(())
}

/// Checks a hook's message template: every `{{` closes, and holds `body` or `body.<path>`.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!(
                "a `{{{{` at byte {} is not closed by `}}}}`",
                template.len() - rest.len() + start
            ));
        };
        let inner = after[..end].trim();
        let ok = inner == "body"
            || inner
                .strip_prefix("body.")
                .is_some_and(|path| path.split('.').all(|part| !part.is_empty()));
        if !ok {
            return Err(format!(
                "found the placeholder {{{{{inner}}}}}, expected {{{{body}}}} or {{{{body.<path>}}}} such as {{{{body.issue.title}}}}"
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// `[webhooks.<name>]`: a name of the MCP servers' form, an `http(s)://` URL, valid event
/// patterns, a secret, at least one attempt.
fn validate_webhooks(config: &Config) -> Result<(), ConfigError> {
    for (name, hook) in &config.webhooks {
        let at = |key: &str| format!("webhooks.{name}.{key}");
        if !is_mcp_server_name(name) {
            return Err(ConfigError::new(
                format!("webhooks.{name}"),
                format!(
                    "found the webhook name {name:?}, expected lowercase letters and digits in words joined by single `-` \
                     (like \"slack\" or \"audit-log\"), at most {MCP_SERVER_NAME_MAX} characters"
                ),
            ));
        }
        let url_ok = (hook.url.starts_with("http://") || hook.url.starts_with("https://"))
            && hook.url.parse::<http::Uri>().is_ok();
        if !url_ok {
            return Err(ConfigError::new(
                at("url"),
                format!(
                    "found {:?}, expected an http:// or https:// URL such as \"https://example.com/clawgate\"",
                    hook.url
                ),
            ));
        }
        if hook.events.is_empty() {
            return Err(ConfigError::new(
                at("events"),
                "expected at least one event name or pattern, like [\"chat.final\", \"sessions.*\"]",
            ));
        }
        if let Err(path) = crate::events::Filter::new(Some(&hook.events), None) {
            return Err(ConfigError::new(
                format!("webhooks.{name}.{path}"),
                "expected an event name, a prefix ending in `.*` (\"sessions.*\") or a chat state (\"chat.final\")",
            ));
        }
        if hook.secret.is_empty() {
            return Err(ConfigError::new(
                at("secret"),
                "expected the secret deliveries are signed with (a long random string)",
            ));
        }
        for (key, value) in [
            ("max_attempts", u64::from(hook.max_attempts)),
            ("timeout_ms", hook.timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(
                    at(key),
                    "found 0, expected a number greater than 0",
                ));
            }
        }
    }
    Ok(())
}

/// A `[cron.<name>]` job: its name, its schedule (checked by the scheduler's own parser), a
/// message, a session key and a configured agent.
fn validate_cron_job(config: &Config, name: &str, job: &CronJobConfig) -> Result<(), ConfigError> {
    if crate::protocol::check_cron_name(name).is_err() {
        return Err(ConfigError::new(
            format!("cron.{name}"),
            format!("found the job name {name:?}, expected 1 to 32 characters of a-z 0-9 -"),
        ));
    }
    let schedule = crate::cron::schedule::Schedule::new(
        job.cron.as_deref(),
        job.tz.as_deref(),
        job.every_ms,
        job.at,
    );
    if let Err(err) = schedule {
        let key = match err.field {
            "" => "cron".to_string(),
            "everyMs" => "every_ms".to_string(),
            other => other.to_string(),
        };
        let message = err.message.replace("everyMs", "every_ms");
        return Err(ConfigError::new(format!("cron.{name}.{key}"), message));
    }
    if job.message.trim().is_empty() {
        return Err(ConfigError::new(
            format!("cron.{name}.message"),
            "expected the message each firing sends, found none",
        ));
    }
    if let Some(key) = &job.session_key
        && let Err(err) = crate::protocol::validate_session_key(key)
    {
        return Err(ConfigError::new(format!("cron.{name}.session_key"), err));
    }
    if let Some(agent) = &job.agent
        && config.agent(agent).is_none()
    {
        return Err(ConfigError::new(
            format!("cron.{name}.agent"),
            format!("no agent {agent:?} is configured ([agents.{agent}])"),
        ));
    }
    Ok(())
}

/// Every rate of `[prices]` is a finite number of USD, at least 0.
fn validate_prices(config: &Config) -> Result<(), ConfigError> {
    for (model, price) in &config.prices {
        let rates = [
            ("input_per_mtok", price.input_per_mtok),
            ("output_per_mtok", price.output_per_mtok),
            ("cache_read_per_mtok", price.cache_read_per_mtok),
            ("cache_write_per_mtok", price.cache_write_per_mtok),
        ];
        for (key, rate) in rates {
            if let Some(rate) = rate
                && !(rate.is_finite() && rate >= 0.0)
            {
                return Err(ConfigError::new(
                    format!("prices.{model}.{key}"),
                    format!(
                        "found {rate}, expected a finite number of USD per million tokens, at least 0"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn validate_tls(tls: &TlsConfig) -> Result<(), ConfigError> {
    if tls.self_signed && (tls.cert.is_some() || tls.key.is_some()) {
        return Err(ConfigError::new(
            "gateway.tls.self_signed",
            "self_signed = true makes its own certificate: remove `cert` and `key`, or set self_signed = false to serve those files",
        ));
    }
    match (&tls.cert, &tls.key) {
        (Some(_), None) => Err(ConfigError::new(
            "gateway.tls.key",
            "`cert` is set but `key` is not: give both (PEM files), or neither",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "gateway.tls.cert",
            "`key` is set but `cert` is not: give both (PEM files), or neither",
        )),
        (Some(p), _) | (_, Some(p)) if p.as_os_str().is_empty() => Err(ConfigError::new(
            "gateway.tls",
            "found an empty path, expected a PEM file's path",
        )),
        _ => Ok(()),
    }
}

/// Most characters of an MCP server's name.
pub const MCP_SERVER_NAME_MAX: usize = 32;

/// Whether `name` is a valid MCP server name: `[a-z0-9]+(-[a-z0-9]+)*`, at most 32 characters
/// (no `_`: `__` separates the server from the tool in the names the model sees).
pub fn is_mcp_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MCP_SERVER_NAME_MAX
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn validate_mcp_server(name: &str, server: &McpServerConfig) -> Result<(), ConfigError> {
    let at = |key: &str| {
        if key.is_empty() {
            format!("mcp_servers.{name}")
        } else {
            format!("mcp_servers.{name}.{key}")
        }
    };
    if !is_mcp_server_name(name) {
        return Err(ConfigError::new(
            at(""),
            format!(
                "found the server name {name:?}, expected lowercase letters and digits in words joined by single `-` \
                 (like \"files\" or \"web-search\"), at most {MCP_SERVER_NAME_MAX} characters"
            ),
        ));
    }
    match (&server.command, &server.url) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                at(""),
                "has both `command` and `url`: give `command` for a stdio server or `url` for a streamable HTTP one, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                at(""),
                "has neither `command` nor `url`: give `command = [\"program\", \"arg\"]` for a stdio server or `url = \"https://…\"` for a streamable HTTP one",
            ));
        }
        (Some(command), None) => {
            if command.first().is_none_or(|program| program.is_empty()) {
                return Err(ConfigError::new(
                    at("command"),
                    "expected the program and its arguments, like [\"npx\", \"-y\", \"some-mcp-server\"]",
                ));
            }
            if !server.headers.is_empty() {
                return Err(ConfigError::new(
                    at("headers"),
                    "headers are for a `url` server; a `command` server takes `env`",
                ));
            }
        }
        (None, Some(url)) => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err(ConfigError::new(
                    at("url"),
                    format!(
                        "found {url:?}, expected an http:// or https:// URL such as \"https://mcp.example.com/mcp\""
                    ),
                ));
            }
            if !server.env.is_empty() {
                return Err(ConfigError::new(
                    at("env"),
                    "env is for a `command` server; a `url` server takes `headers`",
                ));
            }
        }
    }
    for key in server.env.keys() {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(ConfigError::new(
                at("env"),
                format!("found the variable name {key:?}, expected a name without `=` or NUL"),
            ));
        }
    }
    for (key, value) in &server.headers {
        if http::HeaderName::from_bytes(key.as_bytes()).is_err() {
            return Err(ConfigError::new(
                at("headers"),
                format!("found the header name {key:?}, expected a valid HTTP header name"),
            ));
        }
        // The transport sets these itself (the SDK refuses a request that overrides them).
        const RESERVED: &[&str] = &[
            "accept",
            "content-type",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
        ];
        if RESERVED.iter().any(|r| key.eq_ignore_ascii_case(r)) {
            return Err(ConfigError::new(
                format!("{}.{key}", at("headers")),
                "this header is set by the MCP transport itself; remove it",
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(ConfigError::new(
                format!("{}.{key}", at("headers")),
                "expected a header value of visible ASCII characters and spaces",
            ));
        }
    }
    if server.timeout_ms == 0 {
        return Err(ConfigError::new(
            at("timeout_ms"),
            "found 0, expected a number greater than 0",
        ));
    }
    Ok(())
}

/// Whether `id` is an agent id: 1 to 32 characters of `a-z 0-9 -` (no `_`: `__` separates the
/// levels of an environment variable's name).
pub fn is_agent_id(id: &str) -> bool {
    crate::protocol::check_agent_id(id).is_ok()
}

fn validate_agents(config: &Config) -> Result<(), ConfigError> {
    for (id, agent) in &config.agents {
        if !is_agent_id(id) {
            return Err(ConfigError::new(
                format!("agents.{id}"),
                format!("found the agent id {id:?}, expected 1 to 32 characters of a-z 0-9 -"),
            ));
        }
        let context = &agent.context;
        if context.max_tokens == 0 {
            return Err(ConfigError::new(
                format!("agents.{id}.context.max_tokens"),
                "found 0, expected a number greater than 0",
            ));
        }
        if !(context.compact_threshold > 0.0 && context.compact_threshold <= 1.0) {
            return Err(ConfigError::new(
                format!("agents.{id}.context.compact_threshold"),
                format!(
                    "found {}, expected a share above 0 and at most 1",
                    context.compact_threshold
                ),
            ));
        }
        if agent.max_turns == 0 {
            return Err(ConfigError::new(
                format!("agents.{id}.max_turns"),
                "found 0, expected a number greater than 0",
            ));
        }
        for (i, file) in agent.instructions_files.iter().enumerate() {
            let path = Path::new(file);
            if file.is_empty()
                || path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(ConfigError::new(
                    format!("agents.{id}.instructions_files[{i}]"),
                    format!(
                        "found {file:?}, expected a path inside the workspace (relative, without ..)"
                    ),
                ));
            }
        }
    }
    let default = &config.gateway.default_agent;
    if !config.agents.contains_key(default) {
        let known: Vec<&str> = config.agents.keys().map(String::as_str).collect();
        return Err(ConfigError::new(
            "gateway.default_agent",
            format!(
                "names the agent {default:?}, which is not configured (agents: {}); add [agents.{default}] or name one of them",
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Parses `gateway.bind`: an IP address, `localhost`, `loopback`, `lan` or `tailnet`. Names
/// are resolved to an address at start ([`crate::net::resolve`]), not here.
pub fn parse_bind(bind: &str) -> Result<crate::net::BindTarget, ConfigError> {
    crate::net::BindTarget::parse(bind).ok_or_else(|| {
        ConfigError::new(
            "gateway.bind",
            format!(
                "found {bind:?}, expected an IP address such as \"127.0.0.1\", \"::1\" or \"0.0.0.0\", \
                 or one of \"loopback\", \"lan\" (the address of the default route's interface), \
                 \"tailnet\" (the Tailscale address)"
            ),
        )
    })
}

fn default_data_dir() -> Result<PathBuf, ConfigError> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(Path::new(&home).join(".clawgate")),
        _ => Err(ConfigError::new(
            "",
            "HOME is not set: pass --data-dir or set CLAWGATE_DATA_DIR",
        )),
    }
}

/// An environment value is TOML when it parses as one (`18789`, `true`, `["a"]`), else a string.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(
    root: &mut toml::Table,
    keys: &[String],
    value: toml::Value,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut table = root;
    for (depth, key) in parents.iter().enumerate() {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::new(
                    keys[..=depth].join("."),
                    "is not a table, so it cannot have sub-keys",
                ));
            }
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

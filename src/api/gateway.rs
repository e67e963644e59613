//! The `gateway.*` methods and `rpc.discover`.

use serde_json::json;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{
    Health, HelloParams, HelloResult, HelloSnapshot, NoParams, Policy, PresenceResult,
    ProviderInfo, ServerInfo, StatusResult,
};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `gateway.hello`.
pub struct Hello;
impl Method for Hello {
    const NAME: &'static str = "gateway.hello";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "Introduces the client; returns the protocol, methods, events, policy and a snapshot to resume from.";
    type Params = HelloParams;
    type Result = HelloResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "hello",
            params: json!({"client": {"name": "clawgate-cli", "version": "0.1.0"}}),
            result: json!({
                "protocol": 1,
                "server": {"name": "clawgate", "version": "0.1.0", "connId": "c1"},
                "methods": ["gateway.hello", "gateway.health"],
                "events": ["tick", "presence"],
                "policy": {"maxPayloadBytes": 4194304, "maxBatch": 64, "tickIntervalMs": 30000, "eventReplayCapacity": 4096, "subscriberQueue": 256},
                "snapshot": {"epoch": "5f0c...", "seq": 12, "presence": [], "health": {"ok": true, "version": "0.1.0", "uptimeMs": 1200, "connections": 1, "sessions": 0, "activeRuns": 0}}
            }),
        }]
    }
}

/// `gateway.health`.
pub struct HealthMethod;
impl Method for HealthMethod {
    const NAME: &'static str = "gateway.health";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "Liveness and counts: connections, sessions, active runs.";
    type Params = NoParams;
    type Result = Health;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "health",
            params: json!({}),
            result: json!({"ok": true, "version": "0.1.0", "uptimeMs": 1200, "connections": 1, "sessions": 0, "activeRuns": 0}),
        }]
    }
}

/// `gateway.status`.
pub struct Status;
impl Method for Status {
    const NAME: &'static str = "gateway.status";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "Where the gateway listens, its data directory, provider, plugins and pending restarts.";
    type Params = NoParams;
    type Result = StatusResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "status",
            params: json!({}),
            result: json!({"version": "0.1.0", "uptimeMs": 1200, "bind": "127.0.0.1", "port": 18789, "dataDir": "/home/me/.clawgate", "configPath": "/home/me/.clawgate/clawgate.toml", "provider": {"name": "echo", "model": "echo"}, "plugins": [], "pendingRestart": [], "auth": {"failuresTotal": 0, "lockouts": 0}}),
        }]
    }
}

/// `gateway.presence`.
pub struct Presence;
impl Method for Presence {
    const NAME: &'static str = "gateway.presence";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "Connected WebSocket clients.";
    type Params = NoParams;
    type Result = PresenceResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "presence",
            params: json!({}),
            result: json!({"entries": [{"connId": "c1", "client": {"name": "clawgate-cli"}, "remoteAddr": "127.0.0.1:50000", "connectedAt": 1767225600000u64, "lastActivityAt": 1767225601000u64}]}),
        }]
    }
}

/// The OpenRPC document, as a raw JSON value (it is rendered once per table).
pub struct OpenRpcDocument;
impl schemars::JsonSchema for OpenRpcDocument {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpenRpcDocument".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "title": "OpenRpcDocument",
            "description": "An OpenRPC 1.3.2 document.",
            "type": "object",
            "required": ["openrpc", "info", "methods"],
        })
    }
}

/// `rpc.discover`.
pub struct Discover;
impl Method for Discover {
    const NAME: &'static str = "rpc.discover";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "The OpenRPC document of every method callable now, plugin methods included.";
    type Params = NoParams;
    type Result = RawDocument;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "discover",
            params: json!({}),
            result: json!({"openrpc": "1.3.2", "info": {"title": "clawgate", "version": "0.1.0"}, "methods": []}),
        }]
    }
}

/// A pre-rendered document passed through without re-serialization.
pub struct RawDocument(pub Box<RawValue>);
impl serde::Serialize for RawDocument {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}
impl schemars::JsonSchema for RawDocument {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        OpenRpcDocument::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        OpenRpcDocument::json_schema(generator)
    }
}

/// The version-2 capabilities switched on in `config`.
fn features(gw: &crate::gateway::Gateway, config: &crate::config::Config) -> Vec<String> {
    let mut features = [
        "agents",
        "compaction",
        "approvals",
        "steering",
        "resume",
        "usage",
        "logs",
        "hooks",
        "cron",
    ]
    .map(String::from)
    .to_vec();
    let on = [
        ("mcp", config.mcp_servers.values().any(|s| s.enabled)),
        ("tls", gw.tls_fingerprint().is_some()),
        ("metrics", config.metrics.enabled),
        ("openai", config.http.openai.enabled),
        ("a2a", config.http.a2a.enabled),
        ("cluster", gw.cluster().is_some()),
    ];
    features.extend(
        on.iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name.to_string()),
    );
    features
}

/// Registers the `gateway.*` methods and `rpc.discover`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<Hello, _, _>(|ctx: CallContext, params: HelloParams| async move {
        hello(ctx, params)
    })?;
    table.method::<HealthMethod, _, _>(|ctx: CallContext, _: NoParams| async move {
        Ok(ctx.gateway.health())
    })?;
    table
        .method::<Status, _, _>(|ctx: CallContext, _: NoParams| async move { Ok(status(&ctx)) })?;
    table.method::<Presence, _, _>(|ctx: CallContext, _: NoParams| async move {
        Ok(PresenceResult {
            entries: ctx.gateway.presence(),
        })
    })?;
    table.method::<Discover, _, _>(|ctx: CallContext, _: NoParams| async move {
        let text = ctx.gateway.table().openrpc();
        RawValue::from_string(text.to_string())
            .map(RawDocument)
            .map_err(Error::internal)
    })?;
    Ok(())
}

fn hello(ctx: CallContext, params: HelloParams) -> Result<HelloResult> {
    let gw = &ctx.gateway;
    if let Some(client) = params.client {
        if client.name.trim().is_empty() || client.name.chars().count() > 128 {
            return Err(Error::invalid_params(
                "client.name",
                "expected a name of 1 to 128 characters",
            ));
        }
        if let Ok(mut slot) = ctx.conn.client.lock() {
            *slot = Some(client);
        }
        gw.client_named(&ctx.conn);
    }
    let config = gw.config();
    let table = gw.table();
    let limits = gw.hub().limits();
    Ok(HelloResult {
        protocol: 2,
        server: ServerInfo {
            name: "clawgate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            conn_id: ctx.conn.id.clone(),
        },
        methods: table.names().to_vec(),
        events: table.events().to_vec(),
        features: features(gw, &config),
        policy: Policy {
            max_payload_bytes: config.gateway.max_payload_bytes as u64,
            max_batch: config.gateway.max_batch as u64,
            tick_interval_ms: config.gateway.tick_interval_ms,
            event_replay_capacity: limits.replay_capacity as u64,
            subscriber_queue: limits.subscriber_queue as u64,
        },
        snapshot: HelloSnapshot {
            epoch: gw.hub().epoch().to_string(),
            seq: gw.hub().seq(),
            presence: gw.presence(),
            health: gw.health(),
        },
    })
}

fn status(ctx: &CallContext) -> StatusResult {
    let gw = &ctx.gateway;
    let config = gw.config();
    let addr = gw.local_addr();
    StatusResult {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_ms: gw.uptime_ms(),
        bind: addr.map_or_else(|| config.gateway.bind.clone(), |a| a.ip().to_string()),
        port: addr.map_or(config.gateway.port, |a| a.port()),
        data_dir: gw.data_dir().display().to_string(),
        config_path: gw.config_path().display().to_string(),
        provider: ProviderInfo {
            name: config.default_agent().provider.as_str().into(),
            model: config.default_agent().model.clone(),
        },
        plugins: crate::api::plugins::infos(gw)
            .into_iter()
            .map(|p| crate::protocol::PluginStatus {
                name: p.name,
                state: p.state,
            })
            .collect(),
        pending_restart: gw.live().pending_restart(),
        auth: crate::protocol::AuthStatus {
            failures_total: gw.throttle().failures_total(),
            lockouts: gw.throttle().lockouts() as u64,
        },
        tls: gw
            .tls_fingerprint()
            .map(|fingerprint_sha256| crate::protocol::TlsStatus { fingerprint_sha256 }),
        cluster: gw.cluster_status(),
    }
}

//! `config.get`, `config.patch`, `config.schema`.

use serde_json::json;

use crate::error::{Result, code};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{ConfigGetResult, ConfigPatchParams, ConfigPatchResult, NoParams};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `config.get`.
pub struct Get;
impl Method for Get {
    const NAME: &'static str = "config.get";
    const SCOPE: Scope = Scope::Admin;
    const SUMMARY: &'static str = "The effective configuration (secrets redacted), the file's hash and path, and the keys set by environment or flags.";
    type Params = NoParams;
    type Result = ConfigGetResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "get",
            params: json!({}),
            result: json!({"config": {"gateway": {"port": 18789}}, "hash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "path": "/home/me/.clawgate/clawgate.toml", "overriddenPaths": []}),
        }]
    }
}

/// `config.patch`.
pub struct Patch;
impl Method for Patch {
    const NAME: &'static str = "config.patch";
    const SCOPE: Scope = Scope::Admin;
    const SUMMARY: &'static str = "Applies an RFC 7396 merge patch to the config file (comments kept), if baseHash is current; validated before writing.";
    const ERRORS: &'static [i32] = &[code::CONFLICT];
    type Params = ConfigPatchParams;
    type Result = ConfigPatchResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "tick faster",
            params: json!({"patch": {"gateway": {"tick_interval_ms": 5000}}, "baseHash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}),
            result: json!({"hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "changedPaths": ["gateway.tick_interval_ms"], "reloadKind": "hot"}),
        }]
    }
}

/// The JSON Schema of the configuration.
pub struct ConfigSchemaDocument;
impl schemars::JsonSchema for ConfigSchemaDocument {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ConfigSchema".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"title": "ConfigSchema", "description": "A draft-07 JSON Schema; each property has x-reload: hot | restart.", "type": "object"})
    }
}
impl serde::Serialize for ConfigSchemaDocument {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::config::schema().serialize(s)
    }
}

/// `config.schema`.
pub struct Schema;
impl Method for Schema {
    const NAME: &'static str = "config.schema";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "The JSON Schema of the configuration; each key says whether it reloads hot or at restart (x-reload).";
    type Params = NoParams;
    type Result = ConfigSchemaDocument;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "schema",
            params: json!({}),
            result: json!({"type": "object", "properties": {"gateway": {"x-reload": "hot", "properties": {"port": {"type": "integer", "x-reload": "restart"}}}}}),
        }]
    }
}

/// Registers the `config.*` methods.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<Get, _, _>(|ctx: CallContext, _: NoParams| async move {
        let gw = &ctx.gateway;
        // The hash of the file as it is now (what `config.patch` compares `baseHash` with),
        // even when an edit of it was refused and the running config is older.
        let hash = match tokio::fs::read(gw.config_path()).await {
            Ok(bytes) => crate::config::hash_bytes(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => crate::config::hash_bytes(b""),
            Err(_) => gw.config_hash().to_string(),
        };
        Ok(ConfigGetResult {
            config: crate::config::redacted(&gw.config()),
            hash,
            path: gw.config_path().display().to_string(),
            overridden_paths: gw.overridden_paths().to_vec(),
        })
    })?;
    table.method::<Patch, _, _>(|ctx: CallContext, p: ConfigPatchParams| async move {
        let change = crate::config::live::patch(&ctx.gateway, &p.patch, &p.base_hash).await?;
        Ok(ConfigPatchResult {
            hash: change.hash,
            changed_paths: change.changed_paths,
            reload_kind: match change.reload_kind {
                crate::config::Reload::Hot => "hot".into(),
                crate::config::Reload::Restart => "restart".into(),
            },
        })
    })?;
    table.method::<Schema, _, _>(|_: CallContext, _: NoParams| async move {
        Ok(ConfigSchemaDocument)
    })?;
    Ok(())
}

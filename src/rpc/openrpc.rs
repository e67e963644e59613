//! Renders the method table as an OpenRPC 1.3.2 document.

use serde_json::{Map, Value, json};

use super::table::{MethodKind, MethodTable};
use crate::error::{Error, code};

/// The OpenRPC document of every method in `table`.
pub fn document<S: Send + Sync + 'static>(table: &MethodTable<S>) -> Value {
    let components = table.components();
    let methods: Vec<Value> = table
        .methods()
        .values()
        .map(|desc| {
            let params = content_descriptors(&desc.params_schema, components);
            let mut method = json!({
                "name": desc.name,
                "summary": desc.summary,
                "paramStructure": "by-name",
                "params": params,
                "result": {"name": "result", "schema": desc.result_schema},
                "errors": errors_for(&desc.errors, desc.scope),
                "examples": desc.examples.iter().map(|ex| json!({
                    "name": ex.name,
                    "params": ex.params.as_object().map(|o| o.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()).unwrap_or_default(),
                    "result": {"name": "result", "value": ex.result},
                })).collect::<Vec<_>>(),
                "x-scope": desc.scope,
                "x-owner": desc.owner,
                "x-params": desc.params_schema,
            });
            match &desc.kind {
                MethodKind::Subscribe {
                    notification,
                    unsubscribe,
                    item_schema,
                    ..
                } => {
                    method["x-subscription"] = json!({
                        "notification": notification,
                        "unsubscribe": unsubscribe,
                        "item": item_schema,
                    });
                }
                MethodKind::Unsubscribe { subscribe } => {
                    method["x-unsubscribe-for"] = json!(subscribe);
                }
                MethodKind::Call(_) => {}
            }
            method
        })
        .collect();
    let events: Vec<Value> = table
        .events()
        .values()
        .map(|e| json!({"name": e.name, "summary": e.summary, "payload": e.payload_schema, "x-owner": e.owner}))
        .collect();
    json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "clawgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON-RPC 2.0 control plane for personal AI agents. Protocol version 1.",
        },
        "servers": [{"name": "local", "url": "ws://127.0.0.1:18789/"}],
        "methods": methods,
        "components": {"schemas": components},
        "x-events": events,
    })
}

/// By-name params: one content descriptor per property of the params object.
fn content_descriptors(schema: &Value, components: &Map<String, Value>) -> Vec<Value> {
    let resolved = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| components.get(name))
        .unwrap_or(schema);
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = resolved.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            let mut cd = json!({
                "name": name,
                "required": required.contains(&name.as_str()),
                "schema": prop,
            });
            if let Some(desc) = prop.get("description") {
                cd["description"] = desc.clone();
            }
            cd
        })
        .collect()
}

fn errors_for(extra: &[i32], scope: super::table::Scope) -> Vec<Value> {
    let mut codes = vec![code::INVALID_PARAMS, code::FORBIDDEN];
    codes.extend_from_slice(extra);
    codes.sort_unstable();
    codes.dedup();
    codes
        .into_iter()
        .map(|c| {
            let message = match c {
                code::INVALID_PARAMS => "invalid params: `data.path` names the field",
                code::FORBIDDEN => match scope {
                    super::table::Scope::Read => "forbidden: needs the read scope",
                    super::table::Scope::Write => "forbidden: needs the write scope",
                    super::table::Scope::Admin => "forbidden: needs the admin scope",
                },
                code::NOT_FOUND => "not found",
                code::CONFLICT => "conflict",
                code::UNAVAILABLE => "unavailable",
                code::UPSTREAM => "the model provider failed",
                code::WEBSOCKET_REQUIRED => "a subscription needs WebSocket",
                code::BUSY => "busy",
                code::RATE_LIMITED => "rate limited",
                _ => "error",
            };
            json!({"code": c, "message": message})
        })
        .collect()
}

/// Checks that `text` is what the code emits; the error says how to fix it.
pub fn check(committed: &str, emitted: &str) -> Result<(), Error> {
    if committed.trim_end() == emitted.trim_end() {
        Ok(())
    } else {
        Err(Error::Conflict(
            "schema/openrpc.json differs from what the code emits: run `clawgate schema` and commit the result".into(),
        ))
    }
}

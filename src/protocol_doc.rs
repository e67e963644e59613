//! The generated parts of `docs/PROTOCOL.md`: the method and event tables, rendered from the
//! OpenRPC document and written between marker comments, so the prose around them stays
//! hand-written while the tables can never drift from the declarations.
//!
//! Everything here reads the document value that `rpc::openrpc::document` builds (the same one
//! `schema/openrpc.json` holds), not the method table itself: the tables show exactly what the
//! published schema says.

use serde_json::{Map, Value};

/// Where the protocol document lives, relative to the repository root.
pub const DEFAULT_PATH: &str = "docs/PROTOCOL.md";

/// The generated regions of the document, by marker name.
pub const REGIONS: &[&str] = &["methods", "events"];

/// Why the generated tables could not be put into the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// A marker is not in the document.
    #[error("the marker `{marker}` is missing: put `{start}` and `{end}` where the table goes")]
    Missing {
        /// The marker not found.
        marker: String,
        /// The start marker of the region.
        start: String,
        /// The end marker of the region.
        end: String,
    },
    /// A marker is in the document more than once.
    #[error("the marker `{marker}` appears more than once: keep exactly one")]
    Duplicate {
        /// The marker repeated.
        marker: String,
    },
    /// The end marker comes before the start marker.
    #[error("the marker `{end}` comes before `{start}`: the start marker goes first")]
    Misordered {
        /// The start marker.
        start: String,
        /// The end marker.
        end: String,
    },
}

/// The start marker of region `name`, e.g. `<!-- generated:methods:start -->`.
pub fn start_marker(name: &str) -> String {
    format!("<!-- generated:{name}:start -->")
}

/// The end marker of region `name`, e.g. `<!-- generated:methods:end -->`.
pub fn end_marker(name: &str) -> String {
    format!("<!-- generated:{name}:end -->")
}

/// The one position of `marker` in `text`.
fn find_once(text: &str, marker: &str, name: &str) -> Result<usize, MarkerError> {
    let mut found = text.match_indices(marker).map(|(i, _)| i);
    let Some(first) = found.next() else {
        return Err(MarkerError::Missing {
            marker: marker.to_string(),
            start: start_marker(name),
            end: end_marker(name),
        });
    };
    if found.next().is_some() {
        return Err(MarkerError::Duplicate {
            marker: marker.to_string(),
        });
    }
    Ok(first)
}

/// `text` with what lies between the markers of region `name` replaced by `body`; every byte
/// outside the markers (the markers included) is kept as it is.
pub fn replace_region(text: &str, name: &str, body: &str) -> Result<String, MarkerError> {
    let start = start_marker(name);
    let end = end_marker(name);
    let open = find_once(text, &start, name)?;
    let close = find_once(text, &end, name)?;
    if close < open {
        return Err(MarkerError::Misordered { start, end });
    }
    let inner_start = open + start.len();
    let mut out = String::with_capacity(text.len() + body.len());
    out.push_str(&text[..inner_start]);
    out.push_str("\n\n");
    out.push_str(body.trim_end());
    out.push_str("\n\n");
    out.push_str(&text[close..]);
    Ok(out)
}

/// The document `text` with both tables rendered from `openrpc` put between their markers.
pub fn render(text: &str, openrpc: &Value) -> Result<String, MarkerError> {
    let with_methods = replace_region(text, "methods", &method_table(openrpc))?;
    replace_region(&with_methods, "events", &event_table(openrpc))
}

/// The names of the regions of `committed` that differ from `rendered` (both full documents);
/// empty when the committed document is current.
pub fn stale_regions(committed: &str, rendered: &str) -> Vec<&'static str> {
    let mut stale: Vec<&'static str> = REGIONS
        .iter()
        .copied()
        .filter(|name| region(committed, name) != region(rendered, name))
        .collect();
    if stale.is_empty() && committed.trim_end() != rendered.trim_end() {
        // Only whitespace at a region's edge differs: still not what `clawgate schema` writes.
        stale.extend_from_slice(REGIONS);
    }
    stale
}

/// The text between the markers of region `name`, trimmed.
fn region<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = start_marker(name);
    let open = text.find(&start)? + start.len();
    let close = open + text[open..].find(&end_marker(name))?;
    Some(text[open..close].trim())
}

/// The Markdown table of every method: name, scope, kind, params, result, summary.
pub fn method_table(openrpc: &Value) -> String {
    let mut out = String::from(
        "| Method | Scope | Kind | Params | Result | Summary |\n|---|---|---|---|---|---|\n",
    );
    for method in array(openrpc, "methods") {
        let name = str_of(method, "name");
        let scope = str_of(method, "x-scope");
        let kind = if let Some(sub) = method.get("x-subscription") {
            format!(
                "subscription: notifies `{}`, ended by `{}`",
                str_of(sub, "notification"),
                str_of(sub, "unsubscribe")
            )
        } else if let Some(of) = method.get("x-unsubscribe-for").and_then(Value::as_str) {
            format!("unsubscribe: ends `{of}`")
        } else {
            "call".to_string()
        };
        // Required params first, then the optional ones (marked `?`), each in document order.
        let mut params: Vec<(bool, String)> = array(method, "params")
            .iter()
            .map(|p| {
                let optional = p.get("required").and_then(Value::as_bool) != Some(true);
                let mark = if optional { "?" } else { "" };
                (optional, format!("`{}{mark}`", str_of(p, "name")))
            })
            .collect();
        params.sort_by_key(|(optional, _)| *optional);
        let params: Vec<String> = params.into_iter().map(|(_, p)| p).collect();
        let params = if params.is_empty() {
            "none".to_string()
        } else {
            params.join(", ")
        };
        let result = method
            .pointer("/result/schema")
            .map_or_else(|| "?".to_string(), type_name);
        out.push_str(&row(&[
            &format!("`{name}`"),
            scope,
            &kind,
            &params,
            &result,
            str_of(method, "summary"),
        ]));
    }
    out
}

/// The Markdown table of every event: name, payload type, its fields, summary.
pub fn event_table(openrpc: &Value) -> String {
    let components = components(openrpc);
    let mut out = String::from("| Event | Payload | Fields | Summary |\n|---|---|---|---|\n");
    for event in array(openrpc, "x-events") {
        let payload = event.get("payload").unwrap_or(&Value::Null);
        out.push_str(&row(&[
            &format!("`{}`", str_of(event, "name")),
            &type_name(payload),
            &fields(payload, components),
            str_of(event, "summary"),
        ]));
    }
    out
}

fn components(openrpc: &Value) -> Option<&Map<String, Value>> {
    openrpc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The schema a `$ref` points at, or the schema itself.
fn resolve<'a>(schema: &'a Value, components: Option<&'a Map<String, Value>>) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| components?.get(name))
        .unwrap_or(schema)
}

/// A short name for a schema: its component name, its title, or its JSON type.
fn type_name(schema: &Value) -> String {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        return format!("`{name}`");
    }
    if let Some(title) = schema.get("title").and_then(Value::as_str) {
        return format!("`{title}`");
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "array" => match schema.get("items") {
            Some(items) => format!("array of {}", type_name(items)),
            None => "`array`".to_string(),
        },
        Some(Value::String(t)) => format!("`{t}`"),
        _ => "any".to_string(),
    }
}

/// The properties of an object schema, required ones first, optional ones marked `?`.
fn fields(schema: &Value, components: Option<&Map<String, Value>>) -> String {
    let resolved = resolve(schema, components);
    let Some(props) = resolved.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required: Vec<&str> = array(resolved, "required")
        .iter()
        .filter_map(Value::as_str)
        .filter(|name| props.contains_key(*name))
        .collect();
    let optional = props
        .keys()
        .filter(|k| !required.contains(&k.as_str()))
        .map(|k| format!("`{k}?`"));
    required
        .iter()
        .map(|k| format!("`{k}`"))
        .chain(optional)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One table row; cells are kept on one line and their pipes escaped.
fn row(cells: &[&str]) -> String {
    let cells: Vec<String> = cells
        .iter()
        .map(|c| {
            c.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|")
        })
        .collect();
    format!("| {} |\n", cells.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "methods": [
                {"name": "a.get", "x-scope": "read", "summary": "Gets | one.",
                 "params": [{"name": "limit", "required": false}, {"name": "key", "required": true}],
                 "result": {"schema": {"$ref": "#/components/schemas/Thing"}}},
                {"name": "a.watch", "x-scope": "read", "summary": "Watches.",
                 "params": [],
                 "result": {"schema": {"title": "SubscriptionId", "type": "string"}},
                 "x-subscription": {"notification": "a.event", "unsubscribe": "a.unwatch"}},
                {"name": "a.unwatch", "x-scope": "read", "summary": "Ends a watch.",
                 "params": [{"name": "subscription", "required": true}],
                 "result": {"schema": {"type": "boolean"}}, "x-unsubscribe-for": "a.watch"}
            ],
            "components": {"schemas": {"Thing": {"type": "object",
                "properties": {"b": {}, "a": {}, "c": {}}, "required": ["c"]}}},
            "x-events": [{"name": "thing", "summary": "A thing\nchanged.",
                "payload": {"$ref": "#/components/schemas/Thing"}}]
        })
    }

    #[test]
    fn tables_show_scope_kind_params_result_and_fields() {
        let methods = method_table(&doc());
        assert!(
            methods
                .contains("| `a.get` | read | call | `key`, `limit?` | `Thing` | Gets \\| one. |"),
            "{methods}"
        );
        assert!(
            methods.contains("subscription: notifies `a.event`, ended by `a.unwatch`"),
            "{methods}"
        );
        assert!(
            methods.contains(
                "| `a.unwatch` | read | unsubscribe: ends `a.watch` | `subscription` | `boolean` |"
            ),
            "{methods}"
        );
        let events = event_table(&doc());
        assert!(
            events.contains("| `thing` | `Thing` | `c`, `a?`, `b?` | A thing changed. |"),
            "{events}"
        );
    }

    #[test]
    fn only_the_text_between_the_markers_changes() {
        let text = "# Title\n\nProse before.\n<!-- generated:methods:start -->\nold table\n<!-- generated:methods:end -->\nProse after.\n";
        let out = replace_region(text, "methods", "| new |\n").expect("replaced");
        assert_eq!(
            out,
            "# Title\n\nProse before.\n<!-- generated:methods:start -->\n\n| new |\n\n<!-- generated:methods:end -->\nProse after.\n"
        );
        // Idempotent: rendering twice changes nothing more.
        assert_eq!(
            replace_region(&out, "methods", "| new |\n").expect("again"),
            out
        );
    }

    #[test]
    fn missing_duplicate_or_misordered_markers_are_clear_errors() {
        let err = replace_region("no markers here", "methods", "x").expect_err("missing");
        assert!(matches!(err, MarkerError::Missing { .. }));
        let message = err.to_string();
        assert!(
            message.contains("<!-- generated:methods:start -->")
                && message.contains("<!-- generated:methods:end -->"),
            "{message}"
        );
        let only_start = "<!-- generated:methods:start -->\n";
        let err = replace_region(only_start, "methods", "x").expect_err("no end");
        assert_eq!(
            err,
            MarkerError::Missing {
                marker: end_marker("methods"),
                start: start_marker("methods"),
                end: end_marker("methods"),
            }
        );
        let twice = "<!-- generated:events:start -->\n<!-- generated:events:start -->\n<!-- generated:events:end -->";
        assert!(matches!(
            replace_region(twice, "events", "x"),
            Err(MarkerError::Duplicate { .. })
        ));
        let reversed = "<!-- generated:events:end -->\n<!-- generated:events:start -->";
        assert!(matches!(
            replace_region(reversed, "events", "x"),
            Err(MarkerError::Misordered { .. })
        ));
    }

    #[test]
    fn stale_regions_are_named() {
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            start_marker("methods"),
            end_marker("methods"),
            start_marker("events"),
            end_marker("events")
        );
        let current = render(&text, &doc()).expect("rendered");
        assert!(stale_regions(&current, &current).is_empty());
        assert_eq!(stale_regions(&text, &current), vec!["methods", "events"]);
        let mut newer = doc();
        newer["x-events"][0]["summary"] = json!("Changed.");
        let rendered = render(&current, &newer).expect("rendered");
        assert_eq!(stale_regions(&current, &rendered), vec!["events"]);
    }

    #[test]
    fn render_fills_both_regions() {
        let text = format!(
            "A\n{}\n{}\nB\n{}\n{}\nC\n",
            start_marker("methods"),
            end_marker("methods"),
            start_marker("events"),
            end_marker("events")
        );
        let out = render(&text, &doc()).expect("rendered");
        assert!(out.starts_with("A\n<!-- generated:methods:start -->\n\n| Method |"));
        assert!(out.contains(
            "<!-- generated:methods:end -->\nB\n<!-- generated:events:start -->\n\n| Event |"
        ));
        assert!(out.ends_with("<!-- generated:events:end -->\nC\n"));
    }
}

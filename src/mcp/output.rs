//! What the model sees of a `tools/call` result: text items joined with `\n`, other items as a
//! placeholder naming their type and size, `structuredContent` as JSON text when there is no
//! text item, `isError` kept.

use serde_json::Value;

use crate::agent::tools::ToolOutput;

/// Most bytes of one result given to the model; the rest is cut with a marker.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Maps a `tools/call` result (the JSON the server sent) to the tool's output. Anything a
/// server may send is accepted: a field of the wrong type counts as absent.
pub fn map_call_result(result: &Value) -> ToolOutput {
    let Some(object) = result.as_object() else {
        return ToolOutput {
            content: format!(
                "the MCP server answered tools/call with {}, not an object",
                kind(result)
            ),
            is_error: true,
        };
    };
    let is_error = object
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let items = object
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut parts = Vec::with_capacity(items.len() + 1);
    let mut has_text = false;
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("text") => {
                has_text = true;
                parts.push(
                    item.get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            _ => parts.push(placeholder(item)),
        }
    }
    if !has_text && let Some(structured) = object.get("structuredContent") {
        parts.push(structured.to_string());
    }
    ToolOutput {
        content: cut(parts.join("\n")),
        is_error,
    }
}

/// `[<type>: <what>, <size>]` for a content item that is not text.
fn placeholder(item: &Value) -> String {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    match kind {
        "image" | "audio" => {
            let mime = str_of(item, "mimeType").unwrap_or_else(|| "unknown type".into());
            let size = str_of(item, "data").map_or(0, |d| base64_len(&d));
            format!("[{kind}: {mime}, {}]", bytes(size))
        }
        "resource" => {
            let resource = item.get("resource").unwrap_or(&Value::Null);
            let uri = str_of(resource, "uri").unwrap_or_default();
            let mime = str_of(resource, "mimeType")
                .map(|m| format!("{m}, "))
                .unwrap_or_default();
            let size = match (str_of(resource, "text"), str_of(resource, "blob")) {
                (Some(text), _) => text.len(),
                (None, Some(blob)) => base64_len(&blob),
                (None, None) => 0,
            };
            format!("[resource: {uri}, {mime}{}]", bytes(size))
        }
        "resource_link" => {
            let uri = str_of(item, "uri").unwrap_or_default();
            match item.get("size").and_then(Value::as_u64) {
                Some(size) => format!("[resource_link: {uri}, {}]", bytes(size as usize)),
                None => format!("[resource_link: {uri}, size unknown]"),
            }
        }
        _ => format!("[{kind}: {}]", bytes(item.to_string().len())),
    }
}

fn bytes(n: usize) -> String {
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

/// Decoded size of base64 text (padding and whitespace not counted).
fn base64_len(data: &str) -> usize {
    let symbols = data
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .count();
    symbols * 3 / 4
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` cut at [`MAX_OUTPUT_BYTES`] (on a character boundary) with a marker.
fn cut(mut text: String) -> String {
    if text.len() <= MAX_OUTPUT_BYTES {
        return text;
    }
    let total = text.len();
    let mut end = MAX_OUTPUT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("\n… [output cut at {end} of {total} bytes]"));
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn out(v: Value) -> (String, bool) {
        let o = map_call_result(&v);
        (o.content, o.is_error)
    }

    #[test]
    fn text_items_are_joined_with_newlines() {
        assert_eq!(
            out(json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})),
            ("a\nb".into(), false)
        );
    }

    #[test]
    fn other_items_become_placeholders_in_place() {
        let (text, _) = out(json!({"content": [
            {"type": "text", "text": "before"},
            {"type": "image", "data": "AAAAAAAA", "mimeType": "image/png"},
            {"type": "audio", "data": "AAA=", "mimeType": "audio/wav"},
            {"type": "resource", "resource": {"uri": "file:///r", "mimeType": "text/plain", "text": "hello"}},
            {"type": "resource", "resource": {"uri": "file:///b", "blob": "AAAA"}},
            {"type": "resource_link", "uri": "file:///l", "name": "l", "size": 1},
            {"type": "resource_link", "uri": "file:///m", "name": "m"},
            {"type": "hologram", "x": 1},
        ]}));
        assert_eq!(
            text,
            "before\n[image: image/png, 6 bytes]\n[audio: audio/wav, 2 bytes]\n\
             [resource: file:///r, text/plain, 5 bytes]\n[resource: file:///b, 3 bytes]\n\
             [resource_link: file:///l, 1 byte]\n[resource_link: file:///m, size unknown]\n\
             [hologram: 25 bytes]"
        );
    }

    #[test]
    fn structured_content_is_given_only_without_a_text_item() {
        let (text, _) = out(json!({
            "content": [{"type": "image", "data": "", "mimeType": "image/png"}],
            "structuredContent": {"answer": 42}
        }));
        assert_eq!(text, "[image: image/png, 0 bytes]\n{\"answer\":42}");
        let (text, _) = out(json!({"structuredContent": {"a": [1]}}));
        assert_eq!(text, "{\"a\":[1]}");
        let (text, _) = out(json!({
            "content": [{"type": "text", "text": "t"}],
            "structuredContent": {"a": 1}
        }));
        assert_eq!(text, "t");
    }

    #[test]
    fn is_error_is_kept_and_nonsense_is_survived() {
        assert_eq!(
            out(json!({"content": [{"type": "text", "text": "no"}], "isError": true})),
            ("no".into(), true)
        );
        assert_eq!(out(json!({})), (String::new(), false));
        assert_eq!(
            out(json!({"content": "x", "isError": "yes"})),
            (String::new(), false)
        );
        let (text, _) = out(json!({"content": [{"type": "text"}, 7, {"type": 1}]}));
        assert_eq!(text, "\n[unknown: 1 byte]\n[unknown: 10 bytes]");
        let (text, is_error) = out(json!([1]));
        assert!(is_error && text.contains("an array"), "{text}");
    }

    #[test]
    fn a_huge_result_is_cut_on_a_character_boundary() {
        let big = "é".repeat(MAX_OUTPUT_BYTES);
        let (text, _) = out(json!({"content": [{"type": "text", "text": big}]}));
        assert!(text.len() < MAX_OUTPUT_BYTES + 100, "{}", text.len());
        assert!(
            text.ends_with(&format!("of {} bytes]", 2 * MAX_OUTPUT_BYTES)),
            "{}",
            &text[text.len() - 60..]
        );
    }
}

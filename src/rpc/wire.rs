//! JSON-RPC 2.0 text on the wire: the request object read with its members kept raw, the
//! method name and the id read from it, and the response texts written by hand around the
//! client's exact id.

use std::borrow::Cow;

use jsonrpsee::core::server::MethodResponse;
use jsonrpsee::types::Id;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{Error, code};

/// A request object, its members kept raw; unknown members are remembered, not rejected here.
pub(super) struct RawRequest<'a> {
    pub(super) jsonrpc: Option<&'a RawValue>,
    pub(super) method: Option<&'a RawValue>,
    pub(super) params: Option<&'a RawValue>,
    pub(super) id: Option<&'a RawValue>,
    /// The first member that is none of the four.
    pub(super) unknown: Option<String>,
}

impl<'a> RawRequest<'a> {
    /// The method name, when `method` is a string: borrowed from the message unless it has
    /// escapes. Read once per request; everything after uses this.
    pub(super) fn method_name(&self) -> Option<Cow<'a, str>> {
        method_name(self.method?)
    }
}

/// Reads a JSON string without copying it when it has no escapes; `None` for any other value.
fn method_name(raw: &RawValue) -> Option<Cow<'_, str>> {
    struct Name;
    impl<'de> Visitor<'de> for Name {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let name = de.deserialize_str(Name).ok()?;
    de.end().ok()?;
    Some(name)
}

/// How a request id is passed to jsonrpsee and echoed back.
pub(super) struct RequestId<'a> {
    /// The id exactly as the client wrote it.
    pub(super) raw: &'a str,
    /// The id given to jsonrpsee.
    pub(super) native: Id<'a>,
    /// jsonrpsee cannot represent the id (negative, fractional, huge): it gets `0` and the raw
    /// id is put back into the response text.
    pub(super) splice: bool,
}

/// The id of a request, or `None` when it is not a string, a number or null.
pub(super) fn classify_id(raw: &RawValue) -> Option<RequestId<'_>> {
    let text = raw.get();
    let bytes = text.as_bytes();
    let native = |native, splice| {
        Some(RequestId {
            raw: text,
            native,
            splice,
        })
    };
    match bytes.first()? {
        b'"' if !text.contains('\\') && text.len() >= 2 => {
            native(Id::Str(Cow::Borrowed(&text[1..text.len() - 1])), false)
        }
        b'"' => native(Id::Number(0), true),
        b'n' => native(Id::Null, false),
        b'0'..=b'9' => {
            let plain =
                bytes.iter().all(u8::is_ascii_digit) && (bytes.len() == 1 || bytes[0] != b'0');
            match text.parse::<u64>() {
                Ok(n) if plain => native(Id::Number(n), false),
                _ => native(Id::Number(0), true),
            }
        }
        b'-' => native(Id::Number(0), true),
        _ => None,
    }
}

/// Turns jsonrpsee's response into ours: the client's exact id, and `data.kind` on its errors.
pub(super) fn finish_response(
    response: MethodResponse,
    id: &RequestId<'_>,
    limit: usize,
) -> String {
    if response.is_error() && response.as_error_code() == Some(code::RESPONSE_TOO_LARGE) {
        return error_json(id.raw, &Error::ResponseTooLarge { limit });
    }
    let json: String = Box::<str>::from(response.into_json()).into();
    if !id.splice {
        return json;
    }
    const PREFIX: &str = "{\"jsonrpc\":\"2.0\",\"id\":0,";
    match json.strip_prefix(PREFIX) {
        Some(rest) => {
            let mut out = String::with_capacity(json.len() + id.raw.len());
            out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
            out.push_str(id.raw);
            out.push(',');
            out.push_str(rest);
            out
        }
        None => match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json) {
            Ok(mut map) => {
                let raw_id = serde_json::from_str(id.raw).unwrap_or(serde_json::Value::Null);
                map.insert("id".into(), raw_id);
                serde_json::Value::Object(map).to_string()
            }
            Err(_) => error_json(id.raw, &Error::internal("malformed response")),
        },
    }
}

/// A success response with the client's raw id and a raw result.
pub(super) fn success_json(id_raw: &str, result: &str) -> String {
    let mut out = String::with_capacity(id_raw.len() + result.len() + 40);
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(id_raw);
    out.push_str(",\"result\":");
    out.push_str(result);
    out.push('}');
    out
}

/// An error response with the client's raw id (`null` when there is none).
pub fn error_json(id_raw: &str, err: &Error) -> String {
    let object = serde_json::to_string(&err.to_object()).unwrap_or_else(|_| {
        format!(
            r#"{{"code":{},"message":"error","data":{{"kind":"internal"}}}}"#,
            code::INTERNAL
        )
    });
    let mut out = String::with_capacity(id_raw.len() + object.len() + 40);
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(id_raw);
    out.push_str(",\"error\":");
    out.push_str(&object);
    out.push('}');
    out
}

enum Key {
    Jsonrpc,
    Method,
    Params,
    Id,
    Other(String),
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "jsonrpc" => Key::Jsonrpc,
                    "method" => Key::Method,
                    "params" => Key::Params,
                    "id" => Key::Id,
                    other => Key::Other(other.to_string()),
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for RawRequest<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReqVisitor;
        impl<'de> Visitor<'de> for ReqVisitor {
            type Value = RawRequest<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut req = RawRequest {
                    jsonrpc: None,
                    method: None,
                    params: None,
                    id: None,
                    unknown: None,
                };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Jsonrpc => req.jsonrpc = Some(map.next_value()?),
                        Key::Method => req.method = Some(map.next_value()?),
                        Key::Params => req.params = Some(map.next_value()?),
                        Key::Id => req.id = Some(map.next_value()?),
                        Key::Other(name) => {
                            map.next_value::<IgnoredAny>()?;
                            req.unknown.get_or_insert(name);
                        }
                    }
                }
                Ok(req)
            }
        }
        deserializer.deserialize_map(ReqVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonrpsee::core::server::ResponsePayload;
    use serde_json::{Value, json};

    #[test]
    fn ids_are_classified() {
        let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).expect("json");
        for (text, splice) in [
            ("1", false),
            ("\"a\"", false),
            ("null", false),
            ("-1", true),
            ("1.5", true),
            ("18446744073709551616", true),
            ("\"a\\n\"", true),
        ] {
            let value = raw(text);
            let id = classify_id(&value).expect("valid id");
            assert_eq!(id.splice, splice, "{text}");
            assert_eq!(id.raw, text);
        }
        for text in ["true", "{}", "[]"] {
            assert!(classify_id(&raw(text)).is_none(), "{text}");
        }
    }

    fn request(text: &str) -> RawRequest<'_> {
        serde_json::from_str(text).expect("a request object")
    }

    #[test]
    fn the_method_name_is_borrowed_unless_escaped_and_only_a_string() {
        let req = request(r#"{"method":"chat.send"}"#);
        assert!(matches!(
            req.method_name(),
            Some(Cow::Borrowed("chat.send"))
        ));
        let req = request(r#"{"method":"chat\u002esend"}"#);
        assert!(matches!(req.method_name(), Some(Cow::Owned(m)) if m == "chat.send"));
        for text in [
            r#"{"method":1}"#,
            r#"{"method":null}"#,
            r#"{"method":["a"]}"#,
            r#"{"id":1}"#,
        ] {
            assert!(request(text).method_name().is_none(), "{text}");
        }
    }

    #[test]
    fn members_are_kept_raw_and_the_first_unknown_one_remembered() {
        let req = request(r#"{"jsonrpc":"2.0","id":7,"x":1,"params":[1, 2],"y":{}}"#);
        assert_eq!(req.jsonrpc.map(RawValue::get), Some("\"2.0\""));
        assert_eq!(req.id.map(RawValue::get), Some("7"));
        assert_eq!(req.params.map(RawValue::get), Some("[1, 2]"));
        assert!(req.method.is_none());
        assert_eq!(req.unknown.as_deref(), Some("x"));
        assert!(serde_json::from_str::<RawRequest<'_>>("[]").is_err());
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("json")
    }

    #[test]
    fn responses_echo_the_raw_id() {
        assert_eq!(
            parse(&success_json("-1.5", r#"{"ok":true}"#)),
            json!({"jsonrpc": "2.0", "id": -1.5, "result": {"ok": true}})
        );
        let err = parse(&error_json("null", &Error::MethodNotFound("no".into())));
        assert_eq!(err["id"], Value::Null);
        assert_eq!(err["error"]["code"], code::METHOD_NOT_FOUND);
        assert_eq!(err["error"]["data"]["kind"], "method_not_found");
    }

    #[test]
    fn finished_responses_get_the_clients_id_back_and_our_too_large_error() {
        let raw = serde_json::from_str::<Box<RawValue>>("-3").expect("json");
        let id = classify_id(&raw).expect("valid id");
        let response =
            MethodResponse::response(id.native.clone(), ResponsePayload::success(json!(1)), 1000);
        assert_eq!(
            parse(&finish_response(response, &id, 1000)),
            json!({"jsonrpc": "2.0", "id": -3, "result": 1})
        );

        let raw = serde_json::from_str::<Box<RawValue>>("5").expect("json");
        let id = classify_id(&raw).expect("valid id");
        let big = json!("x".repeat(100));
        let response =
            MethodResponse::response(id.native.clone(), ResponsePayload::success(big), 50);
        let out = parse(&finish_response(response, &id, 50));
        assert_eq!(out["id"], 5);
        assert_eq!(out["error"]["code"], code::RESPONSE_TOO_LARGE);
        assert_eq!(out["error"]["data"]["limit"], 50);
    }
}

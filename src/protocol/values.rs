//! Wire values with a rule, each checked in one place: a params field of one of these types is
//! refused while the params are parsed, with the message below and the field's path.
//!
//! Every type is a `String` that passed its check: it derefs to `str`, serializes as the string,
//! and has exactly the JSON schema of a `String` field (so `schema/openrpc.json` says nothing
//! more than it did when the checks lived in the handlers).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// The most characters a label may have.
pub const MAX_LABEL_CHARS: usize = 128;
/// The most bytes a message or content may have.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// The most characters an idempotency key may have.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// The most bytes a session key may have (its characters are ASCII, so characters too).
pub const MAX_SESSION_KEY: usize = 128;
/// The most bytes a model name may have.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Why a wire value was refused; its `Display` is the message a client sees in `-32602`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueError {
    /// A session or idempotency key that is empty, too long, or has another character than
    /// `A-Z a-z 0-9 . _ : -`.
    Key,
    /// Message text that is empty or only whitespace.
    BlankText,
    /// Message text over [`MAX_CONTENT_BYTES`].
    TextTooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// A label over [`MAX_LABEL_CHARS`].
    LabelTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// A model name that is blank or over [`MAX_MODEL_NAME_BYTES`].
    ModelName,
    /// An agent id that is empty, too long, or has another character than `a-z 0-9 -`.
    AgentId,
    /// A cron job name that breaks the agent id rule.
    CronName,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key => f.write_str("expected 1 to 128 characters of A-Z a-z 0-9 . _ : -"),
            Self::BlankText => f.write_str("expected non-empty text, found only whitespace"),
            Self::TextTooLong { bytes } => {
                write!(
                    f,
                    "expected at most {MAX_CONTENT_BYTES} bytes, found {bytes}"
                )
            }
            Self::LabelTooLong { chars } => {
                write!(
                    f,
                    "expected at most {MAX_LABEL_CHARS} characters, found {chars}"
                )
            }
            Self::ModelName => f.write_str("expected a model name of 1 to 256 characters"),
            Self::AgentId => f.write_str("expected an agent id of 1 to 32 characters of a-z 0-9 -"),
            Self::CronName => {
                f.write_str("expected a job name of 1 to 32 characters of a-z 0-9 - (as agent ids)")
            }
        }
    }
}

impl std::error::Error for ValueError {}

/// The key rule, shared by session keys and idempotency keys.
fn check_key(key: &str) -> Result<(), ValueError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if key.is_empty() || key.len() > MAX_SESSION_KEY || !key.chars().all(ok_char) {
        return Err(ValueError::Key);
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), ValueError> {
    if text.trim().is_empty() {
        return Err(ValueError::BlankText);
    }
    if text.len() > MAX_CONTENT_BYTES {
        return Err(ValueError::TextTooLong { bytes: text.len() });
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), ValueError> {
    let chars = label.chars().count();
    if chars > MAX_LABEL_CHARS {
        return Err(ValueError::LabelTooLong { chars });
    }
    Ok(())
}

fn check_model(model: &str) -> Result<(), ValueError> {
    if model.trim().is_empty() || model.len() > MAX_MODEL_NAME_BYTES {
        return Err(ValueError::ModelName);
    }
    Ok(())
}

/// The most characters an agent id may have.
pub const MAX_AGENT_ID: usize = 32;

/// The agent id rule: 1 to 32 characters of `a-z 0-9 -` (no `_`: `__` separates the levels
/// of an environment variable's name).
pub fn check_agent_id(id: &str) -> Result<(), ValueError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if id.is_empty() || id.len() > MAX_AGENT_ID || !id.chars().all(ok_char) {
        return Err(ValueError::AgentId);
    }
    Ok(())
}

/// Checks a session key: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
///
/// For callers holding a `&str` (the store checks keys it reads back from disk); params use
/// [`SessionKey`].
pub fn validate_session_key(key: &str) -> Result<(), String> {
    check_key(key).map_err(|e| e.to_string())
}

/// Declares a checked string type: the check runs in `new`, `FromStr` and deserialization.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value`; the error's `Display` is the message a client sees.
            pub fn new(value: impl Into<String>) -> Result<Self, ValueError> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value, as the `String` it is.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(value: String) -> Result<Self, ValueError> {
                Self::new(value)
            }
        }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(value: &str) -> Result<Self, ValueError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// Exactly `String`'s schema, inline (as schemars does for its own wrappers): the rule is
        /// the server's to enforce, and the document stays what it was.
        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                <String as JsonSchema>::inline_schema()
            }
            fn schema_name() -> Cow<'static, str> {
                <String as JsonSchema>::schema_name()
            }
            fn schema_id() -> Cow<'static, str> {
                <String as JsonSchema>::schema_id()
            }
            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                <String as JsonSchema>::json_schema(generator)
            }
        }
    };
}

checked_string! {
    /// A session key: 1 to 128 characters of `A-Z a-z 0-9 . _ : -` (it names a transcript, so
    /// it never holds a path separator).
    SessionKey, check_key
}

impl SessionKey {
    /// The session `main`, the default of `chat.send`.
    pub fn main() -> Self {
        Self("main".into())
    }
}

checked_string! {
    /// An idempotency key of `chat.send`: the session key's rule and message.
    IdempotencyKey, check_key
}

checked_string! {
    /// Message text (`chat.send`'s `message`, `chat.inject`'s `content`): not blank, at most
    /// [`MAX_CONTENT_BYTES`] bytes.
    MessageText, check_text
}

checked_string! {
    /// A session or message label: at most [`MAX_LABEL_CHARS`] characters.
    Label, check_label
}

checked_string! {
    /// A model name: not blank, at most [`MAX_MODEL_NAME_BYTES`] bytes.
    ModelName, check_model
}

checked_string! {
    /// An agent id (`[agents.<id>]`): 1 to 32 characters of `a-z 0-9 -`.
    AgentId, check_agent_id
}

/// The cron job name rule: the agent id rule (1 to 32 characters of `a-z 0-9 -`), so that
/// `[cron.<name>]` and `CLAWGATE_CRON__<NAME>__…` work and `cron:<name>` is a session key.
pub fn check_cron_name(name: &str) -> Result<(), ValueError> {
    check_agent_id(name).map_err(|_| ValueError::CronName)
}

checked_string! {
    /// A cron job's name (`cron.*`, `[cron.<name>]`): 1 to 32 characters of `a-z 0-9 -`.
    CronName, check_cron_name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Patch;
    use serde_json::{Value, json};

    #[test]
    fn agent_ids_are_lowercase_words_with_dashes() {
        for ok in ["main", "coder-2", "a", &"x".repeat(32)] {
            assert!(AgentId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Main", "a_b", "a b", &"x".repeat(33)] {
            assert_eq!(AgentId::new(bad), Err(ValueError::AgentId), "{bad}");
        }
    }

    /// Deserializes `value` as `T`, giving the refusal's message as a client would see it.
    fn refused<T: serde::de::DeserializeOwned + fmt::Debug>(value: Value) -> String {
        match serde_json::from_value::<T>(value) {
            Ok(v) => panic!("accepted {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The schema of a struct of `T` fields equals that of the same struct of `String` fields.
    fn same_schema_as_string<T: JsonSchema>() {
        #[derive(JsonSchema)]
        #[schemars(title = "Fields")]
        #[allow(dead_code)]
        struct Fields<T> {
            /// Plain.
            plain: T,
            /// Optional.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            optional: Option<T>,
            /// A patch.
            #[serde(default)]
            patch: Patch<T>,
            /// A list.
            list: Vec<T>,
        }
        let mut with_t = crate::protocol::schema_settings().into_generator();
        let mut with_string = crate::protocol::schema_settings().into_generator();
        let t = with_t.root_schema_for::<Fields<T>>();
        let s = with_string.root_schema_for::<Fields<String>>();
        assert_eq!(t.as_value(), s.as_value());
        assert_eq!(
            serde_json::to_value(with_t.definitions()).ok(),
            serde_json::to_value(with_string.definitions()).ok(),
            "no definition of its own"
        );
        assert!(with_t.definitions().is_empty(), "inline");
    }

    #[test]
    fn session_key() {
        let max = "k".repeat(128);
        for ok in ["main", "a", "A-z_0.9:x", max.as_str()] {
            let key = SessionKey::new(ok).expect(ok);
            assert_eq!(&*key, ok);
            assert!(validate_session_key(ok).is_ok());
        }
        let long = "k".repeat(129);
        for bad in ["", "a/b", "../x", "a b", "a\u{0}b", "é", long.as_str()] {
            let err = SessionKey::new(bad).expect_err(bad);
            assert_eq!(
                err.to_string(),
                "expected 1 to 128 characters of A-Z a-z 0-9 . _ : -"
            );
            assert_eq!(validate_session_key(bad), Err(err.to_string()));
            assert_eq!(
                refused::<SessionKey>(json!(bad)),
                "expected 1 to 128 characters of A-Z a-z 0-9 . _ : -"
            );
        }
        assert_eq!(SessionKey::main(), SessionKey::new("main").expect("main"));
        let key: SessionKey = serde_json::from_value(json!("work")).expect("key");
        assert_eq!(serde_json::to_value(&key).ok(), Some(json!("work")));
        assert_eq!(key, "work");
        assert_eq!(key.to_string(), "work");
        assert_eq!(
            refused::<SessionKey>(json!(3)),
            "invalid type: integer `3`, expected a string"
        );
        same_schema_as_string::<SessionKey>();
    }

    #[test]
    fn idempotency_key() {
        assert!(IdempotencyKey::new("msg-0042").is_ok());
        for bad in [String::new(), "k".repeat(129), "a b".into()] {
            assert_eq!(
                IdempotencyKey::new(bad.as_str()).map_err(|e| e.to_string()),
                Err("expected 1 to 128 characters of A-Z a-z 0-9 . _ : -".into())
            );
        }
        let key: IdempotencyKey = serde_json::from_value(json!("k1")).expect("key");
        assert_eq!(serde_json::to_value(&key).ok(), Some(json!("k1")));
        same_schema_as_string::<IdempotencyKey>();
    }

    #[test]
    fn message_text() {
        let max = "x".repeat(MAX_CONTENT_BYTES);
        for ok in ["hi", " x ", max.as_str()] {
            assert_eq!(MessageText::new(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "  \n\t"] {
            assert_eq!(
                refused::<MessageText>(json!(bad)),
                "expected non-empty text, found only whitespace"
            );
        }
        let big = "x".repeat(MAX_CONTENT_BYTES + 1);
        assert_eq!(
            MessageText::new(big).map_err(|e| e.to_string()),
            Err(format!(
                "expected at most 1048576 bytes, found {}",
                MAX_CONTENT_BYTES + 1
            ))
        );
        let text: MessageText = serde_json::from_value(json!("Hello")).expect("text");
        assert_eq!(serde_json::to_value(&text).ok(), Some(json!("Hello")));
        same_schema_as_string::<MessageText>();
    }

    #[test]
    fn label() {
        let max = "é".repeat(MAX_LABEL_CHARS);
        for ok in ["", "Daily notes", max.as_str()] {
            assert_eq!(Label::new(ok).as_deref(), Ok(ok));
        }
        assert_eq!(
            refused::<Label>(json!("l".repeat(129))),
            "expected at most 128 characters, found 129"
        );
        let label: Label = serde_json::from_value(json!("Work")).expect("label");
        assert_eq!(serde_json::to_value(&label).ok(), Some(json!("Work")));
        same_schema_as_string::<Label>();
    }

    #[test]
    fn model_name() {
        let max = "m".repeat(256);
        for ok in ["echo", " gpt ", max.as_str()] {
            assert_eq!(ModelName::new(ok).as_deref(), Ok(ok));
        }
        for bad in [String::new(), " \t".into(), "m".repeat(257)] {
            assert_eq!(
                refused::<ModelName>(json!(bad)),
                "expected a model name of 1 to 256 characters"
            );
        }
        let model: ModelName = serde_json::from_value(json!("echo")).expect("model");
        assert_eq!(serde_json::to_value(&model).ok(), Some(json!("echo")));
        same_schema_as_string::<ModelName>();
    }

    /// Every checked params field, refused by the method table's parser with the path and the
    /// message the handlers used to give.
    #[test]
    fn params_refusals_name_the_field_with_the_old_message() {
        use crate::error::Error;
        use crate::protocol::{
            ChatAbortParams, ChatHistoryParams, ChatInjectParams, ChatSendParams, SessionKeyParams,
            SessionsCreateParams, SessionsForkParams, SessionsPatchParams, SubscribeParams,
        };
        use crate::rpc::table::parse_params;

        fn check<T: serde::de::DeserializeOwned + fmt::Debug>(params: Value, want: (&str, &str)) {
            match parse_params::<T>(Some(&params.to_string())) {
                Err(Error::InvalidParams { path, message }) => {
                    assert_eq!((path.as_str(), message.as_str()), want, "{params}");
                }
                other => panic!("{params}: {other:?}"),
            }
        }
        const KEY: &str = "expected 1 to 128 characters of A-Z a-z 0-9 . _ : -";
        const BLANK: &str = "expected non-empty text, found only whitespace";
        const MODEL: &str = "expected a model name of 1 to 256 characters";
        let label = "l".repeat(129);
        let big = "x".repeat(MAX_CONTENT_BYTES + 1);
        let too_big = format!("expected at most 1048576 bytes, found {}", big.len());
        let too_long = "expected at most 128 characters, found 129";

        check::<SessionKeyParams>(json!({"key": "a/b"}), ("key", KEY));
        check::<SessionsCreateParams>(json!({"key": "a b"}), ("key", KEY));
        check::<SessionsCreateParams>(json!({"label": label}), ("label", too_long));
        check::<SessionsCreateParams>(json!({"model": " "}), ("model", MODEL));
        check::<SessionsPatchParams>(json!({"key": "é"}), ("key", KEY));
        check::<SessionsPatchParams>(json!({"key": "w", "label": label}), ("label", too_long));
        check::<SessionsPatchParams>(json!({"key": "w", "model": ""}), ("model", MODEL));
        check::<SessionsForkParams>(json!({"key": ""}), ("key", KEY));
        check::<SessionsForkParams>(json!({"key": "m", "newKey": "../x"}), ("newKey", KEY));
        check::<ChatHistoryParams>(json!({"sessionKey": ""}), ("sessionKey", KEY));
        let inject = |key: &str, content: &str| json!({"sessionKey": key, "role": "system", "content": content});
        check::<ChatInjectParams>(inject("a b", "x"), ("sessionKey", KEY));
        check::<ChatInjectParams>(inject("a", " \n\t"), ("content", BLANK));
        check::<ChatInjectParams>(inject("a", ""), ("content", BLANK));
        check::<ChatInjectParams>(inject("a", &big), ("content", &too_big));
        check::<ChatSendParams>(json!({"message": "   "}), ("message", BLANK));
        check::<ChatSendParams>(json!({"message": big}), ("message", &too_big));
        check::<ChatSendParams>(
            json!({"message": "x", "sessionKey": "a/b"}),
            ("sessionKey", KEY),
        );
        for key in [String::new(), "k".repeat(129)] {
            check::<ChatSendParams>(
                json!({"message": "x", "idempotencyKey": key}),
                ("idempotencyKey", KEY),
            );
        }
        let long_model = "m".repeat(257);
        for model in ["", "  ", long_model.as_str()] {
            check::<ChatSendParams>(json!({"message": "x", "model": model}), ("model", MODEL));
        }
        check::<ChatAbortParams>(json!({"sessionKey": "a/b"}), ("sessionKey", KEY));
        check::<SubscribeParams>(json!({"sessionKey": "a/b"}), ("sessionKey", KEY));

        // What passes is what passed before.
        let sent = parse_params::<ChatSendParams>(Some(
            r#"{"message":" hi ","sessionKey":"main","idempotencyKey":"k:1","model":"echo"}"#,
        ));
        let sent = sent.expect("valid send");
        assert_eq!(sent.message, " hi ");
        let patch = parse_params::<SessionsPatchParams>(Some(r#"{"key":"w","label":null}"#));
        assert_eq!(patch.expect("valid patch").label, Patch::Clear);
    }

    #[test]
    fn patches_and_options_carry_the_check() {
        assert_eq!(
            serde_json::from_value::<Patch<Label>>(json!(null)).ok(),
            Some(Patch::Clear)
        );
        assert!(serde_json::from_value::<Patch<Label>>(json!("l".repeat(129))).is_err());
        assert_eq!(
            serde_json::from_value::<Option<ModelName>>(json!(null)).ok(),
            Some(None)
        );
        assert!(serde_json::from_value::<Option<ModelName>>(json!("")).is_err());
    }
}

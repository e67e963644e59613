//! The one method table: every method, core or plugin, is a [`MethodDescriptor`].
//!
//! Core methods are declared once as types implementing [`Method`] or [`Subscription`]; the
//! table lowers each into a runtime descriptor (name, owner, scope, schemas, summary, examples,
//! handler). Plugins build descriptors directly. Only descriptors drive the jsonrpsee
//! registration, the scope check, `rpc.discover` and the method list in `gateway.hello`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use jsonrpsee::types::Params;
use schemars::{JsonSchema, SchemaGenerator};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use serde_json::value::RawValue;

use super::context::{CallContext, SubscriptionSink};
use crate::error::{Error, Result};
pub use crate::protocol::Scope;
use crate::protocol::schema_settings;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One example pairing of params and result, for the OpenRPC document.
#[derive(Debug, Clone)]
pub struct Example {
    /// A short name.
    pub name: &'static str,
    /// The params object.
    pub params: Value,
    /// The result.
    pub result: Value,
}

/// A plain method, declared once.
pub trait Method: 'static {
    /// The wire name, `namespace.method`.
    const NAME: &'static str;
    /// The scope a caller needs.
    const SCOPE: Scope;
    /// One line saying what it does.
    const SUMMARY: &'static str;
    /// Application error codes it can return (beyond the standard ones).
    const ERRORS: &'static [i32] = &[];
    /// Its params (an object).
    type Params: DeserializeOwned + JsonSchema + Send + 'static;
    /// Its result.
    type Result: Serialize + JsonSchema + Send + 'static;
    /// At least one example.
    fn examples() -> Vec<Example>;
}

/// A subscription, declared once.
pub trait Subscription: 'static {
    /// The subscribe method's wire name.
    const NAME: &'static str;
    /// The unsubscribe method's wire name.
    const UNSUBSCRIBE: &'static str;
    /// The notification method's wire name.
    const NOTIFICATION: &'static str;
    /// The scope a caller needs.
    const SCOPE: Scope;
    /// One line saying what it does.
    const SUMMARY: &'static str;
    /// Application error codes it can return.
    const ERRORS: &'static [i32] = &[];
    /// Its params.
    type Params: DeserializeOwned + JsonSchema + Send + 'static;
    /// What each notification carries in `params.result`.
    type Item: Serialize + JsonSchema + 'static;
    /// At least one example (result: the subscription id).
    fn examples() -> Vec<Example>;
}

/// Handles a call: params (raw) in, result (raw JSON) out.
pub type CallHandler<S> =
    Arc<dyn Fn(CallContext<S>, Params<'static>) -> BoxFuture<Result<Box<RawValue>>> + Send + Sync>;

/// What a subscription runs once its id has been sent to the client.
pub type SubscriptionTask = Box<dyn FnOnce(SubscriptionSink) -> BoxFuture<()> + Send>;

/// Handles a subscribe call: checks params and prepares the task, or refuses.
pub type SubscribeHandler<S> = Arc<
    dyn Fn(CallContext<S>, Params<'static>) -> BoxFuture<Result<SubscriptionTask>> + Send + Sync,
>;

/// What a method is and how it runs.
pub enum MethodKind<S> {
    /// A call with a result.
    Call(CallHandler<S>),
    /// A subscription.
    Subscribe {
        /// Prepares the subscription.
        handler: SubscribeHandler<S>,
        /// The notification method name.
        notification: String,
        /// The unsubscribe method name.
        unsubscribe: String,
        /// The schema of each notification's `params.result`.
        item_schema: Value,
    },
    /// Ends a subscription made by `subscribe`.
    Unsubscribe {
        /// The subscribe method it belongs to.
        subscribe: String,
    },
}

impl<S> Clone for MethodKind<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Call(h) => Self::Call(h.clone()),
            Self::Subscribe {
                handler,
                notification,
                unsubscribe,
                item_schema,
            } => Self::Subscribe {
                handler: handler.clone(),
                notification: notification.clone(),
                unsubscribe: unsubscribe.clone(),
                item_schema: item_schema.clone(),
            },
            Self::Unsubscribe { subscribe } => Self::Unsubscribe {
                subscribe: subscribe.clone(),
            },
        }
    }
}

/// The runtime form of a method: everything the server needs to serve and describe it.
/// `S` is the state its handlers receive.
pub struct MethodDescriptor<S> {
    /// Wire name.
    pub name: String,
    /// Who declared it: `core` or `plugin:<name>`.
    pub owner: String,
    /// Scope a caller needs.
    pub scope: Scope,
    /// One line.
    pub summary: String,
    /// JSON Schema of the params object (may be a `$ref` into the components).
    pub params_schema: Value,
    /// JSON Schema of the result.
    pub result_schema: Value,
    /// Application error codes.
    pub errors: Vec<i32>,
    /// Examples.
    pub examples: Vec<Example>,
    /// How it runs.
    pub kind: MethodKind<S>,
}

impl<S> Clone for MethodDescriptor<S> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            owner: self.owner.clone(),
            scope: self.scope,
            summary: self.summary.clone(),
            params_schema: self.params_schema.clone(),
            result_schema: self.result_schema.clone(),
            errors: self.errors.clone(),
            examples: self.examples.clone(),
            kind: self.kind.clone(),
        }
    }
}

impl<S> std::fmt::Debug for MethodDescriptor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodDescriptor")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A name declared twice.
#[derive(Debug, Clone, thiserror::Error)]
#[error("method `{name}` is declared twice: by {first} and by {second}")]
pub struct DuplicateMethod {
    /// The method name.
    pub name: String,
    /// The owner already in the table.
    pub first: String,
    /// The owner that tried to declare it again.
    pub second: String,
}

/// An event a client can subscribe to, with its payload schema.
#[derive(Debug, Clone)]
pub struct EventDecl {
    /// The event's name.
    pub name: String,
    /// One line.
    pub summary: String,
    /// Schema of the payload.
    pub payload_schema: Value,
    /// Who publishes it.
    pub owner: String,
}

/// The table under construction: descriptors plus the shared schema components.
pub struct MethodTable<S> {
    methods: BTreeMap<String, MethodDescriptor<S>>,
    events: BTreeMap<String, EventDecl>,
    generator: SchemaGenerator,
}

impl<S: Send + Sync + 'static> Default for MethodTable<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync + 'static> MethodTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            methods: BTreeMap::new(),
            events: BTreeMap::new(),
            generator: schema_settings().into_generator(),
        }
    }

    /// The schema of `T`, a `$ref` into the components when `T` is a named type.
    pub fn schema_for<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// The shared schema components.
    pub fn components(&self) -> &serde_json::Map<String, Value> {
        self.generator.definitions()
    }

    /// Adds a descriptor; a name already present is refused, naming both owners.
    pub fn insert(&mut self, desc: MethodDescriptor<S>) -> Result<(), DuplicateMethod> {
        if let Some(existing) = self.methods.get(&desc.name) {
            return Err(DuplicateMethod {
                name: desc.name,
                first: existing.owner.clone(),
                second: desc.owner,
            });
        }
        self.methods.insert(desc.name.clone(), desc);
        Ok(())
    }

    /// Declares an event of a payload type without a declaration of its own (plugins).
    pub fn event_of<T: JsonSchema>(&mut self, name: &str, summary: &str) {
        let payload_schema = self.schema_for::<T>();
        self.events.insert(
            name.to_string(),
            EventDecl {
                name: name.to_string(),
                summary: summary.to_string(),
                payload_schema,
                owner: "core".into(),
            },
        );
    }

    /// Declares an event with a raw payload schema (plugins).
    pub fn event_raw(&mut self, decl: EventDecl) {
        self.events.insert(decl.name.clone(), decl);
    }

    /// Registers a core method with its handler.
    pub fn method<M, F, Fut>(&mut self, handler: F) -> Result<(), DuplicateMethod>
    where
        M: Method,
        F: Fn(CallContext<S>, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result>> + Send + 'static,
    {
        let params_schema = self.schema_for::<M::Params>();
        let result_schema = self.schema_for::<M::Result>();
        let handler = Arc::new(handler);
        let call: CallHandler<S> = Arc::new(move |ctx, params| {
            let handler = handler.clone();
            Box::pin(async move {
                let params = parse_params::<M::Params>(params.as_str())?;
                let result = handler(ctx, params).await?;
                serde_json::value::to_raw_value(&result).map_err(Error::internal)
            })
        });
        self.insert(MethodDescriptor {
            name: M::NAME.into(),
            owner: "core".into(),
            scope: M::SCOPE,
            summary: M::SUMMARY.into(),
            params_schema,
            result_schema,
            errors: M::ERRORS.to_vec(),
            examples: M::examples(),
            kind: MethodKind::Call(call),
        })
    }

    /// Registers a core subscription (and its unsubscribe method) with its handler.
    pub fn subscription<D, F, Fut>(&mut self, handler: F) -> Result<(), DuplicateMethod>
    where
        D: Subscription,
        F: Fn(CallContext<S>, D::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SubscriptionTask>> + Send + 'static,
    {
        let params_schema = self.schema_for::<D::Params>();
        let item_schema = self.schema_for::<D::Item>();
        let unsubscribe_params = self.schema_for::<crate::protocol::UnsubscribeParams>();
        let handler = Arc::new(handler);
        let subscribe: SubscribeHandler<S> = Arc::new(move |ctx, params| {
            let handler = handler.clone();
            Box::pin(async move {
                let params = parse_params::<D::Params>(params.as_str())?;
                handler(ctx, params).await
            })
        });
        self.insert(MethodDescriptor {
            name: D::NAME.into(),
            owner: "core".into(),
            scope: D::SCOPE,
            summary: D::SUMMARY.into(),
            params_schema,
            result_schema: serde_json::json!({"type": "string", "title": "SubscriptionId"}),
            errors: D::ERRORS.to_vec(),
            examples: D::examples(),
            kind: MethodKind::Subscribe {
                handler: subscribe,
                notification: D::NOTIFICATION.into(),
                unsubscribe: D::UNSUBSCRIBE.into(),
                item_schema,
            },
        })?;
        self.insert(MethodDescriptor {
            name: D::UNSUBSCRIBE.into(),
            owner: "core".into(),
            scope: D::SCOPE,
            summary: format!("Ends a subscription made by `{}`.", D::NAME),
            params_schema: unsubscribe_params,
            result_schema: serde_json::json!({"type": "boolean"}),
            errors: Vec::new(),
            examples: vec![Example {
                name: "unsubscribe",
                params: serde_json::json!({"subscription": "3c5a1f0e9b2d4a77"}),
                result: serde_json::json!(true),
            }],
            kind: MethodKind::Unsubscribe {
                subscribe: D::NAME.into(),
            },
        })
    }

    /// The descriptors, by name.
    pub fn methods(&self) -> &BTreeMap<String, MethodDescriptor<S>> {
        &self.methods
    }

    /// The declared events, by name.
    pub fn events(&self) -> &BTreeMap<String, EventDecl> {
        &self.events
    }
}

impl<S: Send + Sync + 'static> crate::protocol::EventVisitor for MethodTable<S> {
    fn event<E: crate::protocol::Event>(&mut self) {
        self.event_of::<E>(E::NAME, E::SUMMARY);
    }
}

/// Parses a params object into `T`: absent means `{}`; an error names the field and what was
/// expected.
pub fn parse_params<T: DeserializeOwned>(raw: Option<&str>) -> Result<T> {
    let text = raw.unwrap_or("{}");
    let text = if text.trim_start().starts_with('[') {
        // Positional params: only an empty array is accepted, as "no params".
        let empty: std::result::Result<Vec<Value>, _> = serde_json::from_str(text);
        match empty {
            Ok(v) if v.is_empty() => "{}",
            _ => {
                return Err(Error::invalid_params(
                    "",
                    "expected named params (a JSON object), found an array",
                ));
            }
        }
    } else {
        text
    };
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|err| {
        let mut path = err.path().to_string();
        if path == "." {
            path.clear();
        }
        let message = err.inner().to_string();
        let message = strip_position(&message);
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            && path.rsplit('.').next() != Some(field)
        {
            path = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        Error::invalid_params(path, message.to_string())
    })
}

/// serde_json appends " at line 1 column 17"; the path says more than the position.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HelloParams, SubscribeParams};

    #[test]
    fn params_errors_name_the_path() {
        let err = parse_params::<HelloParams>(Some(r#"{"client":{"nam":"x"}}"#))
            .expect_err("unknown field");
        match err {
            Error::InvalidParams { path, message } => {
                assert_eq!(path, "client.nam");
                assert!(message.contains("expected one of"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err =
            parse_params::<SubscribeParams>(Some(r#"{"events":["a",3]}"#)).expect_err("bad item");
        match err {
            Error::InvalidParams { path, .. } => assert_eq!(path, "events[1]"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_params::<HelloParams>(None).is_ok());
        assert!(parse_params::<HelloParams>(Some("[]")).is_ok());
        assert!(parse_params::<HelloParams>(Some("[1]")).is_err());
    }

    #[test]
    fn duplicate_names_are_refused_naming_both_owners() {
        let mut table = MethodTable::<()>::new();
        let desc = |owner: &str| MethodDescriptor {
            name: "x.y".into(),
            owner: owner.into(),
            scope: Scope::Read,
            summary: String::new(),
            params_schema: Value::Null,
            result_schema: Value::Null,
            errors: Vec::new(),
            examples: Vec::new(),
            kind: MethodKind::Unsubscribe {
                subscribe: String::new(),
            },
        };
        table.insert(desc("core")).expect("first");
        let err = table.insert(desc("plugin:z")).expect_err("second");
        assert_eq!(
            err.to_string(),
            "method `x.y` is declared twice: by core and by plugin:z"
        );
    }
}

//! Wire pieces shared by several namespaces: the empty params and the three-state `Patch`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Params of a method that takes none: `{}` or absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "NoParams")]
pub struct NoParams {}

/// A value that may be absent, `null` (clear it), or set (for patches).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Patch<T> {
    /// Not in the params: leave unchanged.
    #[default]
    Keep,
    /// `null`: clear.
    Clear,
    /// A new value.
    Set(T),
}

impl<T> Patch<T> {
    /// The same patch with the new value mapped (a checked value to what a store keeps).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Keep => Patch::Keep,
            Patch::Clear => Patch::Clear,
            Patch::Set(v) => Patch::Set(f(v)),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Clear,
            Some(v) => Patch::Set(v),
        })
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Set(v) => v.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

impl<T: JsonSchema> JsonSchema for Patch<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Nullable_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Option<T>>::json_schema(generator)
    }
    fn inline_schema() -> bool {
        true
    }
}

//! Query strings into the same parameter types as JSON bodies, with errors in
//! plain words: `port: expected an integer from 0 to 65535, got "x"` instead
//! of the parser's `invalid digit found in string`.
//!
//! A small serde deserializer over the `key=value` pairs: each value is text,
//! and the type the field asks for (`u16`, `bool`, a string, an option) picks
//! how it is read, so the error can name the parameter, the expected type and
//! the value given. Unknown parameters are ignored, as unknown JSON fields are.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

/// Why a query string does not fit its parameter type; the message is the
/// whole explanation.
#[derive(Debug)]
pub(crate) struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

impl de::Error for QueryError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        QueryError(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        QueryError(format!("missing parameter `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        QueryError(format!("parameter `{field}` is given twice"))
    }
}

/// Reads `T` from a query string (without the leading `?`).
pub(crate) fn from_query<T: DeserializeOwned>(query: &str) -> Result<T, QueryError> {
    let pairs: Vec<(Cow<str>, Cow<str>)> = form_urlencoded::parse(query.as_bytes()).collect();
    T::deserialize(Pairs { pairs: pairs.into_iter(), value: None })
}

/// The pairs, as a map.
struct Pairs<'a> {
    pairs: std::vec::IntoIter<(Cow<'a, str>, Cow<'a, str>)>,
    value: Option<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'de> de::Deserializer<'de> for Pairs<'_> {
    type Error = QueryError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Pairs<'_> {
    type Error = QueryError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, QueryError> {
        let Some((key, value)) = self.pairs.next() else { return Ok(None) };
        let out = seed.deserialize(key.as_ref().into_deserializer()).map(Some);
        self.value = Some((key, value));
        out
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, QueryError> {
        let (key, value) = self.value.take().expect("serde asks for a value after its key");
        seed.deserialize(Value { key: &key, text: &value })
    }
}

/// One parameter's text, read as the type its field asks for.
struct Value<'a> {
    key: &'a str,
    text: &'a str,
}

impl Value<'_> {
    fn expected(&self, what: &str) -> QueryError {
        QueryError(format!("{}: expected {what}, got {:?}", self.key, self.text))
    }

    fn integer<T: std::str::FromStr + fmt::Display>(&self, min: T, max: T) -> Result<T, QueryError> {
        self.text.parse().map_err(|_| self.expected(&format!("an integer from {min} to {max}")))
    }
}

macro_rules! integers {
    ($($method:ident $visit:ident $ty:ty;)+) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
            visitor.$visit(self.integer::<$ty>(<$ty>::MIN, <$ty>::MAX)?)
        })+
    };
}

impl<'de> de::Deserializer<'de> for Value<'_> {
    type Error = QueryError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_str(self.text)
    }

    integers! {
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        match self.text {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(self.expected("true or false")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, QueryError> {
        Err(self.expected("a JSON body for this parameter (a query string cannot carry an object)"))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> Result<V::Value, QueryError> {
        Err(self.expected("a JSON body for this parameter (a query string cannot carry a list)"))
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Key {
        address: String,
        port: u16,
        proto: u8,
        set: Option<bool>,
    }

    fn key(query: &str) -> Result<Key, String> {
        from_query(query).map_err(|e| e.0)
    }

    #[test]
    fn parameters_are_read_as_their_fields_types() {
        assert_eq!(
            key("address=10.0.0.1&port=80&proto=6&extra=1"),
            Ok(Key { address: "10.0.0.1".into(), port: 80, proto: 6, set: None })
        );
        assert_eq!(key("address=%3A%3A1&port=0&proto=17&set=true").unwrap().address, "::1");
    }

    #[test]
    fn errors_name_the_parameter_the_type_and_the_value() {
        assert_eq!(key("address=a&port=x&proto=6"), Err("port: expected an integer from 0 to 65535, got \"x\"".into()));
        assert_eq!(
            key("address=a&port=80&proto=256"),
            Err("proto: expected an integer from 0 to 255, got \"256\"".into())
        );
        assert_eq!(
            key("address=a&port=-1&proto=6"),
            Err("port: expected an integer from 0 to 65535, got \"-1\"".into())
        );
        assert_eq!(key("address=a&port=&proto=6"), Err("port: expected an integer from 0 to 65535, got \"\"".into()));
        assert_eq!(key("address=a&port=1&proto=6&set=yes"), Err("set: expected true or false, got \"yes\"".into()));
        assert_eq!(key("port=1&proto=6"), Err("missing parameter `address`".into()));
        assert_eq!(key("address=a&address=b&port=1&proto=6"), Err("parameter `address` is given twice".into()));
    }
}

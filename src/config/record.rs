//! The one field table behind each record type, and how a field's value crosses into
//! and out of a script.
//!
//! `record!` takes a struct's fields once, with their doc comments, and makes from
//! that list: the struct itself (with serde's derives, so JSON comes from the same
//! list), `Fields::FIELDS` (for construction from a map, printing and completion),
//! `Fields::DOCS`, and the getters and setters scripts use (`Fields::get`,
//! `Fields::set`). How a value of each field type reads and writes in a script is its
//! `Codec`; a field may name another codec than its type's with `=> CodecType` (a
//! number of seconds is stored as an `f64` but checked as a duration).
//!
//! Adding a field to a record is one line in its table, plus its check in
//! `NodeConfig::validate` when it needs one.

use std::collections::BTreeMap;

use rhai::{Array, Dynamic, FLOAT, INT, ImmutableString, Map};

/// A record's fields, from its table.
pub trait Fields: Sized {
    /// Readable and writable fields, in printing order.
    const FIELDS: &'static [&'static str];
    /// Each field's doc comment, in `FIELDS` order.
    const DOCS: &'static [(&'static str, &'static str)];
    /// The value of a field of `FIELDS` as a script reads it; `None` for another name.
    fn get(&self, field: &str) -> Option<Dynamic>;
    /// Assigns a field of `FIELDS` from a script's value, checking its type. `record`
    /// is the type's name for messages.
    fn set(&mut self, field: &str, value: Dynamic, record: &str) -> Result<(), SetError>;
}

/// Why a field could not be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetError {
    /// The record has no such field.
    Unknown,
    /// The value does not fit: the message names the record and the field.
    Invalid(String),
}

/// How values of one field type read and write in a script. `at` names the record and
/// field in messages: `Supervisor::NodeConfig.cpu_affinity`.
pub trait Codec<T> {
    /// What the script reads.
    fn read(value: &T) -> Dynamic;
    /// What the script assigned, checked.
    fn write(value: Dynamic, at: &str) -> Result<T, String>;
}

/// The codec of a type that has one of its own (`impl Codec<T> for T`).
pub struct Own;

impl<T: Codec<T>> Codec<T> for Own {
    fn read(value: &T) -> Dynamic {
        T::read(value)
    }
    fn write(value: Dynamic, at: &str) -> Result<T, String> {
        T::write(value, at)
    }
}

/// Whether serde leaves a field out of JSON: an unset optional field.
pub trait Omit {
    /// True when the field is left out of JSON.
    fn omit(&self) -> bool {
        false
    }
}

impl<T> Omit for Option<T> {
    fn omit(&self) -> bool {
        self.is_none()
    }
}

/// For `skip_serializing_if`.
pub fn omit<T: Omit>(value: &T) -> bool {
    value.omit()
}

/// Defines a record type from its field table; see the module's docs.
///
/// The type's own attributes come first (its derives besides serde's, and serde's
/// container attributes); fields in `json_only` travel in JSON but are not fields of the
/// script type.
///
/// ```text
/// record! {
///     /// doc of the type
///     #[derive(Clone, Debug, PartialEq)]
///     #[serde(deny_unknown_fields, default)]
///     pub struct NodeConfig {
///         /// doc of the field
///         name: String,
///         revival_delay: Option<f64> => Seconds,
///     }
/// }
/// ```
macro_rules! record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty $(=> $codec:ty)?
            ),* $(,)?
        }
        $(
            json_only {
                $( $(#[$xmeta:meta])* $xfield:ident : $xty:ty ),* $(,)?
            }
        )?
    ) => {
        #[derive(serde::Serialize, serde::Deserialize)]
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[doc = $doc])*
                #[serde(skip_serializing_if = "crate::config::record::omit")]
                pub $field: $ty,
            )*
            $($(
                $(#[$xmeta])*
                pub $xfield: $xty,
            )*)?
        }

        impl crate::config::record::Fields for $name {
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
            const DOCS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), concat!($($doc, "\n"),*))),*];

            fn get(&self, field: &str) -> Option<rhai::Dynamic> {
                use crate::config::record::Codec;
                match field {
                    $(stringify!($field) => Some(
                        <crate::config::record::codec_of!($($codec)?) as Codec<$ty>>::read(&self.$field)
                    ),)*
                    _ => None,
                }
            }

            fn set(
                &mut self,
                field: &str,
                value: rhai::Dynamic,
                record: &str,
            ) -> Result<(), crate::config::record::SetError> {
                use crate::config::record::{Codec, SetError};
                match field {
                    $(stringify!($field) => {
                        let at = format!("{record}.{field}");
                        self.$field = <crate::config::record::codec_of!($($codec)?) as Codec<$ty>>::write(value, &at)
                            .map_err(SetError::Invalid)?;
                        Ok(())
                    })*
                    _ => Err(SetError::Unknown),
                }
            }
        }

    };
}

pub(crate) use record;

/// The codec a field names, else its type's own.
macro_rules! codec_of {
    () => {
        crate::config::record::Own
    };
    ($codec:ty) => {
        $codec
    };
}

pub(crate) use codec_of;

/// A friendly name for the type of a value, for error messages.
pub fn kind(v: &Dynamic) -> &'static str {
    if v.is_unit() {
        "()"
    } else if v.is_string() {
        "string"
    } else if v.is_int() {
        "integer"
    } else if v.is_float() {
        "float"
    } else if v.is_bool() {
        "bool"
    } else if v.is_char() {
        "char"
    } else if v.is_array() {
        "array"
    } else if v.is_map() {
        "map"
    } else if v.is_fnptr() {
        "function pointer"
    } else if v.is::<super::NodeConfig>() {
        "Supervisor::NodeConfig"
    } else if v.is::<super::ClusterEndpoint>() {
        "Supervisor::ClusterEndpoint"
    } else if v.is::<super::ClusterRole>() {
        "Supervisor::ClusterRole"
    } else if v.is::<super::NodeStatus>() {
        "Supervisor::NodeStatus"
    } else if v.is::<super::Status>() {
        "Supervisor::Status"
    } else {
        "another type"
    }
}

/// `Supervisor::NodeConfig.cpu_affinity must be an integer or (), not string`.
pub fn wrong(at: &str, expected: &str, v: &Dynamic) -> String {
    format!("{at} must be {expected}, not {}", kind(v))
}

fn text(v: &Dynamic) -> Option<String> {
    v.read_lock::<ImmutableString>().map(|s| s.to_string())
}

impl Codec<String> for String {
    fn read(value: &String) -> Dynamic {
        value.clone().into()
    }
    fn write(v: Dynamic, at: &str) -> Result<String, String> {
        text(&v).ok_or_else(|| wrong(at, "a string", &v))
    }
}
impl Omit for String {}

impl Codec<Option<String>> for Option<String> {
    fn read(value: &Option<String>) -> Dynamic {
        value.clone().map_or(Dynamic::UNIT, Into::into)
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<String>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        text(&v)
            .map(Some)
            .ok_or_else(|| wrong(at, "a string or ()", &v))
    }
}

impl Codec<Option<bool>> for Option<bool> {
    fn read(value: &Option<bool>) -> Dynamic {
        value.map_or(Dynamic::UNIT, Into::into)
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<bool>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        v.as_bool()
            .map(Some)
            .map_err(|_| wrong(at, "a bool or ()", &v))
    }
}

impl Codec<Option<i64>> for Option<i64> {
    fn read(value: &Option<i64>) -> Dynamic {
        value.map_or(Dynamic::UNIT, |n| (n as INT).into())
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<i64>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        v.as_int()
            .map(Some)
            .map_err(|_| wrong(at, "an integer or ()", &v))
    }
}

impl Codec<i64> for i64 {
    fn read(value: &i64) -> Dynamic {
        (*value as INT).into()
    }
    fn write(v: Dynamic, at: &str) -> Result<i64, String> {
        v.as_int().map_err(|_| wrong(at, "an integer", &v))
    }
}
impl Omit for i64 {}

/// A number (an integer reads as a float); `()` unsets.
impl Codec<Option<f64>> for Option<f64> {
    fn read(value: &Option<f64>) -> Dynamic {
        value.map_or(Dynamic::UNIT, |f| (f as FLOAT).into())
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<f64>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        v.as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map(Some)
            .map_err(|_| wrong(at, "a number or ()", &v))
    }
}

/// A duration in seconds, an integer or a float, checked by `config::seconds`; `()`
/// unsets.
pub struct Seconds;

impl Codec<Option<f64>> for Seconds {
    fn read(value: &Option<f64>) -> Dynamic {
        <Option<f64> as Codec<Option<f64>>>::read(value)
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<f64>, String> {
        let secs = if v.is_unit() {
            return Ok(None);
        } else if let Ok(i) = v.as_int() {
            i as f64
        } else if let Ok(f) = v.as_float() {
            f
        } else {
            return Err(wrong(at, "a number of seconds or ()", &v));
        };
        super::seconds(secs).map_err(|e| format!("{at} {e}"))?;
        Ok(Some(secs))
    }
}

fn string_list(v: &Dynamic, at: &str) -> Result<Vec<String>, String> {
    let Some(array) = v.read_lock::<Array>() else {
        return Err(wrong(at, "an array of strings", v));
    };
    array
        .iter()
        .enumerate()
        .map(|(i, item)| {
            text(item).ok_or_else(|| format!("{at}[{i}] must be a string, not {}", kind(item)))
        })
        .collect()
}

fn strings(v: &[String]) -> Dynamic {
    Dynamic::from_array(v.iter().map(|s| Dynamic::from(s.clone())).collect())
}

impl Codec<Vec<String>> for Vec<String> {
    fn read(value: &Vec<String>) -> Dynamic {
        strings(value)
    }
    fn write(v: Dynamic, at: &str) -> Result<Vec<String>, String> {
        string_list(&v, at)
    }
}
/// An empty list is left out, as an unset field is (a record reads it back as empty).
impl Omit for Vec<String> {
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

impl Codec<Option<Vec<String>>> for Option<Vec<String>> {
    fn read(value: &Option<Vec<String>>) -> Dynamic {
        value.as_deref().map_or(Dynamic::UNIT, strings)
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<Vec<String>>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        string_list(&v, at).map(Some)
    }
}

/// Text values; numbers and bools are accepted and written as text, as a shell would.
impl Codec<BTreeMap<String, String>> for BTreeMap<String, String> {
    fn read(value: &BTreeMap<String, String>) -> Dynamic {
        Dynamic::from_map(
            value
                .iter()
                .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
                .collect(),
        )
    }
    fn write(v: Dynamic, at: &str) -> Result<BTreeMap<String, String>, String> {
        let Some(map) = v.read_lock::<Map>() else {
            return Err(wrong(at, "a map of strings", &v));
        };
        map.iter()
            .map(|(k, item)| {
                if item.is_string() || item.is_int() || item.is_float() || item.is_bool() {
                    Ok((k.to_string(), item.to_string()))
                } else {
                    Err(format!("{at}.{k} must be a string, not {}", kind(item)))
                }
            })
            .collect()
    }
}
impl Omit for BTreeMap<String, String> {
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

/// A map of records of type `R`, each given as the record or as a map.
pub fn record_map<R: Clone + Send + Sync + 'static>(
    v: &Dynamic,
    at: &str,
    expected: &str,
    from_map: impl Fn(Map) -> Result<R, String>,
) -> Result<BTreeMap<String, R>, String> {
    let Some(map) = v.read_lock::<Map>() else {
        return Err(wrong(at, &format!("a map of {expected}"), v));
    };
    map.iter()
        .map(|(k, item)| {
            let record = if let Some(r) = item.read_lock::<R>() {
                r.clone()
            } else if let Some(m) = item.read_lock::<Map>() {
                from_map(m.clone()).map_err(|e| format!("{at}.{k}: {e}"))?
            } else {
                return Err(format!(
                    "{at}.{k} must be a {expected} or a map, not {}",
                    kind(item)
                ));
            };
            Ok((k.to_string(), record))
        })
        .collect()
}

/// Reads a map of records as a map of custom values, so that `c.cluster.w1.role = ...`
/// writes back through the record's setters.
pub fn read_record_map<R: Clone + Send + Sync + 'static>(value: &BTreeMap<String, R>) -> Dynamic {
    Dynamic::from_map(
        value
            .iter()
            .map(|(k, r)| (k.into(), Dynamic::from(r.clone())))
            .collect(),
    )
}

/// A structured field (`shapes::Shape`): a script's value is read as JSON data and
/// parsed as JSON is, so both ways in give the same value and the same errors.
pub struct Json;

impl<T: super::shapes::Shape> Codec<Option<T>> for Json {
    fn read(value: &Option<T>) -> Dynamic {
        value
            .as_ref()
            .map_or(Dynamic::UNIT, |v| from_json(&v.to_value()))
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<T>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        let json = to_json(&v, at)?;
        T::parse(&json, at).map(Some)
    }
}

/// A script's plain value (strings, numbers, bools, arrays, maps, `()`) as JSON data.
pub fn to_json(v: &Dynamic, at: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    if v.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = v.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = v.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{at}: {f} is not a number"));
    }
    if let Some(s) = text(v) {
        return Ok(Value::String(s));
    }
    if let Some(array) = v.read_lock::<Array>() {
        return array
            .iter()
            .enumerate()
            .map(|(i, item)| to_json(item, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(map) = v.read_lock::<Map>() {
        return map
            .iter()
            .map(|(k, item)| Ok((k.to_string(), to_json(item, &format!("{at}.{k}"))?)))
            .collect::<Result<serde_json::Map<_, _>, String>>()
            .map(Value::Object);
    }
    Err(format!("{at} cannot hold a {}", kind(v)))
}

/// JSON data as a script's value.
pub fn from_json(v: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => (i as INT).into(),
            None => (n.as_f64().unwrap_or(0.0) as FLOAT).into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(items) => Dynamic::from_array(items.iter().map(from_json).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, item)| (k.as_str().into(), from_json(item)))
                .collect(),
        ),
    }
}

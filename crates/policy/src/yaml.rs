//! YAML (and JSON, which YAML reads too) the way kubectl reads it: a plain
//! scalar such as `y`, `on`, `123` or `1.10` is a boolean or a number only
//! where the field asks for one; where the field is a string, it is the
//! text as written (`1.10` stays "1.10", never a re-formatted `1.1`).
//!
//! An untyped YAML value loses that text as soon as the scalar is
//! resolved, and the type a field wants is only known once the document's
//! kind is. So documents are first read into a [`Node`] tree that keeps
//! every plain scalar's source text next to its resolved value, and the
//! typed structs are then deserialized from that tree, which hands out
//! the text to string fields and the resolved value to everything else.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A quoted scalar, or a plain one YAML resolves to a string.
    Str(String),
    /// A plain scalar YAML resolves to null, a boolean or a number, with
    /// the text it was written as.
    Plain {
        text: String,
        value: Resolved,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl Node {
    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.text() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The scalar's text as a string field would read it; None for null,
    /// sequences and mappings.
    pub fn text(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            Node::Plain { value: Resolved::Null, .. } => None,
            Node::Plain { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Plain { value: Resolved::Null, .. })
    }
}

/// Reads every document of a YAML stream. Empty and null documents are
/// skipped, as kubectl skips them.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, serde_saphyr::Error> {
    parse_with_budget(text, serde_saphyr::Budget::default())
}

/// As [`parse_documents`], for streams of up to `max_documents` documents
/// (the default budget stops at 1,024): the node, event and scalar
/// budgets grow in proportion, so each document keeps the default's share.
pub fn parse_many_documents(text: &str, max_documents: usize) -> Result<Vec<Node>, serde_saphyr::Error> {
    let mut budget = serde_saphyr::Budget::default();
    let scale = max_documents.div_ceil(budget.max_documents).max(1);
    budget.max_documents = budget.max_documents.max(max_documents);
    budget.max_events = budget.max_events.saturating_mul(scale);
    budget.max_nodes = budget.max_nodes.saturating_mul(scale);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.saturating_mul(scale);
    parse_with_budget(text, budget)
}

fn parse_with_budget(text: &str, budget: serde_saphyr::Budget) -> Result<Vec<Node>, serde_saphyr::Error> {
    // `.inf` and `.nan` are valid plain scalars: as text where a string is
    // expected, and a type error (not a syntax error) elsewhere.
    let options = serde_saphyr::options! {
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        budget: Some(budget),
    };
    let raw: Vec<Raw> = serde_saphyr::from_multiple_with_options(text, options)?;
    Ok(raw.into_iter().map(|r| r.into_node(text)).collect())
}

// ---- reading: serde-saphyr gives the resolved value and, through
// `Spanned`, where the node was written; the text comes from the source.

struct Raw(Spanned<RawValue>);

enum RawValue {
    Str(String),
    Resolved(Resolved),
    Seq(Vec<Raw>),
    Map(Vec<(Raw, Raw)>),
}

impl Raw {
    fn into_node(self, source: &str) -> Node {
        let span = self.0.defined.span();
        match self.0.value {
            RawValue::Str(s) => Node::Str(s),
            RawValue::Resolved(value) => {
                let written = span.byte_offset().zip(span.byte_len()).and_then(|(offset, len)| {
                    let start = usize::try_from(offset).ok()?;
                    source.get(start..start.checked_add(usize::try_from(len).ok()?)?)
                });
                let text = match written {
                    Some(t) => t.to_string(),
                    // Without a location the resolved value is all there is.
                    None => match value {
                        Resolved::Null => String::new(),
                        Resolved::Bool(b) => b.to_string(),
                        Resolved::Int(i) => i.to_string(),
                        Resolved::UInt(u) => u.to_string(),
                        Resolved::Float(f) => f.to_string(),
                    },
                };
                Node::Plain { text, value }
            }
            RawValue::Seq(items) => Node::Seq(items.into_iter().map(|i| i.into_node(source)).collect()),
            RawValue::Map(entries) => Node::Map(
                entries.into_iter().map(|(k, v)| (k.into_node(source), v.into_node(source))).collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Raw(Spanned::<RawValue>::deserialize(d)?))
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML node")
            }
            fn visit_str<E>(self, s: &str) -> Result<RawValue, E> {
                Ok(RawValue::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<RawValue, E> {
                Ok(RawValue::Str(s))
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::Bool(b)))
            }
            fn visit_i64<E>(self, i: i64) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::Int(i)))
            }
            fn visit_u64<E>(self, u: u64) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::UInt(u)))
            }
            // Integers past 64 bits only matter as text, which is kept.
            fn visit_i128<E>(self, i: i128) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::Float(i as f64)))
            }
            fn visit_u128<E>(self, u: u128) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::Float(u as f64)))
            }
            fn visit_f64<E>(self, f: f64) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::Float(f)))
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::Null))
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Resolved(Resolved::Null))
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
                RawValue::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawValue::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(RawValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

// ---- typed deserialization from a node tree.

/// Reads a node tree into `T`. On a mismatch, the field path (empty for
/// the node itself) and the reason, in the shape document errors use.
pub fn typed<T: de::DeserializeOwned>(node: &Node) -> Result<T, Vec<(String, String)>> {
    serde_path_to_error::deserialize(node).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![(path, e.into_inner().to_string())]
    })
}

/// A type mismatch while reading a node tree into a typed struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn null_is_not_a_string(text: &str) -> Error {
    if text.is_empty() {
        Error("expected a string, got an empty value (null); write \"\" for an empty string".into())
    } else {
        Error(format!("expected a string, got null ({text}); write \"{text}\" if the text is meant"))
    }
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Str(s) => visitor.visit_borrowed_str(s),
            Node::Plain { value, .. } => match *value {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::UInt(u) => visitor.visit_u64(u),
                Resolved::Float(f) => visitor.visit_f64(f),
            },
            Node::Seq(items) => visitor.visit_seq(Items(items.iter())),
            Node::Map(entries) => visitor.visit_map(Entries { entries: entries.iter(), value: None }),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Plain { value: Resolved::Null, text } => Err(null_is_not_a_string(text)),
            // The reason this module exists: a string field reads the text.
            Node::Plain { text, .. } => visitor.visit_borrowed_str(text),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.text() {
            Some(text) => visitor.visit_enum(text.into_deserializer()),
            None => Err(Error("expected the name of a variant".into())),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 bytes byte_buf unit unit_struct
        seq tuple tuple_struct map struct
    }
}

struct Items<'de>(std::slice::Iter<'de, Node>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|n| seed.deserialize(n)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'de> {
    entries: std::slice::Iter<'de, (Node, Node)>,
    value: Option<&'de Node>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value =
            self.value.take().ok_or_else(|| Error("a mapping value was read before its key".into()))?;
        seed.deserialize(value)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn one(text: &str) -> Node {
        parse_documents(text).unwrap().remove(0)
    }

    #[test]
    fn plain_scalars_keep_their_text_for_string_fields() {
        let node = one("{a: y, b: on, c: 1.10, d: 123, e: 0x1F, f: 1.0e3, g: 'on', h: \"1.10\", n: no}");
        let map: BTreeMap<String, String> = BTreeMap::deserialize(&node).unwrap();
        let want: BTreeMap<String, String> = [
            ("a", "y"),
            ("b", "on"),
            ("c", "1.10"),
            ("d", "123"),
            ("e", "0x1F"),
            ("f", "1.0e3"),
            ("g", "on"),
            ("h", "1.10"),
            ("n", "no"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(map, want);
    }

    #[test]
    fn keys_that_look_like_booleans_stay_text() {
        // `n` and `y` are YAML 1.1 booleans, also as keys.
        let node = one("n: 1\ny: 2\n");
        let map: BTreeMap<String, u16> = BTreeMap::deserialize(&node).unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["n", "y"]);
    }

    #[test]
    fn typed_fields_get_the_resolved_value() {
        let node = one("{port: 80, on: yes, ratio: 1.10}");
        #[derive(Deserialize)]
        struct T {
            port: u16,
            on: bool,
            ratio: f64,
        }
        let t = T::deserialize(&node).unwrap();
        assert_eq!((t.port, t.on, t.ratio), (80, true, 1.1));
    }

    #[test]
    fn real_type_errors_stay_errors() {
        let err = |text: &str| BTreeMap::<String, String>::deserialize(&one(text)).unwrap_err().to_string();
        assert!(
            err("{a: {b: c}}").contains("invalid type: map, expected a string"),
            "{}",
            err("{a: {b: c}}")
        );
        assert!(err("{a: [b]}").contains("invalid type: sequence, expected a string"));
        assert!(err("{a: null}").contains("got null (null)"), "{}", err("{a: null}"));
        assert!(err("{a: }").contains("empty value"), "{}", err("{a: }"));
        let err = u16::deserialize(&one("\"80\"")).unwrap_err().to_string();
        assert!(err.contains("invalid type: string \"80\", expected u16"), "{err}");
    }

    #[test]
    fn aliases_and_multi_line_plain_scalars() {
        let node = one("a: &v 1.20\nb: *v\nc: plain\n  folded\n");
        let map: BTreeMap<String, String> = BTreeMap::deserialize(&node).unwrap();
        assert_eq!(map["a"], "1.20");
        assert_eq!(map["b"], "1.20");
        assert_eq!(map["c"], "plain folded");
    }

    #[test]
    fn json_is_read_too() {
        let node = one(r#"[{"key": "v", "value": 1.10, "x": [true, null]}]"#);
        let Node::Seq(items) = &node else { panic!("{node:?}") };
        assert_eq!(items[0].get("value").and_then(Node::text), Some("1.10"));
        assert_eq!(items[0].get("key").and_then(Node::text), Some("v"));
    }
}

//! Lenient JSON building blocks for the runtimes' records. The records are
//! written by other programs and their strings come from users (names,
//! labels, annotations): a field of an unexpected type reads as absent
//! instead of failing the whole record, and maps keep only the keys asked
//! for, so a container with thousands of labels costs no allocation per
//! label.
//!
//! Nesting depth stays bounded by serde_json's recursion limit (128), also
//! inside skipped values.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string, or `None` when the value has any other type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct LenientStr(pub Option<String>);

impl<'de> Deserialize<'de> for LenientStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyAs::<StrOut>::default())
            .map(LenientStr)
    }
}

/// An unsigned integer that fits in u32, or `None` for any other value
/// (negative, fractional, too large, another type).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct LenientU32(pub Option<u32>);

impl<'de> Deserialize<'de> for LenientU32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyAs::<U32Out>::default())
            .map(LenientU32)
    }
}

/// A boolean, or `None` for any other value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct LenientBool(pub Option<bool>);

impl<'de> Deserialize<'de> for LenientBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyAs::<BoolOut>::default())
            .map(LenientBool)
    }
}

/// An object deserialized as `T`, or `None` when the value is not an
/// object (null, a string, an array, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LenientObject<T>(pub Option<T>);

impl<T> Default for LenientObject<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LenientObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq).map(|()| None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
            .map(LenientObject)
    }
}

/// What a scalar visit keeps; everything else reads as `None`.
trait ScalarOut {
    type Out;
    fn from_str(_: &str) -> Option<Self::Out> {
        None
    }
    fn from_u64(_: u64) -> Option<Self::Out> {
        None
    }
    fn from_bool(_: bool) -> Option<Self::Out> {
        None
    }
}

struct StrOut;
impl ScalarOut for StrOut {
    type Out = String;
    fn from_str(s: &str) -> Option<String> {
        Some(s.to_owned())
    }
}

struct U32Out;
impl ScalarOut for U32Out {
    type Out = u32;
    fn from_u64(v: u64) -> Option<u32> {
        u32::try_from(v).ok()
    }
}

struct BoolOut;
impl ScalarOut for BoolOut {
    type Out = bool;
    fn from_bool(v: bool) -> Option<bool> {
        Some(v)
    }
}

struct AnyAs<S>(std::marker::PhantomData<S>);

impl<S> Default for AnyAs<S> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<'de, S: ScalarOut> Visitor<'de> for AnyAs<S> {
    type Value = Option<S::Out>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(S::from_str(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(S::from_u64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok().and_then(S::from_u64))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(S::from_bool(v))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|()| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|()| None)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A string-to-string map of which only the keys in `K::KEYS` are kept
/// (string values only; the last of duplicate keys wins, as in Go's
/// encoding/json, which wrote these files). Any non-object reads as empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PickedKeys<K> {
    pub values: Vec<Option<String>>,
    _keys: std::marker::PhantomData<K>,
}

pub(super) trait KeySet {
    const KEYS: &'static [&'static str];
}

impl<K: KeySet> Default for PickedKeys<K> {
    fn default() -> Self {
        Self {
            values: vec![None; K::KEYS.len()],
            _keys: std::marker::PhantomData,
        }
    }
}

impl<K: KeySet> PickedKeys<K> {
    /// The value of `key`, which must be one of `K::KEYS`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = K::KEYS.iter().position(|k| *k == key)?;
        self.values.get(i)?.as_deref()
    }
}

/// Finds a map key in a key set without allocating it.
struct KeyIndex(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyIndex {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIndex {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

impl<'de, K: KeySet> Deserialize<'de> for PickedKeys<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<K>(std::marker::PhantomData<K>);
        impl<'de, K: KeySet> Visitor<'de> for V<K> {
            type Value = PickedKeys<K>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = PickedKeys::<K>::default();
                while let Some(index) = map.next_key_seed(KeyIndex(K::KEYS))? {
                    match index {
                        Some(i) => out.values[i] = map.next_value::<LenientStr>()?.0,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq).map(|()| PickedKeys::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(PickedKeys::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(PickedKeys::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(PickedKeys::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(PickedKeys::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(PickedKeys::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(PickedKeys::default())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(PickedKeys::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys;
    impl KeySet for Keys {
        const KEYS: &'static [&'static str] = &["a", "b"];
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Doc {
        s: LenientStr,
        n: LenientU32,
        b: LenientBool,
        m: PickedKeys<Keys>,
        o: LenientObject<Inner>,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        x: LenientStr,
    }

    fn doc(json: &str) -> Doc {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let d = doc(r#"{"s": 5, "n": "7", "b": "true", "m": [1, {"a": 2}], "o": "x"}"#);
        assert_eq!((d.s.0, d.n.0, d.b.0, d.o.0), (None, None, None, None));
        assert_eq!(d.m.values, vec![None, None]);
        let d = doc(r#"{"s": {"deep": [[[]]]}, "n": -1, "m": {"a": 1, "b": null}, "o": null}"#);
        assert_eq!((d.s.0, d.n.0), (None, None));
        assert_eq!(d.m.values, vec![None, None]);
        assert_eq!(doc(r#"{"n": 4294967296}"#).n.0, None);
        assert_eq!(doc(r#"{"n": 1.5}"#).n.0, None);
    }

    #[test]
    fn right_types_are_kept() {
        let d = doc(
            r#"{"s": "v\u00e9", "n": 4294967295, "b": false, "m": {"z": [1], "b": "2", "a": "1", "a": "3"}, "o": {"x": "y", "q": 1}}"#,
        );
        assert_eq!(d.s.0.as_deref(), Some("vé"));
        assert_eq!(d.n.0, Some(u32::MAX));
        assert_eq!(d.b.0, Some(false));
        // Duplicate keys: the last wins, as in Go.
        assert_eq!(d.m.get("a"), Some("3"));
        assert_eq!(d.m.get("b"), Some("2"));
        assert_eq!(d.m.get("z"), None);
        assert_eq!(
            d.o.0,
            Some(Inner {
                x: LenientStr(Some("y".into()))
            })
        );
    }

    #[test]
    fn deep_nesting_neither_overflows_the_stack_nor_is_kept() {
        // Skipped values are skipped without recursion; values read into
        // these types recurse only as deep as the types do.
        for doc in [
            format!("{{\"s\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)),
            format!(
                "{{\"m\": {{\"z\": {}{}}}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            format!(
                "{{\"o\": {{\"x\": {}1{}}}}}",
                "{\"a\":".repeat(100_000),
                "}".repeat(100_000)
            ),
        ] {
            if let Ok(d) = serde_json::from_str::<Doc>(&doc) {
                assert_eq!(
                    (d.s.0, d.m.values, d.o.0.and_then(|o| o.x.0)),
                    (None, vec![None, None], None)
                );
            }
        }
    }
}

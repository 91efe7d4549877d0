//! The few top-level fields of a JSON line that make its record, read without building the
//! rest: the whole line is still checked as JSON (skipped values are parsed, not kept); only
//! the wanted fields' values are built.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// The names of the fields wanted (`None`: that role is not asked for).
#[derive(Clone, Copy)]
pub struct Wanted<'n> {
    pub key: Option<&'n str>,
    pub hash_key: Option<&'n str>,
    pub data: Option<&'n str>,
}

/// What a line's object holds of the wanted fields. A field given twice is the last one's, as
/// with a parsed `serde_json::Value`.
#[derive(Default, Debug, PartialEq)]
pub struct Picked {
    pub key: Option<Value>,
    pub hash_key: Option<Value>,
    pub data: Option<Value>,
}

/// Reads `line` as a JSON object and picks the wanted fields; `None` when it is not a JSON
/// object (the caller then reads it the general way, for the same outcome and error).
pub fn pick(line: &[u8], wanted: Wanted<'_>) -> Option<Picked> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let picked = wanted.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(picked)
}

impl<'de> DeserializeSeed<'de> for Wanted<'_> {
    type Value = Picked;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Picked, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Picked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked, A::Error> {
        let mut picked = Picked::default();
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            let name = &*name;
            let roles = [
                (self.key, &mut picked.key),
                (self.hash_key, &mut picked.hash_key),
                (self.data, &mut picked.data),
            ];
            let mut left = roles.iter().filter(|(w, _)| *w == Some(name)).count();
            if left > 0 {
                let mut value = Some(map.next_value::<Value>()?);
                for (w, slot) in roles {
                    if w == Some(name) {
                        left -= 1;
                        // Cloned only for a field that plays two roles.
                        *slot = if left == 0 {
                            value.take()
                        } else {
                            value.clone()
                        };
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(picked)
    }
}

/// A field name, borrowed from the line unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Wanted<'static> = Wanted {
        key: Some("user"),
        hash_key: Some("h"),
        data: Some("msg"),
    };

    #[test]
    fn fields_are_picked_whole_and_the_rest_skipped() {
        let line =
            br#"{"skip":{"deep":[1,2,{"user":"no"}]},"user":"u\u00e9","h":42,"msg":{"a": 1}}"#;
        let p = pick(line, ALL).unwrap();
        assert_eq!(p.key, Some(Value::from("u\u{e9}")));
        assert_eq!(p.hash_key, Some(Value::from(42)));
        assert_eq!(p.data, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn the_last_of_a_repeated_field_wins_and_escaped_names_match() {
        let p = pick(br#"{"user":"a","us\u0065r":"b"}"#, ALL).unwrap();
        assert_eq!(p.key, Some(Value::from("b")));
        let both = Wanted {
            key: Some("user"),
            hash_key: None,
            data: Some("user"),
        };
        let p = pick(br#"{"user":"u1"}"#, both).unwrap();
        assert_eq!(
            (p.key, p.hash_key, p.data),
            (Some("u1".into()), None, Some("u1".into()))
        );
    }

    #[test]
    fn anything_but_one_whole_json_object_is_left_to_the_general_reader() {
        for line in [
            &b"[1,2]"[..],
            b"3",
            b"not json",
            br#"{"user":"u1"} trailing"#,
            br#"{"user":"#,
        ] {
            assert!(
                pick(line, ALL).is_none(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

//! Turning a raw record into the text fields a mode needs, or a reason it cannot be used.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::input::{FieldValue, Payload};

/// Why a record was not used. Named in reports as `as_str()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    InvalidJson,
    NotAnObject,
    MissingField,
    NonStringField,
    InvalidUtf8,
    EmptyDocument,
    BlankLine,
    PromptTooLong,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidJson => "invalid_json",
            SkipReason::NotAnObject => "not_an_object",
            SkipReason::MissingField => "missing_field",
            SkipReason::NonStringField => "non_string_field",
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::EmptyDocument => "empty_document",
            SkipReason::BlankLine => "blank_line",
            SkipReason::PromptTooLong => "prompt_too_long",
        }
    }

    /// Reasons that are facts about the data rather than errors: always counted, never fatal.
    pub fn is_benign(self) -> bool {
        matches!(self, SkipReason::EmptyDocument | SkipReason::BlankLine)
    }
}

pub enum Extracted {
    Fields(Vec<String>),
    Rejected(SkipReason, String),
}

/// Pull `fields` (all must be strings) out of a record.
pub fn extract(payload: Payload, fields: &[String]) -> Extracted {
    match payload {
        Payload::Text(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Extracted::Fields(vec![s]),
            Err(e) => Extracted::Rejected(
                SkipReason::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
            ),
        },
        Payload::Json(line) => {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Extracted::Rejected(SkipReason::BlankLine, "blank line".into());
            }
            if let Err(e) = std::str::from_utf8(&line) {
                return Extracted::Rejected(
                    SkipReason::InvalidUtf8,
                    format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                );
            }
            let wanted = match parse_fields(&line, fields) {
                Ok(Some(w)) => w,
                Ok(None) => {
                    return Extracted::Rejected(
                        SkipReason::NotAnObject,
                        "JSON value is not an object".into(),
                    )
                }
                Err(e) => {
                    return Extracted::Rejected(
                        SkipReason::InvalidJson,
                        format!("invalid JSON: {e}"),
                    )
                }
            };
            let mut out = Vec::with_capacity(fields.len());
            for (f, v) in fields.iter().zip(wanted) {
                match v {
                    None => {
                        return Extracted::Rejected(
                            SkipReason::MissingField,
                            format!("field '{f}' is missing"),
                        )
                    }
                    Some(Value::String(s)) => out.push(s),
                    Some(v) => {
                        return Extracted::Rejected(
                            SkipReason::NonStringField,
                            format!("field '{f}' is {}, not a string", json_kind(&v)),
                        )
                    }
                }
            }
            Extracted::Fields(out)
        }
        Payload::Fields(values) => {
            let mut out = Vec::with_capacity(fields.len());
            for (f, v) in fields.iter().zip(values) {
                match v {
                    None => {
                        return Extracted::Rejected(
                            SkipReason::MissingField,
                            format!("field '{f}' is null"),
                        )
                    }
                    Some(FieldValue::Str(s)) => out.push(s),
                    Some(FieldValue::Bytes(b)) => match String::from_utf8(b) {
                        Ok(s) => out.push(s),
                        Err(e) => {
                            return Extracted::Rejected(
                                SkipReason::InvalidUtf8,
                                format!(
                                    "field '{f}': invalid UTF-8 at byte {}",
                                    e.utf8_error().valid_up_to()
                                ),
                            )
                        }
                    },
                    Some(FieldValue::Other(kind)) => {
                        return Extracted::Rejected(
                            SkipReason::NonStringField,
                            format!("field '{f}' is a {kind}, not a string"),
                        )
                    }
                }
            }
            Extracted::Fields(out)
        }
    }
}

/// The values of `fields` in one JSON document (`None`: it is not an object), parsed without
/// building the other fields (skipped, but still validated). A repeated key keeps its last
/// value, as `serde_json::Value` does.
fn parse_fields(line: &[u8], fields: &[String]) -> serde_json::Result<Option<Vec<Option<Value>>>> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let wanted = de.deserialize_any(Wanted(fields))?;
    de.end()?;
    Ok(wanted)
}

struct Wanted<'f>(&'f [String]);

/// A key: the index of the wanted field it names, if any.
struct Key<'f>(&'f [String]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|f| f == key))
    }
}

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Option<Vec<Option<Value>>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![None; self.0.len()];
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            match key {
                Some(i) => out[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &[u8]) -> SkipReason {
        match extract(Payload::Json(line.to_vec()), &["text".into()]) {
            Extracted::Rejected(r, _) => r,
            Extracted::Fields(_) => panic!("accepted {line:?}"),
        }
    }

    #[test]
    fn classifies_bad_json_records() {
        assert_eq!(reason(b"{\"text\": "), SkipReason::InvalidJson);
        assert_eq!(reason(b"[1]"), SkipReason::NotAnObject);
        assert_eq!(reason(b"{\"x\": 1}"), SkipReason::MissingField);
        assert_eq!(reason(b"{\"text\": 3}"), SkipReason::NonStringField);
        assert_eq!(reason(b"{\"text\": \"\xff\"}"), SkipReason::InvalidUtf8);
        assert_eq!(reason(b"  "), SkipReason::BlankLine);
        assert_eq!(reason(b"\"text\""), SkipReason::NotAnObject);
        assert_eq!(reason(b"null"), SkipReason::NotAnObject);
        assert_eq!(reason(b"{\"text\": \"a\"} x"), SkipReason::InvalidJson);
        assert_eq!(
            reason(b"{\"meta\": {\"a\": [1, }, \"text\": \"a\"}"),
            SkipReason::InvalidJson
        );
        assert_eq!(
            reason(b"{\"text\": \"a\", \"text\": null}"),
            SkipReason::NonStringField
        );
        match extract(
            Payload::Json(br#"{"text": "a\u00e9"}"#.to_vec()),
            &["text".into()],
        ) {
            Extracted::Fields(f) => assert_eq!(f, vec!["a\u{e9}".to_string()]),
            Extracted::Rejected(_, m) => panic!("{m}"),
        }
        // Other fields are skipped whatever they hold; the last of a repeated key counts; an
        // escaped key still names its field.
        let line = br#"{"id": 7, "meta": {"x": [1, {"y": null}]}, "te\u0078t": "b", "text": "c"}"#;
        match extract(Payload::Json(line.to_vec()), &["id".into(), "text".into()]) {
            Extracted::Rejected(r, m) => assert_eq!(
                (r, m.as_str()),
                (
                    SkipReason::NonStringField,
                    "field 'id' is a number, not a string"
                )
            ),
            Extracted::Fields(f) => panic!("accepted {f:?}"),
        }
        match extract(Payload::Json(line.to_vec()), &["text".into()]) {
            Extracted::Fields(f) => assert_eq!(f, vec!["c".to_string()]),
            Extracted::Rejected(_, m) => panic!("{m}"),
        }
    }
}

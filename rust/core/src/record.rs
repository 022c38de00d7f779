//! Turning a raw record into the text fields a mode needs, or a reason it cannot be used.

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
            let obj = match serde_json::from_slice::<Value>(&line) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
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
            for f in fields {
                match obj.get(f) {
                    None => {
                        return Extracted::Rejected(
                            SkipReason::MissingField,
                            format!("field '{f}' is missing"),
                        )
                    }
                    Some(Value::String(s)) => out.push(s.clone()),
                    Some(v) => {
                        return Extracted::Rejected(
                            SkipReason::NonStringField,
                            format!("field '{f}' is {}, not a string", json_kind(v)),
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
        match extract(
            Payload::Json(br#"{"text": "a\u00e9"}"#.to_vec()),
            &["text".into()],
        ) {
            Extracted::Fields(f) => assert_eq!(f, vec!["a\u{e9}".to_string()]),
            Extracted::Rejected(_, m) => panic!("{m}"),
        }
    }
}

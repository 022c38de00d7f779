//! Enums written as their names: in `midmix.json` and in the options Python hands over. Each is
//! serialized with its `Display` and parsed with its `FromStr`, the one parser, so every message about
//! a bad value is the same wherever the value came from.

/// Serialize, Deserialize and JsonSchema (a string) for a type with `Display` and
/// `FromStr<Err = crate::Error>`.
macro_rules! by_name {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse()
                    .map_err(|e: crate::Error| serde::de::Error::custom(e.to_string()))
            }
        }

        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string"})
            }
        }
    };
}

pub(crate) use by_name;

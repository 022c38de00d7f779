//! The vocabulary facts read from tokenizer.json (its added tokens, the vocabulary size) and the
//! special tokens resolved from them (`--eos`/`--bos`, the default end-of-text token).

use serde_json::Value;

use super::Encoder;
use crate::error::{Error, Result};

/// An entry of tokenizer.json's `added_tokens`.
pub(super) struct AddedToken {
    pub(super) content: String,
    pub(super) id: u32,
    /// The id a match of it gives: HF's (see `Encoder::from_bytes`), not always the file's.
    pub(super) matched_id: u32,
    pub(super) special: bool,
    pub(super) normalized: bool,
    pub(super) lstrip: bool,
    pub(super) rstrip: bool,
    pub(super) single_word: bool,
}

/// Special tokens that end a document, in the order they are looked for.
const EOS_NAMES: &[&str] = &[
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "<|eos|>",
    "<|im_end|>",
];

impl Encoder {
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.hf.token_to_id(token)
    }

    /// The end-of-text token: the first special added token with a conventional EOS name.
    pub fn default_eos(&self) -> Option<(String, u32)> {
        EOS_NAMES.iter().find_map(|name| {
            self.added
                .iter()
                .find(|t| t.special && t.content == *name)
                .map(|t| (t.content.clone(), t.matched_id))
        })
    }

    /// Resolve `--eos`/`--bos`.
    ///
    /// - A spec made only of ASCII digits is an id, which must be below the vocabulary size
    ///   (`--eos 0` is id 0, never the token spelled "0").
    /// - `token:TEXT` is the token spelled TEXT, for tokens whose text is all digits
    ///   (`token:0` is the digit token "0").
    /// - Anything else is a token string of the vocabulary.
    pub fn resolve_token(&self, spec: &str) -> Result<u32> {
        if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
            // Digits only: an id. Too many digits for u64 is out of range all the same.
            return match spec.parse::<u64>() {
                Ok(id) if id < self.vocab_size => Ok(id as u32),
                _ => Err(Error::Config(format!(
                    "token id {spec} is not below the vocabulary size {} of {} (write token:{spec} for the token spelled '{spec}')",
                    self.vocab_size,
                    self.path.display()
                ))),
            };
        }
        let text = spec.strip_prefix("token:").unwrap_or(spec);
        self.token_to_id(text).ok_or_else(|| {
            Error::Config(format!(
                "'{text}' is neither a token of {} nor an id (digits only, below its vocabulary size {})",
                self.path.display(),
                self.vocab_size
            ))
        })
    }
}

/// (the model vocabulary's largest id + 1, the added tokens as the file lists them) from a
/// tokenizer.json. The ids a match gives are HF's, set by `Encoder::from_bytes`.
pub(super) fn vocab_facts(json: &Value) -> Option<(u64, Vec<AddedToken>)> {
    let model_max = match &json["model"]["vocab"] {
        Value::Object(m) => m.values().filter_map(Value::as_u64).max().map(|m| m + 1),
        Value::Array(a) => Some(a.len() as u64),
        _ => None,
    }?;
    let added: Vec<AddedToken> = json["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    let flag = |name: &str, default: bool| t[name].as_bool().unwrap_or(default);
                    let special = flag("special", false);
                    let content = t["content"].as_str()?;
                    let id = t["id"].as_u64()? as u32;
                    Some(AddedToken {
                        content: content.to_string(),
                        id,
                        matched_id: id,
                        special,
                        // HF's default: special tokens are matched on the raw text.
                        normalized: flag("normalized", !special),
                        lstrip: flag("lstrip", false),
                        rstrip: flag("rstrip", false),
                        single_word: flag("single_word", false),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some((model_max, added))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::pythia;

    #[test]
    fn numeric_eos_is_an_id_not_a_digit_token() {
        let enc = pythia();
        assert_eq!(enc.resolve_token("0").unwrap(), 0);
        assert_eq!(enc.resolve_token("1").unwrap(), 1);
        assert_eq!(enc.resolve_token("token:0").unwrap(), 17);
        assert_eq!(enc.resolve_token("<|endoftext|>").unwrap(), 0);
        let e = enc.resolve_token("99999999").unwrap_err().to_string();
        assert!(e.contains("token id 99999999"), "{e}");
        assert!(e.contains(&enc.vocab_size.to_string()), "{e}");
        // Beyond u64 is still an out-of-range id, not a token lookup.
        assert!(enc.resolve_token("99999999999999999999999").is_err());
        assert!(enc.resolve_token("token:no-such-token-xyz").is_err());
    }
}

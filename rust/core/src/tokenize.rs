//! Exact tokenization of a Hugging Face `tokenizer.json`.
//!
//! Ids must equal `tokenizers.Tokenizer.from_file(p).encode(text, add_special_tokens=False).ids`.
//! The fast path is the `fastokens` crate (ids identical to HF on the whole shared test corpus,
//! ~35x its speed); any tokenizer.json it cannot load goes to the HF `tokenizers` crate itself.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Which encoder to use. `Auto` takes the fast one whenever it accepts the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderChoice {
    Auto,
    Fast,
    Hf,
}

impl EncoderChoice {
    pub fn parse(s: &str) -> Result<EncoderChoice> {
        s.parse()
    }
}

impl std::str::FromStr for EncoderChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<EncoderChoice> {
        match s {
            "auto" => Ok(EncoderChoice::Auto),
            "fast" | "fastokens" => Ok(EncoderChoice::Fast),
            "hf" | "tokenizers" => Ok(EncoderChoice::Hf),
            _ => Err(Error::Config(format!(
                "unknown encoder '{s}': use auto, fast or hf"
            ))),
        }
    }
}

enum Backend {
    Fast(Box<fastokens::Tokenizer>),
    Hf(Box<tokenizers::Tokenizer>),
}

pub struct Encoder {
    backend: Backend,
    path: PathBuf,
    /// sha256 of the tokenizer.json bytes.
    pub fingerprint: String,
    /// Largest id + 1 over the model vocabulary and the added tokens.
    pub vocab_size: u64,
    /// Why the fast path was not taken, when it was not.
    pub fallback_reason: Option<String>,
    added: Vec<AddedToken>,
}

/// An entry of tokenizer.json's `added_tokens`.
struct AddedToken {
    content: String,
    id: u32,
    special: bool,
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
    pub fn from_file(path: &Path, choice: EncoderChoice) -> Result<Encoder> {
        let terr = |msg: String| Error::Tokenizer {
            path: path.display().to_string(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(|e| terr(format!("cannot read: {e}")))?;
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| terr(format!("not a valid tokenizer.json: {e}")))?;
        let fingerprint = hex::encode(Sha256::digest(&bytes));
        let (vocab_size, added) =
            vocab_facts(&json).ok_or_else(|| terr("has no model vocabulary".into()))?;

        // Truncation and padding configured in the tokenizer.json are switched off in both
        // encoders: a data pipeline must never cut or pad documents.
        let hf = || -> Result<tokenizers::Tokenizer> {
            let mut t = tokenizers::Tokenizer::from_bytes(&bytes)
                .map_err(|e| terr(format!("cannot load: {e}")))?;
            t.with_truncation(None)
                .map_err(|e| terr(format!("cannot disable truncation: {e}")))?;
            t.with_padding(None);
            Ok(t)
        };
        let fast = |json: Value| -> std::result::Result<fastokens::Tokenizer, fastokens::Error> {
            let mut t = fastokens::Tokenizer::from_json(json)?;
            t.set_truncation(None);
            t.set_padding(None);
            Ok(t)
        };
        let (backend, fallback_reason) = match choice {
            EncoderChoice::Hf => (
                Backend::Hf(Box::new(hf()?)),
                Some("--encoder hf".to_string()),
            ),
            EncoderChoice::Fast => match fast(json.clone()) {
                Ok(t) => (Backend::Fast(Box::new(t)), None),
                Err(e) => return Err(terr(format!("the fast encoder does not support it: {e}"))),
            },
            EncoderChoice::Auto => match fast(json.clone()) {
                Ok(t) => (Backend::Fast(Box::new(t)), None),
                Err(e) => (
                    Backend::Hf(Box::new(hf()?)),
                    Some(format!("fast encoder unsupported: {e}")),
                ),
            },
        };
        Ok(Encoder {
            backend,
            path: path.to_path_buf(),
            fingerprint,
            vocab_size,
            fallback_reason,
            added,
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Fast(_) => "fastokens",
            Backend::Hf(_) => "hf-tokenizers",
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids of `text` without post-processor special tokens (added tokens in the text still match).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.backend {
            Backend::Fast(t) => {
                t.encode_with_special_tokens(text, false)
                    .map_err(|e| Error::Tokenizer {
                        path: self.path.display().to_string(),
                        msg: format!("encoding failed: {e}"),
                    })
            }
            Backend::Hf(t) => t
                .encode_fast(text, false)
                .map(|enc| enc.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer {
                    path: self.path.display().to_string(),
                    msg: format!("encoding failed: {e}"),
                }),
        }
    }

    /// Ids of each text. The fast encoder spreads the batch (and long texts) over its own worker
    /// threads (`FASTOKENS_BPE_THREADS`); the HF encoder over the current rayon pool.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        match &self.backend {
            Backend::Fast(t) => t
                .encode_batch_unpadded::<Vec<u32>, &str>(
                    texts,
                    false,
                    fastokens::AddedTokenPolicy::All,
                )
                .map_err(|e| Error::Tokenizer {
                    path: self.path.display().to_string(),
                    msg: format!("encoding failed: {e}"),
                }),
            Backend::Hf(_) => {
                use rayon::prelude::*;
                texts.par_iter().map(|t| self.encode(t)).collect()
            }
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let r = match &self.backend {
            Backend::Fast(t) => t
                .decode(ids, skip_special_tokens)
                .map_err(|e| e.to_string()),
            Backend::Hf(t) => t
                .decode(ids, skip_special_tokens)
                .map_err(|e| e.to_string()),
        };
        r.map_err(|msg| Error::Tokenizer {
            path: self.path.display().to_string(),
            msg: format!("decoding failed: {msg}"),
        })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Fast(t) => t.token_to_id(token),
            Backend::Hf(t) => t.token_to_id(token),
        }
    }

    /// The end-of-text token: the first special added token with a conventional EOS name.
    pub fn default_eos(&self) -> Option<(String, u32)> {
        EOS_NAMES.iter().find_map(|name| {
            self.added
                .iter()
                .find(|t| t.special && t.content == *name)
                .map(|t| (t.content.clone(), t.id))
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

/// (largest id + 1, added tokens as (content, id, special)) from a tokenizer.json.
fn vocab_facts(json: &Value) -> Option<(u64, Vec<AddedToken>)> {
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
                    Some(AddedToken {
                        content: t["content"].as_str()?.to_string(),
                        id: t["id"].as_u64()? as u32,
                        special: t["special"].as_bool().unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let added_max = added.iter().map(|t| t.id as u64 + 1).max().unwrap_or(0);
    Some((model_max.max(added_max), added))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pythia() -> Encoder {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json");
        Encoder::from_file(&p, EncoderChoice::Auto).unwrap()
    }

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

//! Exact tokenization of a Hugging Face `tokenizer.json`.
//!
//! Ids must equal `tokenizers.Tokenizer.from_file(p).encode(text, add_special_tokens=False).ids`.
//! The fast path is the `fastokens` crate (ids identical to HF on the whole shared test corpus,
//! ~35x its speed); any tokenizer.json it cannot load goes to the HF `tokenizers` crate itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Which encoder to use. `Auto` takes the fast one whenever it accepts the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Texts that contain none of these byte strings cannot contain an added token, and skip the
    /// fast encoder's added-token matcher (see `AddedPrefilter`).
    prefilter: Option<AddedPrefilter>,
}

/// The first two bytes of every added token (the whole token when shorter), when those are few.
///
/// Every match of an added token contains its first two bytes, in the raw text, as long as the
/// normalizer cannot produce them from other bytes: true without a normalizer, and for NFC unless
/// the bytes include one of the three ASCII characters a canonical singleton maps to (U+037E → ';',
/// U+1FEF → '`', U+212A → 'K'). Pythia's 25 added tokens give two needles, "  " and "<|"; prose
/// rarely contains either, and the matcher (a quarter of the encoder's time there) is skipped.
struct AddedPrefilter {
    needles: Vec<memchr::memmem::Finder<'static>>,
}

/// More needles than this and the prescan stops paying for itself.
const MAX_NEEDLES: usize = 4;

impl AddedPrefilter {
    fn new(json: &Value, added: &[AddedToken]) -> Option<AddedPrefilter> {
        let nfc_safe = |n: &[u8]| !n.iter().any(|b| matches!(b, b';' | b'`' | b'K'));
        let normalizer = &json["normalizer"];
        let normalizer_ok = match normalizer {
            Value::Null => true,
            _ => normalizer["type"].as_str() == Some("NFC"),
        };
        if !normalizer_ok {
            return None;
        }
        let mut needles: Vec<Vec<u8>> = added
            .iter()
            .map(|t| t.content.as_bytes()[..t.content.len().min(2)].to_vec())
            .collect();
        needles.sort();
        needles.dedup();
        let nfc = !normalizer.is_null();
        if needles.is_empty()
            || needles.len() > MAX_NEEDLES
            || needles
                .iter()
                .any(|n| n.is_empty() || (nfc && !nfc_safe(n)))
        {
            return None;
        }
        Some(AddedPrefilter {
            needles: needles
                .iter()
                .map(|n| memchr::memmem::Finder::new(n).into_owned())
                .collect(),
        })
    }

    /// Whether `text` may contain an added token.
    fn may_match(&self, text: &str) -> bool {
        self.needles
            .iter()
            .any(|f| f.find(text.as_bytes()).is_some())
    }
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

/// Encoders loaded in this process, by path, file contents and choice: building one costs ~0.5 s
/// (Pythia), which a grid of small prepares would otherwise pay each time.
type Loaded = Mutex<HashMap<(PathBuf, String, EncoderChoice), Arc<Encoder>>>;
static LOADED: OnceLock<Loaded> = OnceLock::new();

impl Encoder {
    /// The encoder of `path`, built once per process for the same file contents (a changed file
    /// is loaded again: the cache key holds its sha256).
    pub fn shared(path: &Path, choice: EncoderChoice) -> Result<Arc<Encoder>> {
        let bytes = read_tokenizer(path)?;
        let key = (
            path.to_path_buf(),
            hex::encode(Sha256::digest(&bytes)),
            choice,
        );
        let cache = LOADED.get_or_init(Default::default);
        if let Some(enc) = cache.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(enc);
        }
        let enc = Arc::new(Encoder::from_bytes(path, &bytes, choice)?);
        if let Ok(mut m) = cache.lock() {
            m.insert(key, enc.clone());
        }
        Ok(enc)
    }

    pub fn from_file(path: &Path, choice: EncoderChoice) -> Result<Encoder> {
        Encoder::from_bytes(path, &read_tokenizer(path)?, choice)
    }

    fn from_bytes(path: &Path, bytes: &[u8], choice: EncoderChoice) -> Result<Encoder> {
        let terr = |msg: String| Error::Tokenizer {
            path: path.display().to_string(),
            msg,
        };
        let json: Value = serde_json::from_slice(bytes)
            .map_err(|e| terr(format!("not a valid tokenizer.json: {e}")))?;
        let fingerprint = hex::encode(Sha256::digest(bytes));
        let (vocab_size, added) =
            vocab_facts(&json).ok_or_else(|| terr("has no model vocabulary".into()))?;
        let prefilter = AddedPrefilter::new(&json, &added);

        // Truncation and padding configured in the tokenizer.json are switched off in both
        // encoders: a data pipeline must never cut or pad documents.
        let hf = || -> Result<tokenizers::Tokenizer> {
            let mut t = tokenizers::Tokenizer::from_bytes(bytes)
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
            prefilter,
        })
    }

    /// The fast encoder's policy for `text`: no added-token matching where none can occur.
    fn policy(&self, text: &str) -> fastokens::AddedTokenPolicy {
        match &self.prefilter {
            Some(p) if !p.may_match(text) => fastokens::AddedTokenPolicy::None,
            _ => fastokens::AddedTokenPolicy::All,
        }
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
                let mut ids = t
                    .encode_batch_unpadded::<Vec<u32>, &str>(&[text], false, self.policy(text))
                    .map_err(|e| self.encode_error(e))?;
                Ok(ids.pop().unwrap_or_default())
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
            Backend::Fast(t) => {
                // Two calls, one per policy, then the ids back in the texts' order.
                let (plain, matched): (Vec<usize>, Vec<usize>) = (0..texts.len())
                    .partition(|&i| self.policy(texts[i]) == fastokens::AddedTokenPolicy::None);
                let mut out: Vec<Vec<u32>> = vec![Vec::new(); texts.len()];
                for (which, policy) in [
                    (plain, fastokens::AddedTokenPolicy::None),
                    (matched, fastokens::AddedTokenPolicy::All),
                ] {
                    if which.is_empty() {
                        continue;
                    }
                    let batch: Vec<&str> = which.iter().map(|&i| texts[i]).collect();
                    let ids = t
                        .encode_batch_unpadded::<Vec<u32>, &str>(&batch, false, policy)
                        .map_err(|e| self.encode_error(e))?;
                    for (i, ids) in which.into_iter().zip(ids) {
                        out[i] = ids;
                    }
                }
                Ok(out)
            }
            Backend::Hf(_) => {
                use rayon::prelude::*;
                texts.par_iter().map(|t| self.encode(t)).collect()
            }
        }
    }

    fn encode_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer {
            path: self.path.display().to_string(),
            msg: format!("encoding failed: {e}"),
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

fn read_tokenizer(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Tokenizer {
        path: path.display().to_string(),
        msg: format!("cannot read: {e}"),
    })
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
    fn skipping_the_added_token_matcher_keeps_the_ids() {
        let fast = pythia();
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json");
        let hf = Encoder::from_file(&p, EncoderChoice::Hf).unwrap();
        let needles = fast.prefilter.as_ref().map(|f| f.needles.len());
        assert_eq!(
            needles,
            Some(2),
            "Pythia's added tokens start with \"  \" or \"<|\""
        );
        let texts = [
            "Plain prose, one space between words.",
            "def f():\n    return 1  # indented code: runs of spaces are added tokens",
            "a<|endoftext|>b<|padding|>c <|endoftext|> d",
            "<|endoftext|>",
            "<|endoftext",
            "<| not a token |>",
            "x                                 y (33 spaces)",
            " ",
            "  ",
            "",
            "caf\u{e9} \u{37e} Kelvin \u{212a} na\u{ef}ve  double",
        ];
        for t in texts {
            assert_eq!(fast.encode(t).unwrap(), hf.encode(t).unwrap(), "{t:?}");
        }
        let plain = fast.policy(texts[0]);
        assert_eq!(plain, fastokens::AddedTokenPolicy::None);
        assert_eq!(fast.policy(texts[1]), fastokens::AddedTokenPolicy::All);
        assert_eq!(fast.policy(texts[2]), fastokens::AddedTokenPolicy::All);
        // A batch mixing both kinds comes back in its own order.
        let batch: Vec<&str> = texts.to_vec();
        let want: Vec<Vec<u32>> = texts.iter().map(|t| hf.encode(t).unwrap()).collect();
        assert_eq!(fast.encode_batch(&batch).unwrap(), want);
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

//! Loading a tokenizer.json into HF's encoder and, where it accepts it, the fast one; encoding
//! and decoding with them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::split::{AddedSplit, Piece};
use super::vocab::vocab_facts;
use super::{Encoder, EncoderChoice};
use crate::error::{Error, Result};

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

        // Truncation and padding configured in the tokenizer.json are switched off in both
        // encoders: a data pipeline must never cut or pad documents.
        let mut hf = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| terr(format!("cannot load: {e}")))?;
        hf.with_truncation(None)
            .map_err(|e| terr(format!("cannot disable truncation: {e}")))?;
        hf.with_padding(None);
        let (model_size, mut added) =
            vocab_facts(&json).ok_or_else(|| terr("has no model vocabulary".into()))?;
        // HF does not take an added token's id from the file: one that is also a vocabulary entry
        // gets the entry's id, any other the next id after the vocabulary and the tokens before it
        // (ids that skip or fall inside the vocabulary are renumbered). Its ids are the ones used.
        added.retain_mut(|t| match hf.token_to_id(&t.content) {
            Some(id) => {
                t.matched_id = id;
                true
            }
            None => false, // a token HF does not add (empty, or a duplicate): never matched
        });
        let vocab_size = added
            .iter()
            .map(|t| t.matched_id as u64 + 1)
            .fold(model_size, u64::max);
        // The fast encoder's own matcher (used for a text the split below cannot do) takes the ids
        // from the file and does lstrip/rstrip/single_word its own way: trusted only when no
        // token has an id HF changes or one of those flags.
        let mut contents: Vec<&str> = added.iter().map(|t| t.content.as_str()).collect();
        contents.sort_unstable();
        let whole_on_fast = contents.windows(2).all(|w| w[0] != w[1])
            && added
                .iter()
                .all(|t| t.id == t.matched_id && !t.lstrip && !t.rstrip && !t.single_word);
        let split = AddedSplit::new(&json, &added);

        let fast = || -> std::result::Result<fastokens::Tokenizer, fastokens::Error> {
            let mut t = fastokens::Tokenizer::from_json(json.clone())?;
            t.set_truncation(None);
            t.set_padding(None);
            Ok(t)
        };
        let (fast, fallback_reason) = match choice {
            EncoderChoice::Hf => (None, Some("--encoder hf".to_string())),
            EncoderChoice::Fast => match fast() {
                Ok(t) => (Some(Box::new(t)), None),
                Err(e) => return Err(terr(format!("the fast encoder does not support it: {e}"))),
            },
            EncoderChoice::Auto => match fast() {
                Ok(t) => (Some(Box::new(t)), None),
                Err(e) => (None, Some(format!("fast encoder unsupported: {e}"))),
            },
        };
        Ok(Encoder {
            fast,
            hf: Box::new(hf),
            whole_on_fast,
            path: path.to_path_buf(),
            fingerprint,
            vocab_size,
            fallback_reason,
            added,
            split,
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.fast {
            Some(_) => "fastokens",
            None => "hf-tokenizers",
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids of `text` without post-processor special tokens (added tokens in the text still match).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.fast {
            Some(t) => self.unpanicked(|| self.encode_fast(t, text)),
            None => self.encode_hf(text),
        }
    }

    fn encode_hf(&self, text: &str) -> Result<Vec<u32>> {
        self.unpanicked(|| {
            self.hf
                .encode_fast(text, false)
                .map(|enc| enc.get_ids().to_vec())
                .map_err(|e| self.encode_error(e))
        })
    }

    /// `f`, with a panic inside an encoder (tokenizers 0.22 panics on a `Strip` normalizer with
    /// non-ASCII text, as the Python package does) turned into an error naming the tokenizer.
    fn unpanicked(&self, f: impl FnOnce() -> Result<Vec<u32>>) -> Result<Vec<u32>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(self.encode_error(format!("the encoder panicked ({msg})")))
        })
    }

    /// Ids of each text. The fast encoder spreads the batch over its own worker threads
    /// (`FASTOKENS_BPE_THREADS`), a text per task; the HF encoder over the current rayon pool.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        match &self.fast {
            Some(t) => fastokens::fanout::map(texts.len(), |i| {
                self.unpanicked(|| self.encode_fast(t, texts[i]))
            })
            .into_iter()
            .collect(),
            None => {
                use rayon::prelude::*;
                texts.par_iter().map(|t| self.encode_hf(t)).collect()
            }
        }
    }

    /// One text on the fast encoder: its pieces encoded in order on this thread, the matched
    /// added tokens' ids spliced in between. A piece the split could not do goes to the fast
    /// encoder's own matcher where that gives HF's ids, otherwise to HF.
    fn encode_fast(&self, t: &fastokens::Tokenizer, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = Vec::new();
        let mut failure = None;
        self.pieces(text, &mut |piece| {
            let encoded = match piece {
                _ if failure.is_some() => return,
                Piece::Token(id) => return ids.push(id),
                Piece::Plain(p) => t
                    .encode_unpadded::<Vec<u32>>(p, false, fastokens::AddedTokenPolicy::None)
                    .map_err(|e| self.encode_error(e)),
                Piece::Whole(w) if self.whole_on_fast => t
                    .encode_unpadded::<Vec<u32>>(w, false, fastokens::AddedTokenPolicy::All)
                    .map_err(|e| self.encode_error(e)),
                Piece::Whole(w) => self.encode_hf(w),
            };
            match encoded {
                Ok(piece_ids) if ids.is_empty() => ids = piece_ids,
                Ok(piece_ids) => ids.extend_from_slice(&piece_ids),
                Err(e) => failure = Some(e),
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }

    fn encode_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer {
            path: self.path.display().to_string(),
            msg: format!("encoding failed: {e}"),
        }
    }

    /// Text of `ids`, by HF (the fast encoder numbers added tokens as the file does).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.hf
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: self.path.display().to_string(),
                msg: format!("decoding failed: {e}"),
            })
    }
}

fn read_tokenizer(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Tokenizer {
        path: path.display().to_string(),
        msg: format!("cannot read: {e}"),
    })
}

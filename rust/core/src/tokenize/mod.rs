//! Exact tokenization of a Hugging Face `tokenizer.json`.
//!
//! Ids must equal `tokenizers.Tokenizer.from_file(p).encode(text, add_special_tokens=False).ids`.
//! The HF `tokenizers` crate (the version of the Python package transformers pins: a Unigram tie
//! is broken differently across versions) is always loaded: it is the authority on the added
//! tokens' ids, the vocabulary size, decoding, and any text the fast path cannot prove it does
//! like HF. The fast path is the `fastokens` crate (ids identical to HF on the whole shared test
//! corpus, ~35x its speed), used for the text between added tokens; a tokenizer.json it cannot
//! load is encoded by HF throughout.
//!
//! `backend` loads the two encoders and encodes with them, `split` is the added-token split done
//! before the fast encoder, `vocab` the added tokens, the vocabulary size and `--eos`/`--bos`.

mod backend;
mod split;
mod vocab;

use std::path::PathBuf;

use crate::error::{Error, Result};

use split::AddedSplit;
use vocab::AddedToken;

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

impl std::fmt::Display for EncoderChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncoderChoice::Auto => "auto",
            EncoderChoice::Fast => "fast",
            EncoderChoice::Hf => "hf",
        })
    }
}

crate::named::by_name!(EncoderChoice);

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

pub struct Encoder {
    /// The fast encoder, when it loads the tokenizer.json and was not declined.
    fast: Option<Box<fastokens::Tokenizer>>,
    /// HF's own encoder: the ids of record.
    hf: Box<tokenizers::Tokenizer>,
    /// Whether the fast encoder's own added-token matcher gives HF's ids (see `Encoder::new`).
    whole_on_fast: bool,
    path: PathBuf,
    /// sha256 of the tokenizer.json bytes.
    pub fingerprint: String,
    /// Largest id + 1 over the model vocabulary and the added tokens.
    pub vocab_size: u64,
    /// Why the fast path was not taken, when it was not.
    pub fallback_reason: Option<String>,
    added: Vec<AddedToken>,
    /// The added-token split done before the fast encoder, which then skips its own matcher.
    split: Option<AddedSplit>,
}

#[cfg(test)]
mod fixtures {
    use std::path::{Path, PathBuf};

    use super::{Encoder, EncoderChoice};

    pub(super) fn pythia() -> Encoder {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json");
        Encoder::from_file(&p, EncoderChoice::Auto).unwrap()
    }

    pub(super) fn pythia_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json")
    }
}

//! `midmix.json`: what a prepared dataset is and how it was made. Read back by `merge`,
//! `inspect` and later stages (`build-mix` checks tokenizer fingerprints and seq_len).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const REPORT_FILE: &str = "midmix.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenizerInfo {
    pub path: String,
    pub sha256: String,
    pub vocab_size: u64,
    pub encoder: String,
    #[serde(default)]
    pub fallback_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SftInfo {
    pub prompt_field: String,
    pub response_field: String,
    pub mask_prompt: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Records turned into tokens.
    pub documents: u64,
    /// Tokens in the written samples.
    pub tokens: u64,
    pub samples: u64,
    /// Tokens produced from documents, BOS/EOS included (before packing or truncation).
    pub document_tokens: u64,
    /// UTF-8 bytes of the tokenized text.
    pub text_bytes: u64,
    /// Bytes of the input files as stored (compressed size for .gz/.zst).
    pub input_bytes: u64,
    /// Bytes of the written shards as stored.
    pub output_bytes: u64,
    /// Pretraining: tokens of the final partial sample, not written.
    pub dropped_tail_tokens: u64,
    /// SFT: samples cut to seq_len, and the tokens cut off.
    pub truncated_samples: u64,
    pub truncated_tokens: u64,
    /// SFT: tokens with a training label (not -100).
    pub label_tokens: u64,
    /// Records not used, by reason.
    pub skipped: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputInfo {
    pub path: String,
    pub format: String,
    pub bytes: u64,
    pub xxh3_128: String,
    pub documents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriterInfo {
    pub compression: Option<String>,
    pub hashes: Vec<String>,
    pub size_limit: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInfo {
    pub index: usize,
    pub count: usize,
    /// The token ids after the last full sample: the next part's stream continues them.
    pub tail: Vec<u32>,
    /// The same for every part of one prepare run: xxh3-128 over the whole input list (names and
    /// sizes, before slicing) and the options that shape the token stream. `merge` refuses parts
    /// whose run ids differ (empty in parts written before it existed).
    #[serde(default)]
    pub run_id: String,
}

/// Facts about the run that differ between identical runs; kept apart from the rest so the rest
/// stays byte-identical.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunInfo {
    pub elapsed_s: f64,
    pub threads: usize,
    pub text_mb_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub midmix_version: String,
    pub kind: String,
    pub name: String,
    pub mode: String,
    pub tokenizer: TokenizerInfo,
    pub seq_len: usize,
    pub eos_id: Option<u32>,
    pub bos_id: Option<u32>,
    pub dtype: String,
    pub columns: BTreeMap<String, String>,
    pub text_field: Option<String>,
    pub sft: Option<SftInfo>,
    pub counts: Counts,
    pub inputs: Vec<InputInfo>,
    pub writer: WriterInfo,
    pub task: Option<TaskInfo>,
    pub run: RunInfo,
}

/// A dataset's `midmix.json` as JSON (prepared datasets and mixes alike), or None when it has none:
/// for the checks that need a few recorded facts, whatever the kind. Returns the file's path too, for
/// errors about its content.
pub fn read_json(dir: &Path) -> Result<Option<(std::path::PathBuf, serde_json::Value)>> {
    let path = dir.join(REPORT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let json = serde_json::from_str(&text)
        .map_err(|e| Error::dataset(&path, format!("not valid JSON: {e}")))?;
    Ok(Some((path, json)))
}

impl Report {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(REPORT_FILE);
        let text =
            serde_json::to_string_pretty(self).map_err(|e| Error::dataset(&path, e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
    }

    pub fn read(dir: &Path) -> Result<Report> {
        let path = dir.join(REPORT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::dataset(&path, format!("not a midmix report: {e}")))
    }
}

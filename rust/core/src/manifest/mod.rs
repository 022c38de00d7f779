//! `midmix.json`: what a midmix output is and how it was made, for every kind: a prepared dataset
//! (`prepare`, `merge`) and a mix in either form (`build-mix`: an index over its sources, or MDS
//! shards; `export`). Its one home: the types, one `read` and one `write` (through `seal`, the hashes
//! that pin the dataset and the file), and the JSON schema the Python mirror (`midmix.manifest`) is
//! checked against.

mod seal;

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
pub use crate::plan::{BlendRule, OnExhaust};
pub use seal::{file_xxh3_128, fingerprint};

pub const MANIFEST_FILE: &str = "midmix.json";
/// An index mix's arrays (`mixindex`): the source and the sample of each position.
pub const SOURCE_FILE: &str = "mix.source.u8";
pub const SAMPLE_FILE: &str = "mix.sample.u32";

/// What an output is: `prepared` (`prepare`, `merge`) or `mix` (`build-mix`, `export`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Prepared,
    Mix,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prepared => "prepared",
            Kind::Mix => "mix",
        }
    }
}

/// How a mix is stored: `index` (positions over its sources, `mixindex`) or `mds` (shards holding
/// the tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    #[default]
    Index,
    Mds,
}

/// What a prepared dataset holds: packed pretraining tokens or SFT examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    #[default]
    Pretrain,
    Sft,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TokenizerInfo {
    pub path: String,
    pub sha256: String,
    pub vocab_size: u64,
    pub encoder: String,
    #[serde(default)]
    pub fallback_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct SftInfo {
    pub prompt_field: String,
    pub response_field: String,
    pub mask_prompt: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
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
    /// Tokens of the documents' own text equal to the EOS or BOS id (which `prepare` also
    /// inserts): while 0, statistics can leave those ids out as inserted ones. None: written by a
    /// midmix that did not count them.
    #[serde(default)]
    pub special_in_text: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct InputInfo {
    pub path: String,
    pub format: String,
    pub bytes: u64,
    pub xxh3_128: String,
    pub documents: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct WriterInfo {
    pub compression: Option<String>,
    pub hashes: Vec<String>,
    pub size_limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunInfo {
    pub elapsed_s: f64,
    pub threads: usize,
    pub text_mb_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PreparedManifest {
    pub midmix_version: String,
    pub kind: Kind,
    pub name: String,
    pub mode: ModeName,
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
    /// Outside the checksum (timings): may be missing.
    #[serde(default)]
    pub run: RunInfo,
    #[serde(flatten)]
    pub seal: Seal,
}

/// The hashes `write_json` seals every manifest with (prepared and mix alike, see below); each None
/// in manifests from before them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Seal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_xxh3_128: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct SourceInfo {
    pub name: String,
    /// Absolute: an index mix reads the source from here.
    pub path: String,
    pub samples: u64,
    pub tokens: u64,
    /// xxh3-128 over the source's `index.json` (which holds its shards' sizes and hashes).
    pub index_xxh3_128: String,
    pub tokenizer_sha256: String,
    /// The source's fingerprint (`fingerprint`), which opening the mix compares; None in
    /// mixes from before it (they compare `index_xxh3_128`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PhaseReport {
    pub start_sample: u64,
    pub end_sample: u64,
    pub ramp: bool,
    /// Normalized weights by source name (the phase's end weights when ramping).
    pub weights: BTreeMap<String, f64>,
    /// The scheduled share of each source over the phase (its average weight when ramping).
    pub planned_share: BTreeMap<String, f64>,
    /// Samples realized per source in this phase.
    pub samples: BTreeMap<String, u64>,
    pub tokens: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct MixManifest {
    pub midmix_version: String,
    pub kind: Kind,
    /// Mixes written before index mixes are MDS.
    #[serde(default = "mds_form")]
    pub form: Form,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexFiles>,
    pub sources: Vec<String>,
    pub source_info: Vec<SourceInfo>,
    pub seed: u64,
    pub seq_len: usize,
    pub dtype: String,
    /// The sources' common tokenizer (as the first source recorded it).
    pub tokenizer: TokenizerInfo,
    pub global_batch: Option<u64>,
    pub exact_per_batch: bool,
    pub on_exhaust: OnExhaust,
    #[serde(default)]
    pub blend_rule: BlendRule,
    pub total_samples: u64,
    pub total_tokens: u64,
    pub phases: Vec<PhaseReport>,
    /// Samples used per source over all phases, and passes over it (fractional).
    pub samples_per_source: BTreeMap<String, u64>,
    pub passes: BTreeMap<String, f64>,
    /// Largest |count_i(n) - target_i(n)| over every prefix n and source i (< 1 means exact).
    pub max_deviation: f64,
    pub columns: BTreeMap<String, String>,
    /// Outside the checksum (a timing): may be missing.
    #[serde(default)]
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub seal: Seal,
}

fn mds_form() -> Form {
    Form::Mds
}

/// One index array as `midmix.json` records it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct IndexFile {
    pub file: String,
    pub bytes: u64,
    pub xxh3_128: String,
}

/// The index arrays of an index mix.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct IndexFiles {
    pub positions: u64,
    pub source: IndexFile,
    pub sample: IndexFile,
}

/// A `midmix.json` of either kind, as read (checksum checked) or about to be written.
#[derive(Debug, Clone)]
pub enum Manifest {
    Prepared(Box<PreparedManifest>),
    Mix(Box<MixManifest>),
}

impl Manifest {
    /// `dir/midmix.json`, its seal checked, or None when there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let Some((path, json)) = seal::read_json(dir)? else {
            return Ok(None);
        };
        let bad = |e: serde_json::Error| {
            Error::dataset(&path, format!("not a valid midmix manifest: {e}"))
        };
        Ok(Some(match json["kind"].as_str() {
            Some("prepared") => {
                Manifest::Prepared(Box::new(serde_json::from_value(json).map_err(bad)?))
            }
            Some("mix") => Manifest::Mix(Box::new(serde_json::from_value(json).map_err(bad)?)),
            k => {
                return Err(Error::dataset(
                    &path,
                    format!(
                        "kind {} is neither 'prepared' nor 'mix'",
                        k.unwrap_or("(missing)")
                    ),
                ))
            }
        }))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Manifest::Prepared(_) => Kind::Prepared,
            Manifest::Mix(_) => Kind::Mix,
        }
    }

    /// An index mix: a manifest over other datasets' shards, with no shards of its own.
    pub fn is_index_mix(&self) -> bool {
        matches!(self, Manifest::Mix(m) if m.form == Form::Index)
    }

    /// The sample count it records: `counts.samples`, or a mix's `total_samples`.
    pub fn samples(&self) -> u64 {
        match self {
            Manifest::Prepared(m) => m.counts.samples,
            Manifest::Mix(m) => m.total_samples,
        }
    }

    pub fn columns(&self) -> &BTreeMap<String, String> {
        match self {
            Manifest::Prepared(m) => &m.columns,
            Manifest::Mix(m) => &m.columns,
        }
    }

    pub fn tokenizer(&self) -> &TokenizerInfo {
        match self {
            Manifest::Prepared(m) => &m.tokenizer,
            Manifest::Mix(m) => &m.tokenizer,
        }
    }

    pub fn seal(&self) -> &Seal {
        match self {
            Manifest::Prepared(m) => &m.seal,
            Manifest::Mix(m) => &m.seal,
        }
    }

    /// As JSON text (what the binding hands Python).
    pub fn to_json(&self) -> String {
        let value = match self {
            Manifest::Prepared(m) => serde_json::to_value(m),
            Manifest::Mix(m) => serde_json::to_value(m),
        };
        value.map(|v| v.to_string()).unwrap_or_default()
    }

    /// Seal and write it as `dir/midmix.json` (after the dataset's shards and `index.json`, which
    /// the seal pins); fills in the seal.
    pub fn write(&mut self, dir: &Path) -> Result<()> {
        match self {
            Manifest::Prepared(m) => write_sealed(dir, m.as_mut()),
            Manifest::Mix(m) => write_sealed(dir, m.as_mut()),
        }
    }
}

/// `json` as the manifest type `T`; an error names the field at fault.
fn typed<T: serde::de::DeserializeOwned>(path: &Path, json: Value) -> Result<T> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        Error::dataset(
            path,
            format!("not a valid midmix manifest: {}: {}", e.path(), e.inner()),
        )
    })
}

fn write_sealed<T: Serialize + serde::de::DeserializeOwned>(
    dir: &Path,
    manifest: &mut T,
) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let value =
        serde_json::to_value(&*manifest).map_err(|e| Error::dataset(&path, e.to_string()))?;
    *manifest = typed(&path, seal::write_json(dir, value)?)?;
    Ok(())
}

impl PreparedManifest {
    /// `dir`'s manifest, which must be a prepared dataset's.
    pub fn read(dir: &Path) -> Result<PreparedManifest> {
        match Manifest::read(dir)? {
            Some(Manifest::Prepared(m)) => Ok(*m),
            Some(Manifest::Mix(_)) => Err(Error::dataset(dir, "is a mix, not a prepared dataset")),
            None => Err(Error::io(
                dir.join(MANIFEST_FILE),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )),
        }
    }

    pub fn write(&mut self, dir: &Path) -> Result<()> {
        write_sealed(dir, self)
    }
}

impl MixManifest {
    pub fn write(&mut self, dir: &Path) -> Result<()> {
        write_sealed(dir, self)
    }
}

/// The JSON schema of `midmix.json` for each kind (`prepared`, `mix`) as the core writes it (a field
/// is required when it is always written): what the Python mirror is checked against.
pub fn schema() -> Value {
    let written = || {
        schemars::generate::SchemaSettings::default()
            .for_serialize()
            .into_generator()
    };
    serde_json::json!({
        "prepared": written().into_root_schema_for::<PreparedManifest>(),
        "mix": written().into_root_schema_for::<MixManifest>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let mut v = serde_json::to_value(PreparedManifest::default()).unwrap();
        v["counts"]["samples"] = serde_json::json!("12");
        let err = typed::<PreparedManifest>(Path::new("d/midmix.json"), v)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "d/midmix.json: not a valid midmix manifest: counts.samples: invalid type"
            ),
            "{err}"
        );
    }
}

//! The options objects of `midmix.api` (frozen dataclasses) as core option structs. Attributes are
//! read by name; each enum-valued string is parsed once, by the core's own parser, so every
//! message about a bad value comes from one place.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use midmix_core::mds::WriterOptions;
use midmix_core::mix::{ExportOptions, Length, MixOptions, OnExhaust, PhaseSpec};
use midmix_core::plan::BlendRule;
use midmix_core::prepare::{Mode, OnBadRecord, PrepareOptions};
use midmix_core::report::SftInfo;
use midmix_core::tokenize::EncoderChoice;
use midmix_core::unigram::RawOptions;
use pyo3::prelude::*;

use crate::errors::{to_py, ConfigError};

/// A string attribute parsed into a core enum with its `FromStr`.
pub struct Parsed<T>(pub T);

impl<'a, 'py, T> FromPyObject<'a, 'py> for Parsed<T>
where
    T: FromStr<Err = midmix_core::Error>,
{
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let text: String = obj.extract()?;
        text.parse().map(Parsed).map_err(to_py)
    }
}

#[derive(FromPyObject)]
pub struct PyPrepareOptions {
    name: String,
    inputs: Vec<String>,
    tokenizer: PathBuf,
    seq_len: usize,
    out: PathBuf,
    input_labels: Option<Vec<String>>,
    encoder: Parsed<EncoderChoice>,
    overwrite: bool,
    mode: String,
    text_field: String,
    text_per_line: bool,
    prompt_field: String,
    response_field: String,
    mask_prompt: bool,
    eos: Option<String>,
    bos: Option<String>,
    compression: Option<String>,
    hashes: Vec<String>,
    size_limit: Option<u64>,
    on_bad_record: Parsed<OnBadRecord>,
    num_tasks: Option<usize>,
    task_index: Option<usize>,
    threads: Option<usize>,
    progress: bool,
}

impl PyPrepareOptions {
    pub fn into_core(self, cancel: Arc<AtomicBool>) -> PyResult<PrepareOptions> {
        let mode = match self.mode.as_str() {
            "pretrain" => Mode::Pretrain {
                text_field: self.text_field,
                text_per_line: self.text_per_line,
            },
            "sft" => Mode::Sft(SftInfo {
                prompt_field: self.prompt_field,
                response_field: self.response_field,
                mask_prompt: self.mask_prompt,
            }),
            m => {
                return Err(ConfigError::new_err(format!(
                    "unknown mode '{m}': use pretrain or sft"
                )))
            }
        };
        let mut opts = PrepareOptions::new(
            &self.name,
            self.inputs,
            self.tokenizer,
            self.seq_len,
            self.out,
        );
        opts.input_labels = self.input_labels;
        opts.encoder = self.encoder.0;
        opts.overwrite = self.overwrite;
        opts.mode = mode;
        opts.eos = self.eos;
        opts.bos = self.bos;
        opts.writer = WriterOptions {
            compression: self.compression,
            hashes: self.hashes,
            size_limit: self.size_limit,
        };
        opts.on_bad_record = self.on_bad_record.0;
        opts.num_tasks = self.num_tasks;
        opts.task_index = self.task_index;
        opts.threads = self.threads;
        opts.progress = self.progress;
        opts.cancel = Some(cancel);
        Ok(opts)
    }
}

#[derive(FromPyObject)]
pub struct PyMergeOptions {
    parts: Vec<PathBuf>,
    out: PathBuf,
    overwrite: bool,
    progress: bool,
}

impl PyMergeOptions {
    pub fn into_core(self, cancel: Arc<AtomicBool>) -> midmix_core::merge::MergeOptions {
        midmix_core::merge::MergeOptions {
            parts: self.parts,
            out: self.out,
            overwrite: self.overwrite,
            progress: self.progress,
            cancel: Some(cancel),
        }
    }
}

/// `midmix.mixspec.Phase`.
#[derive(FromPyObject)]
pub struct PyPhase {
    kind: String,
    length: u64,
    weights: Vec<(String, f64)>,
    ramp: bool,
}

#[derive(FromPyObject)]
pub struct PyMixOptions {
    sources: Vec<(String, PathBuf)>,
    phases: Vec<PyPhase>,
    out: PathBuf,
    seed: u64,
    global_batch: Option<u64>,
    exact_per_batch: bool,
    on_exhaust: String,
    max_repeat: Option<u64>,
    blend_rule: Parsed<BlendRule>,
    materialize: bool,
    overwrite: bool,
    size_limit: Option<u64>,
    threads: Option<usize>,
    progress: bool,
}

impl PyMixOptions {
    pub fn into_core(self, cancel: Arc<AtomicBool>) -> PyResult<MixOptions> {
        let phases = self
            .phases
            .into_iter()
            .map(|p| {
                Ok(PhaseSpec {
                    length: Length::new(&p.kind, p.length)?,
                    weights: p.weights,
                    ramp: p.ramp,
                })
            })
            .collect::<midmix_core::Result<Vec<_>>>()
            .map_err(to_py)?;
        Ok(MixOptions {
            sources: self.sources,
            phases,
            seed: self.seed,
            global_batch: self.global_batch,
            exact_per_batch: self.exact_per_batch,
            on_exhaust: OnExhaust::new(&self.on_exhaust, self.max_repeat).map_err(to_py)?,
            blend_rule: self.blend_rule.0,
            materialize: self.materialize,
            out: self.out,
            overwrite: self.overwrite,
            size_limit: self.size_limit,
            threads: self.threads,
            progress: self.progress,
            cancel: Some(cancel),
        })
    }
}

#[derive(FromPyObject)]
pub struct PyExportOptions {
    mix: PathBuf,
    out: PathBuf,
    overwrite: bool,
    size_limit: Option<u64>,
    threads: Option<usize>,
    progress: bool,
}

impl PyExportOptions {
    pub fn into_core(self, cancel: Arc<AtomicBool>) -> ExportOptions {
        ExportOptions {
            mix: self.mix,
            out: self.out,
            overwrite: self.overwrite,
            size_limit: self.size_limit,
            threads: self.threads,
            progress: self.progress,
            cancel: Some(cancel),
        }
    }
}

#[derive(FromPyObject)]
pub struct PyUnigramFilesOptions {
    inputs: Vec<String>,
    tokenizer: PathBuf,
    fields: Vec<String>,
    text_per_line: bool,
    max_docs: Option<u64>,
    max_tokens_per_doc: Option<usize>,
    seed: u64,
    encoder: Parsed<EncoderChoice>,
    threads: Option<usize>,
}

impl PyUnigramFilesOptions {
    pub fn into_core(self, cancel: Arc<AtomicBool>) -> RawOptions {
        RawOptions {
            inputs: self.inputs,
            tokenizer: self.tokenizer,
            encoder: self.encoder.0,
            fields: self.fields,
            text_per_line: self.text_per_line,
            max_docs: self.max_docs,
            max_tokens_per_doc: self.max_tokens_per_doc,
            seed: self.seed,
            threads: self.threads,
            cancel: Some(cancel),
        }
    }
}

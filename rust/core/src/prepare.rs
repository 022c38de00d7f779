//! `midmix prepare`: corpus files → tokenized, packed MDS dataset + `midmix.json`.
//!
//! Three stages overlap: a reader thread splits files into record batches in input order; two
//! encoder threads (one with `--threads 1`) parse and tokenize every other batch each, in
//! parallel; a writer thread packs and writes the batches in the order they were read. Batches
//! stay in input order through bounded channels, so the output does not depend on the thread
//! count, and the next batches are encoded while one is packed and written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Location, Result};
use crate::input::{self, Format, InputFile, ReadOptions};
use crate::mds::{ColumnValue, Dtype, MdsWriter, WriterOptions};
use crate::pack::{self, Packer};
use crate::pool::{check_cancel, thread_pool};
use crate::progress::Progress;
use crate::record::{self, Extracted, SkipReason};
use crate::report::{
    Counts, InputInfo, Report, RunInfo, SftInfo, TaskInfo, TokenizerInfo, WriterInfo,
};
use crate::staging::StagedDir;
use crate::tokenize::{Encoder, EncoderChoice};

#[derive(Debug, Clone)]
pub enum Mode {
    Pretrain {
        text_field: String,
        text_per_line: bool,
    },
    Sft(SftInfo),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadRecord {
    Error,
    Skip,
}

impl std::str::FromStr for OnBadRecord {
    type Err = Error;

    fn from_str(s: &str) -> Result<OnBadRecord> {
        match s {
            "error" => Ok(OnBadRecord::Error),
            "skip" => Ok(OnBadRecord::Skip),
            _ => Err(Error::Config(format!(
                "unknown --on-bad-record '{s}': use error or skip"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub name: String,
    /// Files, directories or globs.
    pub inputs: Vec<String>,
    /// Names for the inputs in errors and reports, one per input when given (for inputs that
    /// are exports of something else, such as an HF dataset).
    pub input_labels: Option<Vec<String>>,
    pub tokenizer: PathBuf,
    pub encoder: EncoderChoice,
    pub seq_len: usize,
    pub out: PathBuf,
    pub overwrite: bool,
    pub mode: Mode,
    /// Digits only = an id; `token:TEXT` = the token spelled TEXT; else a token string (see
    /// `Encoder::resolve_token`). `None` = the tokenizer's end-of-text token; `"none"` = no EOS.
    pub eos: Option<String>,
    pub bos: Option<String>,
    pub writer: WriterOptions,
    pub on_bad_record: OnBadRecord,
    /// Prepare only slice `task_index` of `num_tasks` of the inputs (both or neither).
    pub num_tasks: Option<usize>,
    pub task_index: Option<usize>,
    pub threads: Option<usize>,
    pub progress: bool,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl PrepareOptions {
    pub fn new(
        name: &str,
        inputs: Vec<String>,
        tokenizer: PathBuf,
        seq_len: usize,
        out: PathBuf,
    ) -> Self {
        PrepareOptions {
            name: name.to_string(),
            inputs,
            input_labels: None,
            tokenizer,
            encoder: EncoderChoice::Auto,
            seq_len,
            out,
            overwrite: false,
            mode: Mode::Pretrain {
                text_field: "text".into(),
                text_per_line: false,
            },
            eos: None,
            bos: None,
            writer: WriterOptions {
                size_limit: Some(crate::mds::DEFAULT_SIZE_LIMIT),
                ..Default::default()
            },
            on_bad_record: OnBadRecord::Error,
            num_tasks: None,
            task_index: None,
            threads: None,
            progress: false,
            cancel: None,
        }
    }
}

/// `(count, index)` of the slice to prepare, checked once here: both given or neither, and the
/// index below the count.
fn task_slice_of(opts: &PrepareOptions) -> Result<Option<(usize, usize)>> {
    match (opts.num_tasks, opts.task_index) {
        (None, None) => Ok(None),
        (Some(count), Some(index)) if count == 0 || index >= count => Err(Error::Config(format!(
            "--task-index {index} must be below --num-tasks {count}"
        ))),
        (Some(count), Some(index)) => Ok(Some((count, index))),
        _ => Err(Error::Config(
            "--num-tasks and --task-index go together".into(),
        )),
    }
}

/// Resolve `--eos`/`--bos` against the tokenizer.
fn special_ids(enc: &Encoder, opts: &PrepareOptions) -> Result<(Option<u32>, Option<u32>)> {
    let eos = match opts.eos.as_deref() {
        Some("none") => None,
        Some(spec) => Some(enc.resolve_token(spec)?),
        None => Some(
            enc.default_eos()
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{} has no end-of-text token midmix recognizes: pass --eos TOKEN (or --eos none)",
                        enc.path().display()
                    ))
                })?
                .1,
        ),
    };
    let bos = opts
        .bos
        .as_deref()
        .map(|s| enc.resolve_token(s))
        .transpose()?;
    Ok((eos, bos))
}

fn format_name(f: Format) -> &'static str {
    use input::Compression::*;
    match f {
        Format::Jsonl(None) => "jsonl",
        Format::Jsonl(Gzip) => "jsonl.gz",
        Format::Jsonl(Zstd) => "jsonl.zst",
        Format::Text(None) => "txt",
        Format::Text(Gzip) => "txt.gz",
        Format::Text(Zstd) => "txt.zst",
        Format::Parquet => "parquet",
    }
}

/// xxh3-128 of each file's bytes: from the reading where it saw every byte, else (Parquet) by
/// reading the file again, in parallel.
fn fingerprints(files: &[InputFile], from_reading: Vec<Option<String>>) -> Result<Vec<String>> {
    files
        .par_iter()
        .zip(from_reading)
        .map(|(f, sum)| match sum {
            Some(sum) => Ok(sum),
            None => input::file_fingerprint(&f.path),
        })
        .collect()
}

/// One record after parsing: its text fields, or why it cannot be used.
type Parsed = std::result::Result<Vec<String>, (SkipReason, String)>;
/// A record's location, what parsing made of it, and its token ids per field.
type EncodedRecord = (crate::error::Unit, Parsed, Vec<Vec<u32>>);

/// Parse a batch in parallel, tokenize all its texts in one call, and return each record's
/// token ids per field (or why it was rejected), in input order.
fn encode_batch(
    pool: &rayon::ThreadPool,
    enc: &Encoder,
    records: Vec<input::RawRecord>,
    fields: &[String],
    label: &str,
) -> Result<Vec<EncodedRecord>> {
    let parsed: Vec<(crate::error::Unit, Parsed)> = pool.install(|| {
        records
            .into_par_iter()
            .map(|rec| {
                let p = match record::extract(rec.payload, fields) {
                    Extracted::Rejected(r, m) => Err((r, m)),
                    Extracted::Fields(f) if f.last().is_none_or(|s| s.is_empty()) => {
                        Err((SkipReason::EmptyDocument, "empty document".into()))
                    }
                    Extracted::Fields(f) => Ok(f),
                };
                (rec.unit, p)
            })
            .collect()
    });
    let texts: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok())
        .flat_map(|f| f.iter().map(String::as_str))
        .collect();
    let ids = pool.install(|| enc.encode_batch(&texts)).map_err(|e| {
        // Name the record the encoder failed on (a tokenizer that panics on some text).
        let failed = parsed.iter().find(|(_, p)| {
            p.as_ref()
                .is_ok_and(|f| f.iter().any(|t| enc.encode(t).is_err()))
        });
        match failed {
            Some((unit, _)) => Error::BadRecord {
                loc: Location {
                    path: label.to_string(),
                    unit: *unit,
                },
                msg: format!("cannot be tokenized: {e}"),
            },
            None => e,
        }
    })?;
    let mut ids = ids.into_iter();
    Ok(parsed
        .into_iter()
        .map(|(unit, p)| {
            let n = p.as_ref().map_or(0, Vec::len);
            let parts: Vec<Vec<u32>> = ids.by_ref().take(n).collect();
            (unit, p, parts)
        })
        .collect())
}

/// The token ids every mode wraps documents in, and the dtype it stores ids as.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    eos: Option<u32>,
    bos: Option<u32>,
    dtype: Dtype,
}

impl Tokens {
    /// Add to `counts.special_in_text` the tokens of `text` that are the EOS or BOS id.
    fn count_in_text(&self, text: &[u32], counts: &mut Counts) {
        if let Some(n) = counts.special_in_text.as_mut() {
            *n += text
                .iter()
                .filter(|&&t| Some(t) == self.eos || Some(t) == self.bos)
                .count() as u64;
        }
    }
}

/// What became of one record's token ids.
enum Pushed {
    Written,
    /// The mode cannot use it; `--on-bad-record` decides between an error and a skip.
    Rejected(SkipReason, String),
}

/// Everything that differs between pretraining and SFT preparation. `prepare` drives one of
/// these through the same reading, encoding and writing steps.
trait ModePipeline: Send {
    /// `mode` in the report.
    fn name(&self) -> &'static str;
    /// Record fields to extract and tokenize, in order.
    fn fields(&self) -> Vec<String>;
    /// `.txt` inputs: one document per line instead of one per file.
    fn text_per_line(&self) -> bool;
    /// Refuse inputs the mode cannot read before any work starts.
    fn check_inputs(&self, files: &[InputFile]) -> Result<()>;
    /// The output columns, (name, MDS encoding).
    fn columns(&self) -> Vec<(String, String)>;
    /// Turn one record's token ids (one list per field) into samples.
    fn push(
        &mut self,
        parts: &[Vec<u32>],
        writer: &mut MdsWriter,
        counts: &mut Counts,
    ) -> Result<Pushed>;
    /// Fill the sample and token counts once every record is in. A task part keeps its tail
    /// for `merge` instead of dropping it.
    fn finish_counts(&self, counts: &mut Counts, writer: &MdsWriter, is_task: bool);
    /// Tokens after the last full sample (kept in a task part's report).
    fn tail(&self) -> Vec<u32>;
    /// `text_field` and `sft` in the report.
    fn text_field(&self) -> Option<String>;
    fn sft(&self) -> Option<SftInfo>;
}

/// Pretraining: documents are wrapped in BOS/EOS and packed into fixed `seq_len` windows.
struct Pretrain {
    text_field: String,
    text_per_line: bool,
    seq_len: usize,
    tokens: Tokens,
    packer: Packer,
}

impl ModePipeline for Pretrain {
    fn name(&self) -> &'static str {
        "pretrain"
    }

    fn fields(&self) -> Vec<String> {
        vec![self.text_field.clone()]
    }

    fn text_per_line(&self) -> bool {
        self.text_per_line
    }

    fn check_inputs(&self, _files: &[InputFile]) -> Result<()> {
        Ok(())
    }

    fn columns(&self) -> Vec<(String, String)> {
        vec![(
            "tokens".into(),
            format!("ndarray:{}:{}", self.tokens.dtype.name(), self.seq_len),
        )]
    }

    fn push(
        &mut self,
        parts: &[Vec<u32>],
        writer: &mut MdsWriter,
        counts: &mut Counts,
    ) -> Result<Pushed> {
        self.tokens.count_in_text(&parts[0], counts);
        let mut doc: Vec<u32> = Vec::with_capacity(parts[0].len() + 2);
        doc.extend(self.tokens.bos);
        doc.extend_from_slice(&parts[0]);
        doc.extend(self.tokens.eos);
        counts.document_tokens += doc.len() as u64;
        self.packer.push(&doc, writer)?;
        Ok(Pushed::Written)
    }

    fn finish_counts(&self, counts: &mut Counts, _writer: &MdsWriter, is_task: bool) {
        counts.samples = self.packer.samples;
        counts.tokens = self.packer.samples * self.seq_len as u64;
        counts.dropped_tail_tokens = if is_task {
            0
        } else {
            self.packer.tail().len() as u64
        };
    }

    fn tail(&self) -> Vec<u32> {
        self.packer.tail().to_vec()
    }

    fn text_field(&self) -> Option<String> {
        Some(self.text_field.clone())
    }

    fn sft(&self) -> Option<SftInfo> {
        None
    }
}

/// SFT: one sample per (prompt, response) example, labels masked over the prompt. An empty
/// `prompt_field` reads no prompt: every example is its response alone (a plain document run
/// through an empty prompt template, as the paper scores its held-out C4 text during SFT).
struct Sft {
    info: SftInfo,
    seq_len: usize,
    tokens: Tokens,
    // Reused buffers for one sample's columns.
    ids_bytes: Vec<u8>,
    label_bytes: Vec<u8>,
}

impl ModePipeline for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }

    fn fields(&self) -> Vec<String> {
        if self.info.prompt_field.is_empty() {
            return vec![self.info.response_field.clone()];
        }
        vec![
            self.info.prompt_field.clone(),
            self.info.response_field.clone(),
        ]
    }

    fn text_per_line(&self) -> bool {
        false
    }

    fn check_inputs(&self, files: &[InputFile]) -> Result<()> {
        match files.iter().find(|f| matches!(f.format, Format::Text(_))) {
            Some(f) => Err(Error::Config(format!(
                "{}: SFT mode needs prompt and response fields; .txt inputs have none",
                f.label
            ))),
            None => Ok(()),
        }
    }

    fn columns(&self) -> Vec<(String, String)> {
        vec![
            (
                "input_ids".into(),
                format!("ndarray:{}", self.tokens.dtype.name()),
            ),
            ("labels".into(), "ndarray:int32".into()),
        ]
    }

    fn push(
        &mut self,
        parts: &[Vec<u32>],
        writer: &mut MdsWriter,
        counts: &mut Counts,
    ) -> Result<Pushed> {
        let t = self.tokens;
        // The response is the last field; the prompt, when there is a prompt field, the one before.
        let (response, prompt) = match parts {
            [prompt, response] => (response.as_slice(), prompt.as_slice()),
            [response] => (response.as_slice(), &[][..]),
            _ => {
                return Err(Error::Config(format!(
                    "SFT examples need 1 or 2 fields, got {}",
                    parts.len()
                )))
            }
        };
        counts.document_tokens += (prompt.len() + response.len()) as u64;
        t.count_in_text(prompt, counts);
        t.count_in_text(response, counts);
        let Some(sample) = pack::sft_sample(
            t.bos,
            prompt,
            response,
            t.eos,
            self.seq_len,
            self.info.mask_prompt,
        ) else {
            return Ok(Pushed::Rejected(
                SkipReason::PromptTooLong,
                format!(
                    "the prompt alone fills --seq-len {} and leaves no response token to train on (pass --on-bad-record skip to skip such examples)",
                    self.seq_len
                ),
            ));
        };
        if sample.truncated_tokens > 0 {
            counts.truncated_samples += 1;
            counts.truncated_tokens += sample.truncated_tokens as u64;
        }
        counts.label_tokens += sample.labels.iter().filter(|&&l| l != -100).count() as u64;
        counts.tokens += sample.input_ids.len() as u64;
        pack::ids_to_bytes(&sample.input_ids, t.dtype, &mut self.ids_bytes);
        self.label_bytes.clear();
        self.label_bytes
            .extend(sample.labels.iter().flat_map(|l| l.to_le_bytes()));
        let n = [sample.input_ids.len() as u64];
        writer.write(&[
            ColumnValue::Array {
                dtype: t.dtype,
                shape: &n,
                data: &self.ids_bytes,
            },
            ColumnValue::Array {
                dtype: Dtype::I32,
                shape: &n,
                data: &self.label_bytes,
            },
        ])?;
        Ok(Pushed::Written)
    }

    fn finish_counts(&self, counts: &mut Counts, writer: &MdsWriter, _is_task: bool) {
        counts.samples = writer.samples_written();
    }

    fn tail(&self) -> Vec<u32> {
        Vec::new()
    }

    fn text_field(&self) -> Option<String> {
        None
    }

    fn sft(&self) -> Option<SftInfo> {
        Some(self.info.clone())
    }
}

/// The pipeline for `opts.mode`: the one place that looks at the mode.
fn pipeline(opts: &PrepareOptions, tokens: Tokens) -> Box<dyn ModePipeline> {
    match &opts.mode {
        Mode::Pretrain {
            text_field,
            text_per_line,
        } => Box::new(Pretrain {
            text_field: text_field.clone(),
            text_per_line: *text_per_line,
            seq_len: opts.seq_len,
            tokens,
            packer: Packer::new(opts.seq_len, tokens.dtype),
        }),
        Mode::Sft(info) => Box::new(Sft {
            info: info.clone(),
            seq_len: opts.seq_len,
            tokens,
            ids_bytes: Vec::new(),
            label_bytes: Vec::new(),
        }),
    }
}

/// The id every part of one `--num-tasks` run shares: the whole input list (labels and sizes) and
/// the options that shape the stream. Parts of different runs cannot merge into a valid dataset.
fn run_id(opts: &PrepareOptions, files: &[InputFile]) -> String {
    let mut key = format!(
        "midmix-run\0{:?}\0{:?}\0{:?}\0{}",
        opts.mode, opts.eos, opts.bos, opts.seq_len
    );
    for f in files {
        key.push_str(&format!("\0{}\0{}", f.label, f.size));
    }
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
}

/// The input files, labelled as asked and cut to this task's slice, and the run id of the whole list.
fn input_files(
    opts: &PrepareOptions,
    task: Option<(usize, usize)>,
) -> Result<(Vec<InputFile>, String)> {
    let mut files = input::discover(&opts.inputs)?;
    if let Some(labels) = &opts.input_labels {
        if labels.len() != files.len() {
            return Err(Error::Config("one label per input file is needed".into()));
        }
        for (f, l) in files.iter_mut().zip(labels) {
            f.label = l.clone();
        }
    }
    let id = run_id(opts, &files);
    if let Some((count, index)) = task {
        let per_line = matches!(
            opts.mode,
            Mode::Pretrain {
                text_per_line: true,
                ..
            }
        );
        files = crate::tasks::task_files(&files, count, index, per_line)?;
    }
    Ok((files, id))
}

/// What the encoding loop reads from.
struct Source<'a> {
    opts: &'a PrepareOptions,
    pool: &'a rayon::ThreadPool,
    enc: &'a Encoder,
    files: &'a [InputFile],
}

/// Read every file on a reader thread, encode its batches in parallel here and hand the records
/// to `mode` on a writer thread, in input order. Returns the documents used per file, and the
/// fingerprints of the files the reading saw whole.
fn encode_all(
    src: &Source<'_>,
    mode: &mut dyn ModePipeline,
    writer: &mut MdsWriter,
    counts: &mut Counts,
    progress: &Progress,
) -> Result<(Vec<u64>, Vec<Option<String>>)> {
    let fields = mode.fields();
    let read_opts = ReadOptions {
        fields: fields.clone(),
        text_per_line: mode.text_per_line(),
    };
    let consumed = Arc::new(AtomicU64::new(0));
    // Reader → (raw batches) → encoders → (encoded batches) → writer. With two or more threads,
    // two encoders each take every other batch, so one batch's parse and tokenization overlap
    // the next one's, and the cores do not idle while a batch's last long text finishes. The
    // writer takes the batches from the encoders in the same rotation, so they are written in
    // input order. One batch in flight per channel bounds the memory.
    let encoders = if src.pool.current_num_threads() > 1 {
        2
    } else {
        1
    };
    let (raw_txs, raw_rxs): (Vec<_>, Vec<_>) = (0..encoders)
        .map(|_| mpsc::sync_channel::<input::RawBatch>(1))
        .unzip();
    let (enc_txs, enc_rxs): (Vec<_>, Vec<_>) = (0..encoders)
        .map(|_| mpsc::sync_channel::<(usize, u64, Result<Vec<EncodedRecord>>)>(1))
        .unzip();
    std::thread::scope(|scope| {
        let reader_consumed = consumed.clone();
        let files = src.files;
        let reader = scope.spawn(move || {
            let mut batches = 0usize;
            input::read_all(files, &read_opts, &reader_consumed, &mut |b| {
                batches += 1;
                // A closed channel: an encoder or the writer stopped, on an error returned below.
                raw_txs[(batches - 1) % raw_txs.len()].send(b).is_ok()
            })
        });
        for (raw_rx, enc_tx) in raw_rxs.into_iter().zip(enc_txs) {
            let fields = &fields;
            scope.spawn(move || {
                for batch in raw_rx.iter() {
                    let encoded = check_cancel(src.opts.cancel.as_deref()).and_then(|()| {
                        let label = &src.files[batch.file].label;
                        encode_batch(src.pool, src.enc, batch.records, fields, label)
                    });
                    let failed = encoded.is_err();
                    if enc_tx.send((batch.file, batch.input_pos, encoded)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        let written = scope.spawn(move || -> Result<Vec<u64>> {
            let mut docs_per_file = vec![0u64; src.files.len()];
            // A closed channel in its turn: the reader sent no more batches.
            for (file, input_pos, encoded) in
                (0..).map_while(|i| enc_rxs[i % enc_rxs.len()].recv().ok())
            {
                docs_per_file[file] += consume_batch(src, file, encoded?, mode, writer, counts)?;
                progress.update(input_pos, counts.documents, counts.document_tokens);
            }
            Ok(docs_per_file)
        });
        let written = written
            .join()
            .map_err(|_| Error::Config("output writer thread panicked".into()))?;
        let read = reader
            .join()
            .map_err(|_| Error::Config("input reader thread panicked".into()))?;
        // The first error in input order: the writer's or an encoder's (in batch order), then
        // the reader's. (An encoder panic reaches here as the writer's channel closing early,
        // then as the scope's own panic.)
        Ok((written?, read?))
    })
}

/// Hand one batch's records to `mode`, in order; rejected ones become an error or a skip as
/// `--on-bad-record` says. Returns how many documents were used.
fn consume_batch(
    src: &Source<'_>,
    file: usize,
    encoded: Vec<EncodedRecord>,
    mode: &mut dyn ModePipeline,
    writer: &mut MdsWriter,
    counts: &mut Counts,
) -> Result<u64> {
    let mut docs = 0;
    for (unit, parsed, parts) in encoded {
        let pushed = match &parsed {
            Err((reason, msg)) => Pushed::Rejected(*reason, msg.clone()),
            Ok(_) => mode.push(&parts, writer, counts)?,
        };
        if let Pushed::Rejected(reason, msg) = pushed {
            if src.opts.on_bad_record == OnBadRecord::Error && !reason.is_benign() {
                return Err(Error::BadRecord {
                    loc: Location {
                        path: src.files[file].label.clone(),
                        unit,
                    },
                    msg,
                });
            }
            *counts
                .skipped
                .entry(reason.as_str().to_string())
                .or_default() += 1;
            continue;
        }
        let text_bytes: usize = parsed.iter().flatten().map(String::len).sum();
        counts.documents += 1;
        counts.text_bytes += text_bytes as u64;
        docs += 1;
    }
    Ok(docs)
}

/// Each input as the report lists it: its fingerprint and the documents it gave.
fn input_infos(files: &[InputFile], sums: Vec<String>, docs: Vec<u64>) -> Vec<InputInfo> {
    files
        .iter()
        .zip(sums)
        .zip(docs)
        .map(|((f, sum), docs)| InputInfo {
            path: f.label.clone(),
            format: format_name(f.format).into(),
            bytes: f.size,
            xxh3_128: sum,
            documents: docs,
        })
        .collect()
}

/// What a finished run gives the report besides the options.
struct Output {
    counts: Counts,
    inputs: Vec<InputInfo>,
    task: Option<TaskInfo>,
}

fn report(
    opts: &PrepareOptions,
    enc: &Encoder,
    mode: &dyn ModePipeline,
    tokens: Tokens,
    out: Output,
    run: RunInfo,
) -> Report {
    Report {
        midmix_version: crate::VERSION.to_string(),
        kind: crate::report::KIND_PREPARED.into(),
        name: opts.name.clone(),
        mode: mode.name().into(),
        tokenizer: TokenizerInfo {
            path: opts.tokenizer.display().to_string(),
            sha256: enc.fingerprint.clone(),
            vocab_size: enc.vocab_size,
            encoder: enc.backend_name().into(),
            fallback_reason: enc.fallback_reason.clone(),
        },
        seq_len: opts.seq_len,
        eos_id: tokens.eos,
        bos_id: tokens.bos,
        dtype: tokens.dtype.name().into(),
        columns: mode.columns().into_iter().collect::<BTreeMap<_, _>>(),
        text_field: mode.text_field(),
        sft: mode.sft(),
        counts: out.counts,
        inputs: out.inputs,
        writer: WriterInfo {
            compression: opts.writer.compression.clone(),
            hashes: crate::mds::with_content_hash(&opts.writer.hashes),
            size_limit: opts.writer.size_limit,
        },
        task: out.task,
        run,
        seal: Default::default(),
    }
}

/// The longest `--seq-len` accepted, in tokens (16Mi). Far above any context length in use, and
/// it keeps one sample (and the packer's buffers) to tens of MB.
pub const MAX_SEQ_LEN: usize = 1 << 24;

/// Refuse a `seq_len` of 0, above `MAX_SEQ_LEN`, or whose sample would not fit an MDS shard
/// (offsets are u32, so a shard's header plus one sample must stay below 4 GiB). Checked before
/// anything sized by `seq_len` is allocated.
fn check_seq_len(seq_len: usize, dtype: Dtype, sft: bool) -> Result<()> {
    if seq_len == 0 {
        return Err(Error::Config("--seq-len must be at least 1".into()));
    }
    if seq_len > MAX_SEQ_LEN {
        return Err(Error::Config(format!(
            "--seq-len {seq_len} is above the maximum {MAX_SEQ_LEN} tokens"
        )));
    }
    // SFT samples also hold int32 labels, and both columns carry a small ndarray header.
    let per_token = dtype.size() as u64 + if sft { 4 } else { 0 };
    let sample = seq_len as u64 * per_token + 64;
    let header = 4 + 4 * 2 + 4096;
    if sample + header >= 1 << 32 {
        return Err(Error::Config(format!(
            "--seq-len {seq_len}: a sample of {sample} bytes does not fit an MDS shard (u32 offsets)"
        )));
    }
    Ok(())
}

pub fn prepare(opts: &PrepareOptions) -> Result<Report> {
    let started = Instant::now();
    let sft = matches!(opts.mode, Mode::Sft(_));
    // The bound needs no tokenizer: refuse absurd values before loading one.
    check_seq_len(opts.seq_len, Dtype::U32, sft)?;
    if let Mode::Sft(info) = &opts.mode {
        if info.response_field.is_empty() {
            return Err(Error::Config(
                "--response-field is empty: SFT examples need a response".into(),
            ));
        }
    }
    let task = task_slice_of(opts)?;
    let pool = thread_pool(opts.threads)?;
    let enc = Encoder::shared(&opts.tokenizer, opts.encoder)?;
    let (eos, bos) = special_ids(&enc, opts)?;
    let tokens = Tokens {
        eos,
        bos,
        dtype: pack::token_dtype(enc.vocab_size),
    };
    check_seq_len(opts.seq_len, tokens.dtype, sft)?;
    let mut mode = pipeline(opts, tokens);
    let (files, run_id) = input_files(opts, task)?;
    // The named files and directories, every file found in them, and the tokenizer.
    let in_paths: Vec<PathBuf> = opts
        .inputs
        .iter()
        .map(PathBuf::from)
        .chain(std::iter::once(opts.tokenizer.clone()))
        .filter(|p| p.exists())
        .chain(files.iter().map(|f| f.path.clone()))
        .collect();
    crate::staging::check_not_an_input(&opts.out, &in_paths)?;
    mode.check_inputs(&files)?;

    let staged = StagedDir::new(&opts.out, opts.overwrite, crate::report::KIND_PREPARED)?;
    let columns = mode.columns();
    let col_refs: Vec<(&str, &str)> = columns
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    // Every shard midmix writes records its content hash (`mds::CONTENT_HASH`) besides `--hashes`.
    let writer_opts = WriterOptions {
        hashes: crate::mds::with_content_hash(&opts.writer.hashes),
        ..opts.writer.clone()
    };
    let mut writer =
        MdsWriter::create_stoppable(staged.path(), &col_refs, &writer_opts, opts.cancel.clone())?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new(
        opts.progress,
        total_bytes,
        &format!("prepare {}", opts.name),
    );
    let mut counts = Counts {
        input_bytes: total_bytes,
        special_in_text: Some(0),
        ..Default::default()
    };
    let src = Source {
        opts,
        pool: &pool,
        enc: &enc,
        files: &files,
    };
    let (docs_per_file, read_sums) =
        encode_all(&src, mode.as_mut(), &mut writer, &mut counts, &progress)
            .inspect_err(|_| progress.abandon())?;
    let sums = pool.install(|| fingerprints(&files, read_sums))?;

    let task = task.map(|(count, index)| TaskInfo {
        index,
        count,
        tail: mode.tail(),
        run_id,
    });
    mode.finish_counts(&mut counts, &writer, task.is_some());
    let shards = writer.finish()?;
    counts.output_bytes = crate::mds::stored_bytes(&shards);
    progress.finish();

    let inputs = input_infos(&files, sums, docs_per_file);
    let elapsed = started.elapsed().as_secs_f64();
    let run = RunInfo {
        elapsed_s: elapsed,
        threads: pool.current_num_threads(),
        text_mb_per_s: counts.text_bytes as f64 / 1e6 / elapsed.max(1e-9),
    };
    let out = Output {
        counts,
        inputs,
        task,
    };
    let mut report = report(opts, &enc, mode.as_ref(), tokens, out, run);
    report.write(staged.path())?;
    staged.commit(opts.cancel.as_deref())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_error(num_tasks: Option<usize>, task_index: Option<usize>) -> Option<String> {
        let mut o = PrepareOptions::new("d", vec![], PathBuf::new(), 8, PathBuf::new());
        o.num_tasks = num_tasks;
        o.task_index = task_index;
        task_slice_of(&o).err().map(|e| e.to_string())
    }

    #[test]
    fn task_options_are_checked_together() {
        assert_eq!(task_error(None, None), None);
        assert_eq!(task_error(Some(3), Some(2)), None);
        let pair = Some("--num-tasks and --task-index go together".to_string());
        assert_eq!(task_error(Some(3), None), pair);
        assert_eq!(task_error(None, Some(0)), pair);
        assert_eq!(
            task_error(Some(2), Some(2)),
            Some("--task-index 2 must be below --num-tasks 2".into())
        );
        assert!(task_error(Some(0), Some(0)).is_some());
    }

    #[test]
    fn huge_seq_len_is_refused_before_allocating() {
        let tok =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json");
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("a.jsonl");
        std::fs::write(&input, "{\"text\": \"hello\"}\n").unwrap();
        let out = tmp.path().join("out");
        for (seq_len, want) in [
            (
                5_000_000_000usize,
                "--seq-len 5000000000 is above the maximum 16777216 tokens",
            ),
            (
                MAX_SEQ_LEN + 1,
                "--seq-len 16777217 is above the maximum 16777216 tokens",
            ),
            (0, "--seq-len must be at least 1"),
        ] {
            let o = PrepareOptions::new(
                "d",
                vec![input.display().to_string()],
                tok.clone(),
                seq_len,
                out.clone(),
            );
            match prepare(&o) {
                Err(Error::Config(msg)) => assert_eq!(msg, want),
                other => panic!("seq_len {seq_len}: expected a config error, got {other:?}"),
            }
            assert!(!out.exists());
        }
        assert!(check_seq_len(MAX_SEQ_LEN, Dtype::U32, true).is_ok());
    }

    #[test]
    fn choices_parse_from_their_names() {
        assert_eq!("error".parse::<OnBadRecord>().unwrap(), OnBadRecord::Error);
        assert_eq!("skip".parse::<OnBadRecord>().unwrap(), OnBadRecord::Skip);
        match "drop".parse::<OnBadRecord>() {
            Err(Error::Config(msg)) => {
                assert_eq!(msg, "unknown --on-bad-record 'drop': use error or skip")
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert_eq!("hf".parse::<EncoderChoice>().unwrap(), EncoderChoice::Hf);
        assert_eq!(EncoderChoice::parse("fast").unwrap(), EncoderChoice::Fast);
        assert!(matches!(
            "slow".parse::<EncoderChoice>(),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn an_empty_prompt_field_makes_each_document_a_response() {
        let tok =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json");
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("a.jsonl");
        std::fs::write(&input, "{\"text\": \"hello world\"}\n{\"text\": \"\"}\n").unwrap();
        let sft = |prompt: &str, response: &str| {
            let mut o = PrepareOptions::new(
                "d",
                vec![input.display().to_string()],
                tok.clone(),
                8,
                tmp.path().join("out"),
            );
            o.overwrite = true;
            o.mode = Mode::Sft(SftInfo {
                prompt_field: prompt.into(),
                response_field: response.into(),
                mask_prompt: true,
            });
            prepare(&o)
        };
        let report = sft("", "text").unwrap();
        // "hello world" + EOS, every token a label; the empty document is skipped (and counted).
        assert_eq!(report.counts.samples, 1);
        assert_eq!(report.counts.tokens, 3);
        assert_eq!(report.counts.label_tokens, 3);
        assert_eq!(report.counts.skipped.get("empty_document"), Some(&1));
        match sft("", "") {
            Err(Error::Config(msg)) => assert!(msg.contains("--response-field"), "{msg}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}

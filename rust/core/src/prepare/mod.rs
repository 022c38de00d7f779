//! `midmix prepare`: corpus files → tokenized, packed MDS dataset + `midmix.json`.
//!
//! Three stages overlap: a reader thread splits files into record batches in input order; two
//! encoder threads (one with `--threads 1`) parse and tokenize every other batch each, in
//! parallel; a writer thread packs and writes the batches in the order they were read. Batches
//! stay in input order through bounded channels, so the output does not depend on the thread
//! count, and the next batches are encoded while one is packed and written.

mod modes;
mod pipeline;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::input::{self, Format, InputFile};
use crate::manifest::{
    Counts, InputInfo, Kind, ModeName, PreparedManifest, RunInfo, SftInfo, TaskInfo, TokenizerInfo,
    WriterInfo,
};
use crate::mds::{Dtype, MdsWriter, WriterOptions};
use crate::pack;
use crate::pool::thread_pool;
use crate::progress::Progress;
use crate::staging::{OutputOptions, StagedDir};
use crate::tokenize::{Encoder, EncoderChoice};
use modes::{ModePipeline, Tokens};

/// What `prepare` makes of the records: the options of one mode, taken from `PrepareOptions`.
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

impl std::fmt::Display for OnBadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnBadRecord::Error => "error",
            OnBadRecord::Skip => "skip",
        })
    }
}

crate::named::by_name!(OnBadRecord);

/// `midmix prepare` (Python's `midmix.options.PrepareOptions`, converted by field name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub mode: ModeName,
    /// Pretraining: the field holding the text, and `.txt` inputs read a document per line.
    pub text_field: String,
    pub text_per_line: bool,
    /// SFT: the fields of an example, and whether the prompt's tokens get no label.
    pub prompt_field: String,
    pub response_field: String,
    pub mask_prompt: bool,
    /// Digits only = an id; `token:TEXT` = the token spelled TEXT; else a token string (see
    /// `Encoder::resolve_token`). `None` = the tokenizer's end-of-text token; `"none"` = no EOS.
    pub eos: Option<String>,
    pub bos: Option<String>,
    /// Shard compression (`zstd`, `zstd:19`, …) and the hashes `index.json` records of each shard.
    pub compression: Option<String>,
    pub hashes: Vec<String>,
    pub on_bad_record: OnBadRecord,
    /// Prepare only slice `task_index` of `num_tasks` of the inputs (both or neither).
    pub num_tasks: Option<usize>,
    pub task_index: Option<usize>,
    pub output: OutputOptions,
}

impl PrepareOptions {
    /// Pretraining data from `inputs` into `out`, every other option at its default.
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
            mode: ModeName::Pretrain,
            text_field: "text".into(),
            text_per_line: false,
            prompt_field: "prompt".into(),
            response_field: "response".into(),
            mask_prompt: true,
            eos: None,
            bos: None,
            compression: None,
            hashes: Vec::new(),
            on_bad_record: OnBadRecord::Error,
            num_tasks: None,
            task_index: None,
            output: OutputOptions::new(out),
        }
    }

    /// The options of `mode` alone.
    pub fn mode(&self) -> Mode {
        match self.mode {
            ModeName::Pretrain => Mode::Pretrain {
                text_field: self.text_field.clone(),
                text_per_line: self.text_per_line,
            },
            ModeName::Sft => Mode::Sft(SftInfo {
                prompt_field: self.prompt_field.clone(),
                response_field: self.response_field.clone(),
                mask_prompt: self.mask_prompt,
            }),
        }
    }

    /// How shards are written; every shard also records its content hash (`mds::CONTENT_HASH`).
    pub fn writer(&self) -> WriterOptions {
        WriterOptions {
            compression: self.compression.clone(),
            hashes: crate::mds::with_content_hash(&self.hashes),
            size_limit: self.output.size_limit,
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

/// The id every part of one `--num-tasks` run shares: the whole input list (labels and sizes) and
/// the options that shape the stream. Parts of different runs cannot merge into a valid dataset.
fn run_id(opts: &PrepareOptions, files: &[InputFile]) -> String {
    let mut key = format!(
        "midmix-run\0{:?}\0{:?}\0{:?}\0{}",
        opts.mode(),
        opts.eos,
        opts.bos,
        opts.seq_len
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
        let per_line = opts.mode == ModeName::Pretrain && opts.text_per_line;
        files = crate::tasks::task_files(&files, count, index, per_line)?;
    }
    Ok((files, id))
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
) -> PreparedManifest {
    PreparedManifest {
        midmix_version: crate::VERSION.to_string(),
        kind: Kind::Prepared,
        name: opts.name.clone(),
        mode: opts.mode,
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
        writer: {
            let w = opts.writer();
            WriterInfo {
                compression: w.compression,
                hashes: w.hashes,
                size_limit: w.size_limit,
            }
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

pub fn prepare(opts: &PrepareOptions) -> Result<PreparedManifest> {
    let started = Instant::now();
    let sft = opts.mode == ModeName::Sft;
    // The bound needs no tokenizer: refuse absurd values before loading one.
    check_seq_len(opts.seq_len, Dtype::U32, sft)?;
    if sft && opts.response_field.is_empty() {
        return Err(Error::Config(
            "--response-field is empty: SFT examples need a response".into(),
        ));
    }
    let task = task_slice_of(opts)?;
    let pool = thread_pool(opts.output.threads)?;
    let enc = Encoder::shared(&opts.tokenizer, opts.encoder)?;
    let (eos, bos) = special_ids(&enc, opts)?;
    let tokens = Tokens {
        eos,
        bos,
        dtype: pack::token_dtype(enc.vocab_size),
    };
    check_seq_len(opts.seq_len, tokens.dtype, sft)?;
    let mut mode = modes::pipeline(opts, tokens);
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
    crate::staging::check_not_an_input(&opts.output.out, &in_paths)?;
    mode.check_inputs(&files)?;

    let staged = StagedDir::new(&opts.output, Kind::Prepared)?;
    let columns = mode.columns();
    let col_refs: Vec<(&str, &str)> = columns
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut writer = MdsWriter::create_stoppable(
        staged.path(),
        &col_refs,
        &opts.writer(),
        opts.output.cancel.clone(),
    )?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new(
        opts.output.progress,
        total_bytes,
        &format!("prepare {}", opts.name),
    );
    let mut counts = Counts {
        input_bytes: total_bytes,
        special_in_text: Some(0),
        ..Default::default()
    };
    let src = pipeline::Source {
        opts,
        pool: &pool,
        enc: &enc,
        files: &files,
    };
    let (docs_per_file, read_sums) =
        pipeline::encode_all(&src, mode.as_mut(), &mut writer, &mut counts, &progress)
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
    staged.commit(opts.output.cancel())?;
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
            o.output.overwrite = true;
            o.mode = ModeName::Sft;
            o.prompt_field = prompt.into();
            o.response_field = response.into();
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

//! `midmix merge`: combine the parts of a `--num-tasks` prepare into one dataset whose samples
//! are exactly those of a single-task run, in the same order.
//!
//! Each part keeps the tokens after its last full sample (its `tail`); merging re-cuts the
//! concatenated token stream, copying ids without re-tokenizing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::{
    Counts, InputInfo, Kind, ModeName, PreparedManifest, RunInfo, WriterInfo, MANIFEST_FILE,
};
use crate::mds::{Dtype, MdsDataset, MdsWriter, WriterOptions};
use crate::pack::{self, Packer};
use crate::pool::check_cancel;
use crate::progress::Progress;
use crate::staging::{OutputOptions, StagedDir};

/// `midmix merge` (Python's `midmix.options.MergeOptions`, converted by field name). The shards are
/// cut as the parts were (their size limit), so the result equals one run's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeOptions {
    pub parts: Vec<PathBuf>,
    pub output: OutputOptions,
}

fn same<T: PartialEq + std::fmt::Debug>(what: &str, part: &Path, a: &T, b: &T) -> Result<()> {
    if a != b {
        return Err(Error::dataset(
            part,
            format!("{what} differs from the first part ({b:?} vs {a:?}); parts must come from one prepare command"),
        ));
    }
    Ok(())
}

/// The parts' reports, each checked to be a task part, sorted by task index and checked to
/// be exactly parts 0..n of one prepare.
fn read_parts(opts: &MergeOptions) -> Result<Vec<(PathBuf, PreparedManifest)>> {
    let mut parts: Vec<(PathBuf, PreparedManifest)> = opts
        .parts
        .iter()
        .map(|p| Ok((p.clone(), PreparedManifest::read(p)?)))
        .collect::<Result<_>>()?;
    for (p, r) in &parts {
        let Some(task) = &r.task else {
            return Err(Error::dataset(
                p,
                "was not prepared with --num-tasks/--task-index, so its dropped tail is lost and an exact merge is impossible",
            ));
        };
        if task.count != parts.len() {
            return Err(Error::dataset(
                p,
                format!(
                    "is part {} of {}, but {} parts were given",
                    task.index,
                    task.count,
                    parts.len()
                ),
            ));
        }
    }
    parts.sort_by_key(|(_, r)| r.task.as_ref().map(|t| t.index));
    for (i, (p, r)) in parts.iter().enumerate() {
        if r.task.as_ref().map(|t| t.index) != Some(i) {
            return Err(Error::dataset(
                p,
                format!("part index {i} is missing or given twice"),
            ));
        }
    }
    let first = &parts[0].1;
    for (p, r) in &parts[1..] {
        same("mode", p, &r.mode, &first.mode)?;
        same("tokenizer", p, &r.tokenizer.sha256, &first.tokenizer.sha256)?;
        same("seq_len", p, &r.seq_len, &first.seq_len)?;
        same("eos", p, &r.eos_id, &first.eos_id)?;
        same("bos", p, &r.bos_id, &first.bos_id)?;
        same("columns", p, &r.columns, &first.columns)?;
        same("sft options", p, &r.sft, &first.sft)?;
        same("writer options", p, &r.writer, &first.writer)?;
        same("name", p, &r.name, &first.name)?;
        same("text field", p, &r.text_field, &first.text_field)?;
        let run = |r: &PreparedManifest| r.task.as_ref().map(|t| t.run_id.clone());
        same("prepare run (inputs or options)", p, &run(r), &run(first))?;
    }
    // A part that does not match its own records would merge into a wrong stream: each is opened
    // checked, and each shard is checked against its content hash as it is copied.
    for (p, r) in &parts {
        crate::dataset::open(p)?;
        check_tail(p, r)?;
    }
    Ok(parts)
}

/// A pretraining part's tail (the tokens after its last full sample, which the merge re-cuts into
/// the stream) against what its shards imply: every document token is either in a sample (its
/// sample count, checked against index.json, × seq_len) or in the tail, and every id is below the
/// vocabulary. An edited tail would shift or wrap the merged stream.
fn check_tail(p: &Path, r: &PreparedManifest) -> Result<()> {
    let Some(task) = &r.task else { return Ok(()) };
    if r.mode != ModeName::Pretrain {
        return Ok(());
    }
    let in_samples = r.counts.samples.saturating_mul(r.seq_len as u64);
    let expected = r.counts.document_tokens.checked_sub(in_samples);
    if expected != Some(task.tail.len() as u64) {
        return Err(Error::dataset(
            p.join(MANIFEST_FILE),
            format!(
                "task.tail holds {} tokens, but counts.document_tokens ({}) less {} samples × seq_len {} leaves {}: the part is damaged",
                task.tail.len(),
                r.counts.document_tokens,
                r.counts.samples,
                r.seq_len,
                expected.map_or("a negative count".to_string(), |n| n.to_string())
            ),
        ));
    }
    let vocab = r.tokenizer.vocab_size;
    if let Some((i, id)) = task
        .tail
        .iter()
        .enumerate()
        .find(|(_, &id)| u64::from(id) >= vocab)
    {
        return Err(Error::dataset(
            p.join(MANIFEST_FILE),
            format!("task.tail[{i}] is id {id} ≥ vocab size {vocab}: the part is damaged"),
        ));
    }
    Ok(())
}

/// Copies the parts' samples, in order, into one writer: pretraining tokens are re-cut through
/// one packer (with each part's tail), SFT samples are copied as they are.
struct Copier<'a> {
    opts: &'a MergeOptions,
    pretrain: bool,
    dtype: Dtype,
    packer: Packer,
    writer: MdsWriter,
    progress: Progress,
    copied: u64,
}

impl Copier<'_> {
    fn copy_part(&mut self, p: &Path, r: &PreparedManifest) -> Result<()> {
        check_cancel(self.opts.output.cancel())?;
        let ds = MdsDataset::open(p)?;
        let tok_col = match ds.shards.len() {
            0 => 0, // an empty part (more tasks than input files): nothing to copy
            _ => ds
                .column_index(if self.pretrain { "tokens" } else { "input_ids" })
                .ok_or_else(|| Error::dataset(p, "has no token column"))?,
        };
        for si in 0..ds.shards.len() {
            check_cancel(self.opts.output.cancel())?;
            let shard = ds.load_shard(si)?;
            for i in 0..shard.len() {
                let corrupt = || Error::dataset(p, format!("shard {si} sample {i} is corrupt"));
                let sample = shard.sample(i).ok_or_else(corrupt)?;
                if self.pretrain {
                    let cols = ds.split_sample(sample).ok_or_else(corrupt)?;
                    let ids = pack::bytes_to_ids(cols[tok_col], self.dtype);
                    self.packer.push(&ids, &mut self.writer)?;
                } else {
                    self.writer.write_encoded(sample)?;
                }
                self.copied += 1;
            }
            self.progress.update(self.copied, 0, 0);
        }
        if let Some(task) = &r.task {
            self.packer.push(&task.tail, &mut self.writer)?;
        }
        Ok(())
    }
}

/// Add a part's counts to the merged ones. Pretraining sample and token counts come from the
/// re-cut stream instead (see `merge`).
fn add_counts(counts: &mut Counts, c: &Counts, pretrain: bool) {
    counts.documents += c.documents;
    counts.document_tokens += c.document_tokens;
    counts.text_bytes += c.text_bytes;
    counts.truncated_samples += c.truncated_samples;
    counts.truncated_tokens += c.truncated_tokens;
    counts.label_tokens += c.label_tokens;
    // Unknown for one part (written by an older midmix): unknown for the whole.
    counts.special_in_text = counts
        .special_in_text
        .zip(c.special_in_text)
        .map(|(a, b)| a + b);
    if !pretrain {
        counts.tokens += c.tokens;
    }
    for (k, v) in &c.skipped {
        *counts.skipped.entry(k.clone()).or_default() += v;
    }
}

pub fn merge(opts: &MergeOptions) -> Result<PreparedManifest> {
    let started = Instant::now();
    if opts.parts.is_empty() {
        return Err(Error::Config("merge needs at least one part".into()));
    }
    crate::staging::check_not_an_input(&opts.output.out, &opts.parts)?;
    let parts = read_parts(opts)?;
    let first = parts[0].1.clone();

    let staged = StagedDir::new(&opts.output, Kind::Prepared)?;
    let columns: Vec<(&str, &str)> = first
        .columns
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let writer_opts = WriterOptions {
        compression: first.writer.compression.clone(),
        hashes: crate::mds::with_content_hash(&first.writer.hashes),
        size_limit: first.writer.size_limit,
    };
    let writer = MdsWriter::create_stoppable(
        staged.path(),
        &columns,
        &writer_opts,
        opts.output.cancel.clone(),
    )?;
    let dtype = Dtype::parse(&first.dtype)
        .ok_or_else(|| Error::dataset(&parts[0].0, format!("unknown dtype {}", first.dtype)))?;
    let total: u64 = parts.iter().map(|(_, r)| r.counts.samples).sum();
    let mut copier = Copier {
        opts,
        pretrain: first.mode == ModeName::Pretrain,
        dtype,
        packer: Packer::new(first.seq_len, dtype),
        writer,
        progress: Progress::new(opts.output.progress, total, "merge"),
        copied: 0,
    };

    let mut counts = Counts {
        special_in_text: Some(0),
        ..Default::default()
    };
    let mut inputs: Vec<InputInfo> = Vec::new();
    for (p, r) in &parts {
        copier.copy_part(p, r)?;
        add_counts(&mut counts, &r.counts, copier.pretrain);
        for input in &r.inputs {
            // A file split between tasks (`tasks::task_files`) is one input, as in a single run.
            match inputs.last_mut() {
                Some(last) if last.path == input.path && last.xxh3_128 == input.xxh3_128 => {
                    last.documents += input.documents
                }
                _ => inputs.push(input.clone()),
            }
        }
    }
    // Each input file once, also one that several tasks read parts of.
    counts.input_bytes = inputs.iter().map(|i| i.bytes).sum();
    let Copier {
        pretrain,
        packer,
        writer,
        progress,
        ..
    } = copier;
    if pretrain {
        counts.samples = packer.samples;
        counts.tokens = packer.samples * first.seq_len as u64;
        counts.dropped_tail_tokens = packer.tail().len() as u64;
    } else {
        counts.samples = writer.samples_written();
    }
    let shards = writer.finish()?;
    counts.output_bytes = crate::mds::stored_bytes(&shards);
    progress.finish();

    let elapsed = started.elapsed().as_secs_f64();
    let mut report = PreparedManifest {
        counts,
        inputs,
        task: None,
        writer: WriterInfo {
            hashes: writer_opts.hashes.clone(),
            ..first.writer.clone()
        },
        seal: Default::default(),
        run: RunInfo {
            elapsed_s: elapsed,
            threads: 1,
            text_mb_per_s: 0.0,
        },
        midmix_version: crate::VERSION.to_string(),
        ..first
    };
    report.write(staged.path())?;
    staged.commit(opts.output.cancel())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part's tail is checked against what its counts imply and against the vocabulary (the
    /// manifest's checksum also catches an edit; this holds for a part sealed after one).
    #[test]
    fn a_tail_that_does_not_match_its_counts_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("a.jsonl");
        std::fs::write(
            &input,
            "{\"text\": \"one two three four five six seven eight\"}\n",
        )
        .unwrap();
        let tok = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/pythia.json");
        let mut o = crate::prepare::PrepareOptions::new(
            "p",
            vec![input.display().to_string()],
            tok,
            4,
            tmp.path().join("part"),
        );
        (o.num_tasks, o.task_index) = (Some(1), Some(0));
        crate::prepare::prepare(&o).unwrap();
        let part = tmp.path().join("part");
        let r = PreparedManifest::read(&part).unwrap();
        assert!(!r.task.as_ref().unwrap().tail.is_empty());
        check_tail(&part, &r).unwrap();
        let mut shorter = r.clone();
        shorter.task.as_mut().unwrap().tail.pop();
        let err = check_tail(&part, &shorter).unwrap_err().to_string();
        assert!(err.contains("task.tail holds"), "{err}");
        let mut wrapped = r.clone();
        wrapped.task.as_mut().unwrap().tail[0] = 60_000;
        let err = check_tail(&part, &wrapped).unwrap_err().to_string();
        assert!(
            err.contains("task.tail[0] is id 60000 ≥ vocab size 50277"),
            "{err}"
        );
    }
}

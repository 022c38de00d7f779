//! Token-unigram statistics: how often each token id occurs, counted from raw inputs (tokenized
//! with the same readers and encoder as `prepare`) or from a prepared/mixed MDS dataset.
//!
//! Counts are u64 per id and mergeable by addition, so they are counted per batch or shard in
//! parallel and summed; the result does not depend on the thread count.

use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc};

use rayon::prelude::*;

use crate::error::{Error, Location, Result};
use crate::input::{self, InputFile, RawRecord, ReadOptions};
use crate::mds::{decode_ndarray, Dtype, Encoding, MdsDataset};
use crate::pool::{check_cancel, thread_pool};
use crate::record::{self, Extracted};
use crate::tokenize::{Encoder, EncoderChoice};

#[derive(Debug, Clone, Default)]
pub struct Unigram {
    pub counts: Vec<u64>,
    /// Documents (raw inputs) or samples (datasets) counted.
    pub documents: u64,
    pub tokens: u64,
    /// Records skipped as empty or unusable.
    pub skipped: u64,
}

impl Unigram {
    fn new(vocab: usize) -> Unigram {
        Unigram {
            counts: vec![0; vocab],
            ..Default::default()
        }
    }

    fn add_ids(&mut self, ids: &[u32]) {
        for &t in ids {
            let t = t as usize;
            if t >= self.counts.len() {
                self.counts.resize(t + 1, 0);
            }
            self.counts[t] += 1;
        }
        self.tokens += ids.len() as u64;
    }

    fn merge(mut self, other: Unigram) -> Unigram {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.documents += other.documents;
        self.tokens += other.tokens;
        self.skipped += other.skipped;
        self
    }
}

/// Counting raw files (Python's `midmix.options.UnigramFilesOptions`, converted by field name).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOptions {
    pub inputs: Vec<String>,
    pub tokenizer: PathBuf,
    pub encoder: EncoderChoice,
    /// Every listed field of a record is tokenized and counted (e.g. prompt and response).
    pub fields: Vec<String>,
    pub text_per_line: bool,
    /// Count a sample of this many documents, chosen by (seed, file, line/row) only.
    pub max_docs: Option<u64>,
    /// Count only the first N tokens of each field (512 reproduces the paper's script).
    pub max_tokens_per_doc: Option<usize>,
    pub seed: u64,
    pub threads: Option<usize>,
    /// Set to stop between batches with `Error::Interrupted`.
    #[serde(skip)]
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A record's sampling key: depends only on the seed and where the record is.
fn sample_key(seed: u64, file: &str, unit: &crate::error::Unit) -> u64 {
    let key = format!("midmix-sample\0{seed}\0{file}\0{unit:?}");
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// Counts raw records batch by batch into one total.
struct RawCounter<'a> {
    opts: &'a RawOptions,
    pool: rayon::ThreadPool,
    enc: Arc<Encoder>,
    files: Vec<InputFile>,
    vocab: usize,
    total: Unigram,
}

impl RawCounter<'_> {
    /// Parse and tokenize one batch of `file`'s records in parallel and add its counts.
    fn count_batch(&mut self, file: usize, records: Vec<RawRecord>) -> Result<()> {
        check_cancel(self.opts.cancel.as_deref())?;
        let (opts, pool, vocab) = (self.opts, &self.pool, self.vocab);
        let label = &self.files[file].label;
        let parsed: Vec<(crate::error::Unit, Extracted)> = pool.install(|| {
            records
                .into_par_iter()
                .map(|r| (r.unit, record::extract(r.payload, &opts.fields)))
                .collect()
        });
        let mut texts: Vec<&str> = Vec::new();
        for (unit, p) in &parsed {
            match p {
                Extracted::Fields(f) if f.iter().all(|s| s.is_empty()) => self.total.skipped += 1,
                Extracted::Fields(f) => {
                    self.total.documents += 1;
                    texts.extend(f.iter().map(String::as_str));
                }
                Extracted::Rejected(reason, _) if reason.is_benign() => self.total.skipped += 1,
                Extracted::Rejected(_, msg) => {
                    return Err(Error::BadRecord {
                        loc: Location {
                            path: label.clone(),
                            unit: *unit,
                        },
                        msg: msg.clone(),
                    })
                }
            }
        }
        let ids = pool.install(|| self.enc.encode_batch(&texts))?;
        let part = pool.install(|| {
            ids.par_chunks(256)
                .map(|chunk| {
                    let mut u = Unigram::new(vocab);
                    for doc in chunk {
                        let n = opts
                            .max_tokens_per_doc
                            .map_or(doc.len(), |m| m.min(doc.len()));
                        u.add_ids(&doc[..n]);
                    }
                    u
                })
                .reduce(|| Unigram::new(vocab), Unigram::merge)
        });
        self.total = std::mem::take(&mut self.total).merge(part);
        Ok(())
    }

    /// `--max-docs k`: choose the records first (the k smallest keys), then count only those,
    /// in input order.
    fn count_sample(
        &mut self,
        k: u64,
        read_opts: &ReadOptions,
        consumed: &Arc<AtomicU64>,
    ) -> Result<()> {
        let (files, opts) = (&self.files, self.opts);
        let cancel = opts.cancel.as_deref();
        let mut heap: BinaryHeap<(u64, usize, u64)> = BinaryHeap::new();
        let mut kept: std::collections::HashMap<(usize, u64), RawRecord> = Default::default();
        let mut seq = 0u64;
        input::read_all(files, read_opts, consumed, &mut |b| {
            if check_cancel(cancel).is_err() {
                return false;
            }
            for rec in b.records {
                let key = sample_key(opts.seed, &files[b.file].label, &rec.unit);
                seq += 1;
                if (heap.len() as u64) < k {
                    heap.push((key, b.file, seq));
                    kept.insert((b.file, seq), rec);
                } else if heap.peek().is_some_and(|top| key < top.0) {
                    if let Some((_, f, s)) = heap.pop() {
                        kept.remove(&(f, s));
                    }
                    heap.push((key, b.file, seq));
                    kept.insert((b.file, seq), rec);
                }
            }
            true
        })?;
        check_cancel(cancel)?;
        let mut chosen: Vec<((usize, u64), RawRecord)> = kept.into_iter().collect();
        chosen.sort_by_key(|(k, _)| *k);
        let mut batch: Vec<RawRecord> = Vec::new();
        let mut batch_file = usize::MAX;
        for ((f, _), rec) in chosen {
            if f != batch_file && !batch.is_empty() {
                self.count_batch(batch_file, std::mem::take(&mut batch))?;
            }
            batch_file = f;
            batch.push(rec);
        }
        if !batch.is_empty() {
            self.count_batch(batch_file, batch)?;
        }
        Ok(())
    }

    /// Every record: one reader thread, batches counted as they arrive.
    fn count_stream(&mut self, read_opts: ReadOptions, consumed: Arc<AtomicU64>) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<input::RawBatch>(2);
        let reader_files = self.files.clone();
        let reader = std::thread::spawn(move || {
            input::read_all(&reader_files, &read_opts, &consumed, &mut |b| {
                tx.send(b).is_ok()
            })
        });
        let mut result = Ok(());
        for b in rx.iter() {
            result = self.count_batch(b.file, b.records);
            if result.is_err() {
                break;
            }
        }
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| Error::Config("input reader thread panicked".into()))?;
        result?;
        read.map(|_| ())
    }
}

/// Count token ids over raw inputs. Bad records are errors naming file and line/row; empty
/// documents are skipped and counted.
pub fn count_raw(opts: &RawOptions) -> Result<Unigram> {
    let pool = thread_pool(opts.threads)?;
    let enc = Encoder::shared(&opts.tokenizer, opts.encoder)?;
    let files = input::discover(&opts.inputs)?;
    let read_opts = ReadOptions {
        fields: opts.fields.clone(),
        text_per_line: opts.text_per_line,
    };
    let vocab = enc.vocab_size as usize;
    let consumed = Arc::new(AtomicU64::new(0));
    let mut counter = RawCounter {
        opts,
        pool,
        enc,
        files,
        vocab,
        total: Unigram::new(vocab),
    };
    match opts.max_docs {
        Some(k) => counter.count_sample(k, &read_opts, &consumed)?,
        None => counter.count_stream(read_opts, consumed)?,
    }
    Ok(counter.total)
}

/// How many ids a dataset's counts hold: the tokenizer's `vocab_size` from its `midmix.json`
/// (prepared datasets and mixes both record it), else all 65,536 values of uint16. Wider ids
/// without a manifest are refused: sizing by the largest id seen lets one corrupt id allocate
/// gigabytes.
fn dataset_vocab(dir: &Path, enc: &Encoding) -> Result<usize> {
    if let Some(manifest) = crate::manifest::Manifest::read(dir)? {
        let v = manifest.tokenizer().vocab_size;
        return usize::try_from(v)
            .ok()
            .filter(|&v| v > 0 && v <= 1 << 32)
            .ok_or_else(|| {
                Error::dataset(
                    dir.join(crate::manifest::MANIFEST_FILE),
                    format!("tokenizer.vocab_size {v} is out of range"),
                )
            });
    }
    match enc {
        Encoding::NdArray {
            dtype: Some(Dtype::U16),
            ..
        } => Ok(1 << 16),
        _ => Err(Error::dataset(
            dir,
            "has no midmix.json with tokenizer.vocab_size, and its token dtype is wider than uint16: cannot size the counts",
        )),
    }
}

/// Add the ids of one sample's `values` (little-endian `dtype`). Counts are sized by the
/// vocabulary; an id past it is damage, not a reason to grow them (one stray u32 would cost
/// gigabytes), so it is the error `bad(id)`.
fn add_sample(
    u: &mut Unigram,
    dtype: Dtype,
    values: &[u8],
    bad: &dyn Fn(u32) -> Error,
) -> Result<()> {
    let mut add = |t: u32| -> Result<()> {
        match u.counts.get_mut(t as usize) {
            Some(slot) => {
                *slot += 1;
                Ok(())
            }
            None => Err(bad(t)),
        }
    };
    let n = match dtype {
        Dtype::U16 => {
            for c in values.chunks_exact(2) {
                add(u16::from_le_bytes([c[0], c[1]]) as u32)?;
            }
            values.len() / 2
        }
        _ => {
            for c in values.chunks_exact(4) {
                add(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))?;
            }
            values.len() / 4
        }
    };
    u.tokens += n as u64;
    u.documents += 1;
    Ok(())
}

/// Positions of an index mix counted per task.
const POSITIONS_PER_TASK: u64 = 1 << 14;

/// Count the tokens an index mix realizes, position by position through its sources.
pub fn count_index_mix(
    mix: &crate::mixindex::IndexedMix,
    pool: &rayon::ThreadPool,
    cancel: Option<&AtomicBool>,
) -> Result<Unigram> {
    let dir = mix.dir.as_path();
    let enc = Encoding::parse(&mix.report.columns["tokens"])?;
    let dtype = match enc {
        Encoding::NdArray { dtype: Some(d), .. } => d,
        _ => return Err(Error::dataset(dir, "tokens column is not an ndarray")),
    };
    let vocab = dataset_vocab(dir, &enc)?;
    let n = mix.num_samples();
    pool.install(|| {
        (0..n.div_ceil(POSITIONS_PER_TASK))
            .into_par_iter()
            .map(|task| -> Result<Unigram> {
                check_cancel(cancel)?;
                let mut u = Unigram::new(vocab);
                let lo = task * POSITIONS_PER_TASK;
                for k in lo..(lo + POSITIONS_PER_TASK).min(n) {
                    let (s, tokens) = mix.sample(k)?.ok_or_else(|| {
                        Error::dataset(dir, format!("index position {k} names no sample of its sources: damaged index"))
                    })?;
                    let bad = |t: u32| {
                        let (_, idx) = mix.pick(k).unwrap_or_default();
                        Error::dataset(
                            dir,
                            format!(
                                "position {k} (source '{}' sample {idx}): id {t} ≥ vocab size {vocab}: corrupt source shard?",
                                mix.report.sources[s as usize]
                            ),
                        )
                    };
                    add_sample(&mut u, dtype, tokens, &bad)?;
                }
                Ok(u)
            })
            .try_reduce(|| Unigram::new(vocab), |a, b| Ok(a.merge(b)))
    })
}

/// Count token ids of a prepared or mixed dataset (`tokens`, or SFT `input_ids`), without
/// re-tokenizing; an index mix is counted through its sources, as training reads it. `exclude`
/// ids (the EOS/BOS `prepare` inserted) are not counted. Setting `cancel` stops it between
/// shards with `Error::Interrupted`.
pub fn count_dataset(
    dir: &Path,
    exclude: &[u32],
    threads: Option<usize>,
    cancel: Option<&AtomicBool>,
) -> Result<Unigram> {
    let pool = thread_pool(threads)?;
    let opened = crate::dataset::open(dir)?;
    let counted = match opened.mds {
        None => count_index_mix(
            &crate::mixindex::IndexedMix::open_private(dir)?,
            &pool,
            cancel,
        )?,
        Some(ds) => count_shards(dir, ds, &pool, cancel)?,
    };
    let mut u = counted;
    for &t in exclude {
        if let Some(c) = u.counts.get_mut(t as usize) {
            u.tokens -= *c;
            *c = 0;
        }
    }
    Ok(u)
}

/// Count an MDS dataset (opened and checked) shard by shard.
fn count_shards(
    dir: &Path,
    ds: MdsDataset,
    pool: &rayon::ThreadPool,
    cancel: Option<&AtomicBool>,
) -> Result<Unigram> {
    let col = ds
        .column_index("tokens")
        .or_else(|| ds.column_index("input_ids"))
        .ok_or_else(|| {
            Error::dataset(
                dir,
                if ds.shards.is_empty() {
                    "has no samples (its prepare wrote none: see its counts.skipped)"
                } else {
                    "has no tokens or input_ids column"
                },
            )
        })?;
    let enc = ds.columns[col].encoding.clone();
    let vocab = dataset_vocab(dir, &enc)?;
    pool.install(|| {
        (0..ds.shards.len())
            .into_par_iter()
            .map(|si| -> Result<Unigram> {
                check_cancel(cancel)?;
                let shard = ds.load_shard(si)?;
                let name = &ds.shards[si].raw_basename;
                let mut u = Unigram::new(vocab);
                for i in 0..shard.len() {
                    let bad = || Error::dataset(dir, format!("{name} sample {i} is corrupt"));
                    let cols = ds
                        .split_sample(shard.sample(i).ok_or_else(bad)?)
                        .ok_or_else(bad)?;
                    let (dtype, _, values) = decode_ndarray(&enc, cols[col]).ok_or_else(bad)?;
                    let bad_id = |t: u32| {
                        Error::dataset(
                            dir,
                            format!(
                                "{name} sample {i}: id {t} ≥ vocab size {vocab}: corrupt shard?"
                            ),
                        )
                    };
                    add_sample(&mut u, dtype, values, &bad_id)?;
                }
                Ok(u)
            })
            .try_reduce(|| Unigram::new(vocab), |a, b| Ok(a.merge(b)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_by_addition() {
        let mut a = Unigram::new(4);
        a.add_ids(&[0, 1, 1, 3]);
        let mut b = Unigram::new(2);
        b.add_ids(&[1, 5]);
        let m = a.merge(b);
        assert_eq!(m.counts, vec![1, 3, 0, 1, 0, 1]);
        assert_eq!(m.tokens, 6);
    }

    fn tokenizer() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json")
    }

    fn raw_options(input: &Path, max_docs: Option<u64>, cancel: bool) -> RawOptions {
        RawOptions {
            inputs: vec![input.display().to_string()],
            tokenizer: tokenizer(),
            encoder: EncoderChoice::Auto,
            fields: vec!["text".into()],
            text_per_line: false,
            max_docs,
            max_tokens_per_doc: None,
            seed: 0,
            threads: Some(2),
            cancel: Some(Arc::new(AtomicBool::new(cancel))),
        }
    }

    #[test]
    fn count_raw_stops_when_cancelled() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("a.jsonl");
        std::fs::write(&input, "{\"text\": \"one two\"}\n{\"text\": \"three\"}\n").unwrap();
        for max_docs in [None, Some(1)] {
            let u = count_raw(&raw_options(&input, max_docs, false)).unwrap();
            assert_eq!(u.documents, max_docs.unwrap_or(2));
            assert!(matches!(
                count_raw(&raw_options(&input, max_docs, true)),
                Err(Error::Interrupted)
            ));
        }
    }

    #[test]
    fn count_dataset_refuses_ids_past_the_vocab_instead_of_growing() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("a.jsonl");
        std::fs::write(
            &input,
            "{\"text\": \"one two three four five six seven\"}\n",
        )
        .unwrap();
        let dir = tmp.path().join("ds");
        let o = crate::prepare::PrepareOptions::new(
            "d",
            vec![input.display().to_string()],
            tokenizer(),
            4,
            dir.clone(),
        );
        crate::prepare::prepare(&o).unwrap();
        let u = count_dataset(&dir, &[], Some(1), None).unwrap();
        // Sized by the tokenizer's vocabulary (from midmix.json), not by the dtype.
        assert_eq!(u.counts.len(), 50277);
        // Hand-corrupt the last token of the shard: 0xffff is a uint16 but not a Pythia id.
        let shard = dir.join("shard.00000.mds");
        let mut bytes = std::fs::read(&shard).unwrap();
        let n = bytes.len();
        bytes[n - 2..].copy_from_slice(&[0xff, 0xff]);
        std::fs::write(&shard, bytes).unwrap();
        // The shard no longer matches its recorded content hash: refused before any id is counted.
        match count_dataset(&dir, &[], Some(1), None) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("shard.00000.mds: its bytes hash to xxh3_64 "),
                    "{msg}"
                );
            }
            other => panic!(
                "expected a content-hash error, got {:?}",
                other.map(|u| u.counts.len())
            ),
        }

        // uint32 ids: one huge id is an error, never a 4 GB resize.
        use crate::mds::{ColumnValue, MdsWriter, WriterOptions};
        let dir = tmp.path().join("wide");
        let mut w = MdsWriter::create(
            &dir,
            &[("tokens", "ndarray:uint32:2")],
            &WriterOptions {
                hashes: vec![crate::mds::CONTENT_HASH.into()],
                ..Default::default()
            },
        )
        .unwrap();
        let ids: Vec<u8> = [1u32, 500_000_000]
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        w.write(&[ColumnValue::Raw(&ids)]).unwrap();
        w.finish().unwrap();
        let err = count_dataset(&dir, &[], Some(1), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot size the counts"), "{err}");
        use crate::manifest::{Counts, PreparedManifest, TokenizerInfo};
        PreparedManifest {
            tokenizer: TokenizerInfo {
                vocab_size: 100000,
                ..Default::default()
            },
            counts: Counts {
                samples: 1,
                ..Default::default()
            },
            columns: [("tokens".to_string(), "ndarray:uint32:2".to_string())].into(),
            ..Default::default()
        }
        .write(&dir)
        .unwrap();
        let err = count_dataset(&dir, &[], Some(1), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "shard.00000.mds sample 0: id 500000000 ≥ vocab size 100000: corrupt shard?"
            ),
            "{err}"
        );
    }

    #[test]
    fn count_dataset_stops_when_cancelled() {
        use crate::mds::{ColumnValue, MdsWriter, WriterOptions};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ds");
        let mut w = MdsWriter::create(
            &dir,
            &[("tokens", "ndarray:uint16:2")],
            &WriterOptions::default(),
        )
        .unwrap();
        w.write(&[ColumnValue::Raw(&[1, 0, 2, 0])]).unwrap();
        w.finish().unwrap();
        let u = count_dataset(&dir, &[], Some(1), None).unwrap();
        assert_eq!(
            (u.documents, u.tokens, u.counts[1], u.counts[2]),
            (1, 2, 1, 1)
        );
        let cancel = AtomicBool::new(true);
        assert!(matches!(
            count_dataset(&dir, &[], Some(1), Some(&cancel)),
            Err(Error::Interrupted)
        ));
    }
}

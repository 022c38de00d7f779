//! Materialized mixes: the picked samples written as MDS shards (`build-mix --materialize`, and
//! `export` of an index mix), copying token bytes without decoding them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::{Form, Kind, MixManifest};
use crate::mds::{write_index, MappedDataset, ShardFormat, WriterOptions};
use crate::mixindex::IndexedMix;
use crate::pool::{check_cancel, thread_pool};
use crate::progress::Progress;
use crate::staging::{OutputOptions, StagedDir};

/// Where and how materialized shards are written.
pub(super) struct ShardWriting<'a> {
    pub dir: &'a Path,
    pub output: &'a OutputOptions,
}

/// Write the picked samples as shards in parallel (each holds a fixed count of fixed-size
/// samples, so they are independent), then `index.json`.
pub(super) fn write_shards(
    opts: &ShardWriting,
    pool: &rayon::ThreadPool,
    sources: &[MappedDataset],
    source_dirs: &[PathBuf],
    picks: &[(u8, u32)],
    tokens_spec: &str,
) -> Result<()> {
    let dir = opts.dir;
    let total = picks.len() as u64;
    let format = ShardFormat::new(
        &[("source", "uint8"), ("tokens", tokens_spec)],
        &WriterOptions {
            compression: None,
            hashes: vec![crate::mds::CONTENT_HASH.to_string()],
            size_limit: opts.output.size_limit,
        },
    )?;
    let sample_size = 1 + sources[0]
        .dataset()
        .columns
        .first()
        .and_then(|c| c.encoding.fixed_size())
        .ok_or_else(|| Error::dataset(&source_dirs[0], "tokens column is not fixed-size"))?;
    let per_shard = format.samples_per_shard(sample_size).min(total);
    let n_shards = total.div_ceil(per_shard) as usize;
    let progress = Progress::new(
        opts.output.progress,
        total * sample_size as u64,
        "build-mix",
    );
    let written = std::sync::atomic::AtomicU64::new(0);
    let shards: Vec<serde_json::Value> = pool.install(|| {
        (0..n_shards)
            .into_par_iter()
            .map(|si| {
                check_cancel(opts.output.cancel())?;
                let lo = si as u64 * per_shard;
                let hi = (lo + per_shard).min(total);
                let mut fill = |w: &mut dyn std::io::Write| -> Result<()> {
                    for &(s, idx) in &picks[lo as usize..hi as usize] {
                        let bytes = sources[s as usize]
                            .sample(idx as u64)?
                            .filter(|b| b.len() + 1 == sample_size)
                            .ok_or_else(|| {
                                let src = &source_dirs[s as usize];
                                Error::dataset(src, format!("sample {idx} is missing or corrupt"))
                            })?;
                        w.write_all(&[s])
                            .and_then(|_| w.write_all(bytes))
                            .map_err(|e| Error::io(dir, e))?;
                    }
                    Ok(())
                };
                let n = (hi - lo) as usize;
                let entry = format.write_fixed_shard(dir, si, n, sample_size, &mut fill)?;
                let bytes = (n * sample_size) as u64;
                let done = written.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                progress.update(done + bytes, 0, 0);
                Ok(entry)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    write_index(dir, &shards)?;
    progress.finish();
    Ok(())
}

/// `midmix export` (Python's `midmix.options.ExportOptions`, converted by field name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportOptions {
    pub mix: PathBuf,
    pub output: OutputOptions,
}

/// `midmix export`: write an index mix as MDS shards, the same bytes `build-mix --materialize`
/// writes for the same inputs, with the same manifest (form `mds`).
pub fn export(opts: &ExportOptions) -> Result<MixManifest> {
    let started = Instant::now();
    let pool = thread_pool(opts.output.threads)?;
    let manifest = IndexedMix::manifest(&opts.mix)?.ok_or_else(|| {
        Error::dataset(
            &opts.mix,
            "is not an index mix (only `build-mix` output without --materialize is exported)",
        )
    })?;
    let source_dirs: Vec<PathBuf> = manifest
        .0
        .source_info
        .iter()
        .map(|s| PathBuf::from(&s.path))
        .collect();
    let inputs: Vec<PathBuf> = source_dirs
        .iter()
        .cloned()
        .chain([opts.mix.clone()])
        .collect();
    crate::staging::check_not_an_input(&opts.output.out, &inputs)?;
    let staged = StagedDir::new(&opts.output, Kind::Mix)?;
    let cache = staged.path().join(".source-cache");
    let mix = IndexedMix::open_manifest(&opts.mix, manifest, &cache)?;
    let picks = mix.picks()?;
    let writing = ShardWriting {
        dir: staged.path(),
        output: &opts.output,
    };
    let spec = &mix.report.columns["tokens"];
    write_shards(&writing, &pool, mix.sources(), &source_dirs, &picks, spec)?;
    let mut report = mix.report.clone();
    drop(mix);
    if cache.exists() {
        std::fs::remove_dir_all(&cache).map_err(|e| Error::io(&cache, e))?;
    }
    report.form = Form::Mds;
    report.index = None;
    report.elapsed_s = started.elapsed().as_secs_f64();
    // The export's fingerprint is its index mix's (the same samples in the same order): it is
    // computed from the same facts; its shards are pinned by its own index.json.
    report.seal.index_xxh3_128 = None;
    report.write(staged.path())?;
    staged.commit(opts.output.cancel())?;
    Ok(report)
}

//! The sources of a mix: their manifests checked to agree, mapped for reading, and recorded.

use std::path::Path;

use super::MixOptions;
use crate::error::{Error, Result};
use crate::manifest::{ModeName, PreparedManifest, SourceInfo};
use crate::mds::MappedDataset;
use crate::pool::check_cancel;

/// The sources' reports, checked to agree on tokenizer, seq_len and token column (mixes take
/// pretraining data only). Returns them with the shared `tokens` column spec.
pub(super) fn read_sources(opts: &MixOptions) -> Result<(Vec<PreparedManifest>, String)> {
    let reports: Vec<PreparedManifest> = opts
        .sources
        .iter()
        .map(|(_, d)| PreparedManifest::read(d))
        .collect::<Result<_>>()?;
    let first = &reports[0];
    for ((name, dir), r) in opts.sources.iter().zip(&reports) {
        // An empty source cannot be sampled in any exhaust mode (and would divide by zero
        // when passes are counted), so refuse it here rather than deep in planning.
        if r.counts.samples == 0 {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' has no samples; remove it from the mix or prepare more data"
                ),
            ));
        }
        if r.mode != ModeName::Pretrain {
            return Err(Error::dataset(
                dir,
                format!("source '{name}' is an SFT dataset; mixes take pretraining data"),
            ));
        }
        if r.tokenizer.sha256 != first.tokenizer.sha256 {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' was tokenized with {} (sha256 {}…), '{}' with {} (sha256 {}…): sources must share a tokenizer",
                    r.tokenizer.path,
                    &r.tokenizer.sha256[..12],
                    opts.sources[0].0,
                    first.tokenizer.path,
                    &first.tokenizer.sha256[..12]
                ),
            ));
        }
        if r.seq_len != first.seq_len || r.columns != first.columns {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' has seq_len {} ({:?}), '{}' has {} ({:?}): sources must share seq_len and dtype",
                    r.seq_len, r.columns, opts.sources[0].0, first.seq_len, first.columns
                ),
            ));
        }
    }
    // A source that does not match its own records is damaged: refused before planning (its
    // shards' contents are checked as they are read, by `open_sources`' readers).
    for (_, dir) in &opts.sources {
        crate::dataset::open(dir)?;
    }
    let tokens_spec = first
        .columns
        .get("tokens")
        .cloned()
        .ok_or_else(|| Error::dataset(&opts.sources[0].1, "has no tokens column"))?;
    Ok((reports, tokens_spec))
}

/// Map the sources for reading (compressed shards into `cache`); refuses one whose index lists
/// no samples, whatever its midmix.json says.
pub(super) fn open_sources(opts: &MixOptions, cache: &Path) -> Result<Vec<MappedDataset>> {
    let sources: Vec<MappedDataset> = opts
        .sources
        .iter()
        .map(|(_, d)| {
            check_cancel(opts.output.cancel())?;
            crate::dataset::open_mapped(d, cache)
        })
        .collect::<Result<_>>()?;
    for ((name, dir), s) in opts.sources.iter().zip(&sources) {
        if s.num_samples() == 0 {
            return Err(Error::dataset(
                dir,
                format!("source '{name}' has no samples (its index.json lists none)"),
            ));
        }
        // Index mixes store the sample as a u32 (as the permutations do).
        if s.num_samples() > u32::MAX as u64 {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' has more than 2^32 samples; split it into several sources"
                ),
            ));
        }
    }
    Ok(sources)
}

pub(super) fn source_infos(
    opts: &MixOptions,
    reports: &[PreparedManifest],
    avail: &[u64],
    tok: u64,
) -> Result<Vec<SourceInfo>> {
    opts.sources
        .iter()
        .zip(reports)
        .zip(avail)
        .map(|(((name, dir), r), a)| {
            let path = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
            Ok(SourceInfo {
                name: name.clone(),
                path: path.display().to_string(),
                samples: *a,
                tokens: a * tok,
                index_xxh3_128: crate::manifest::file_xxh3_128(&dir.join(crate::mds::INDEX_FILE))?,
                tokenizer_sha256: r.tokenizer.sha256.clone(),
                fingerprint: r.seal.fingerprint.clone(),
            })
        })
        .collect()
}

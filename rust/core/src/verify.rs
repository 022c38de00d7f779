//! Checking a dataset against what it records about itself before it is used: the sample
//! count of `midmix.json` against `index.json`, each shard's size on disk and its recorded
//! hashes against `index.json`. A mismatch means a shard was lost, truncated, corrupted or its
//! index edited. `verify` runs every check (for a future `midmix verify`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::mds::{hash_hex, MdsDataset};

/// Check `ds` (opened from `dir`) against `samples`, the count its `midmix.json` records.
/// `what` names it in errors (e.g. `source 'c4'`).
pub fn check_counts_and_sizes(what: &str, dir: &Path, ds: &MdsDataset, samples: u64) -> Result<()> {
    let listed = ds.num_samples();
    if listed != samples {
        return Err(Error::dataset(
            dir,
            format!("{what}: index.json lists {listed} samples but midmix.json counts {samples}"),
        ));
    }
    for sh in &ds.shards {
        let files = [
            (Some(&sh.raw_basename), sh.raw_bytes, "raw_data"),
            (sh.zip_basename.as_ref(), sh.zip_bytes, "zip_data"),
        ];
        let mut found = false;
        for (name, recorded, field) in files {
            let Some(name) = name else { continue };
            let path = dir.join(name);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            found = true;
            if let Some(recorded) = recorded {
                if meta.len() != recorded {
                    return Err(Error::dataset(
                        dir,
                        format!(
                            "{what}: shard {name} is {} bytes on disk but index.json records {recorded} ({field}.bytes)",
                            meta.len()
                        ),
                    ));
                }
            }
        }
        if !found {
            return Err(Error::dataset(
                dir,
                format!("{what}: shard {} is missing", sh.raw_basename),
            ));
        }
    }
    Ok(())
}

/// Recompute every hash `index.json` records for `ds`'s shard files (the `--hashes` of
/// `prepare`) and compare. Algorithms midmix cannot compute are skipped. Returns how many
/// hashes were checked.
pub fn check_hashes(what: &str, dir: &Path, ds: &MdsDataset) -> Result<u64> {
    let mut checked = 0;
    for sh in &ds.shards {
        let files = [
            (Some(&sh.raw_basename), &sh.raw_hashes),
            (sh.zip_basename.as_ref(), &sh.zip_hashes),
        ];
        for (name, hashes) in files {
            let Some(name) = name else { continue };
            if hashes.is_empty() {
                continue;
            }
            let path = dir.join(name);
            // A shard kept only compressed has no raw file to hash; its zip file is checked.
            if !path.exists() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            for (algo, recorded) in hashes {
                let Some(actual) = hash_hex(algo, &bytes) else {
                    continue;
                };
                if !actual.eq_ignore_ascii_case(recorded) {
                    return Err(Error::dataset(
                        dir,
                        format!(
                            "{what}: shard {name} fails its {algo} check: index.json records {recorded}, the file hashes to {actual}"
                        ),
                    ));
                }
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// What `verify` checked.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// `prepared` or `mix`, from `midmix.json`.
    pub kind: String,
    pub samples: u64,
    pub shards: usize,
    /// Hashes recomputed and found equal.
    pub hashes_checked: u64,
    /// Token ids found below the vocabulary size (0 for SFT datasets, whose ids are not scanned).
    pub tokens_checked: u64,
    pub vocab_size: u64,
}

/// Check a prepared dataset or a mix (of either form) against its own records: the sample count of
/// `midmix.json` against `index.json`, each shard's size and recorded hashes, and (pretraining
/// data and mixes) that every token id is below the tokenizer's vocabulary size. The first
/// problem found is the error, naming the shard.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let (manifest, json) = crate::report::read_json(dir)?.ok_or_else(|| {
        Error::dataset(
            dir,
            "has no midmix.json: only midmix datasets can be verified",
        )
    })?;
    let field = |v: &serde_json::Value, name: &str| {
        v.as_u64().ok_or_else(|| {
            Error::dataset(&manifest, format!("has no {name} (not a midmix manifest?)"))
        })
    };
    let kind = json["kind"].as_str().unwrap_or_default().to_string();
    let (samples, scan_tokens) = match kind.as_str() {
        "mix" => (field(&json["total_samples"], "total_samples")?, true),
        "prepared" => (
            field(&json["counts"]["samples"], "counts.samples")?,
            json["mode"] == "pretrain",
        ),
        k => {
            return Err(Error::dataset(
                &manifest,
                format!("kind '{k}' is neither 'prepared' nor 'mix'"),
            ))
        }
    };
    let vocab_size = field(&json["tokenizer"]["vocab_size"], "tokenizer.vocab_size")?;
    if kind == "mix" && json["form"] == "index" {
        return verify_index_mix(dir, samples, vocab_size);
    }
    let ds = crate::dataset::open(dir)?
        .mds
        .ok_or_else(|| Error::dataset(dir, "has no index.json"))?;
    let hashes_checked = check_hashes("dataset", dir, &ds)?;
    // Counting refuses any id at or past the vocabulary size, naming shard and sample.
    let tokens_checked = if scan_tokens {
        crate::unigram::count_dataset(dir, &[], None, None)?.tokens
    } else {
        0
    };
    Ok(VerifyReport {
        kind,
        samples,
        shards: ds.shards.len(),
        hashes_checked,
        tokens_checked,
        vocab_size,
    })
}

/// An index mix: every source as its own dataset (fingerprint, sizes, hashes), the index files'
/// hashes, every position naming a sample that exists, the realized count of each source against
/// `samples_per_source`, and every realized token id against the vocabulary.
fn verify_index_mix(dir: &Path, samples: u64, vocab_size: u64) -> Result<VerifyReport> {
    crate::dataset::open(dir)?;
    let mix = crate::mixindex::IndexedMix::open_private(dir)?; // (checks the index files' hashes)
    let mut hashes_checked = 2;
    let mut shards = 0;
    for (info, source) in mix.report.source_info.iter().zip(mix.sources()) {
        let what = format!("source '{}'", info.name);
        hashes_checked += check_hashes(&what, Path::new(&info.path), source.dataset())?;
        shards += source.dataset().shards.len();
    }
    let mut used = vec![0u64; mix.sources().len()];
    for (s, _) in mix.picks()? {
        used[s as usize] += 1;
    }
    for (name, got) in mix.report.sources.iter().zip(&used) {
        let recorded = mix
            .report
            .samples_per_source
            .get(name)
            .copied()
            .unwrap_or(0);
        if *got != recorded {
            return Err(Error::dataset(
                dir,
                format!(
                    "the index takes {got} samples of '{name}' but midmix.json records {recorded}"
                ),
            ));
        }
    }
    let pool = crate::pool::thread_pool(None)?;
    let tokens_checked = crate::unigram::count_index_mix(&mix, &pool, None)?.tokens;
    Ok(VerifyReport {
        kind: "mix".into(),
        samples,
        shards,
        hashes_checked,
        tokens_checked,
        vocab_size,
    })
}

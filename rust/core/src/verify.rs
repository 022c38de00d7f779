//! `midmix verify`: every check a dataset's records allow, reading every byte: the validated open
//! (`dataset::open`), every recorded shard hash (`mds::integrity`), and every token id against the
//! vocabulary.

use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::{Kind, Manifest, ModeName};
use crate::mds::integrity::check_hashes;

/// What `verify` checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub kind: Kind,
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
    let opened = crate::dataset::open(dir)?;
    let manifest = opened.manifest.as_ref().ok_or_else(|| {
        Error::dataset(
            dir,
            "has no midmix.json: only midmix datasets can be verified",
        )
    })?;
    let kind = manifest.kind();
    let samples = manifest.samples();
    let scan_tokens = match manifest {
        Manifest::Prepared(m) => m.mode == ModeName::Pretrain,
        Manifest::Mix(_) => true,
    };
    let vocab_size = manifest.tokenizer().vocab_size;
    if manifest.is_index_mix() {
        return verify_index_mix(dir, samples, vocab_size);
    }
    let ds = opened
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
        kind: Kind::Mix,
        samples,
        shards,
        hashes_checked,
        tokens_checked,
        vocab_size,
    })
}

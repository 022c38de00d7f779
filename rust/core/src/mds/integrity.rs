//! A dataset's shards against its `index.json`: sample counts, sizes on disk and recorded hashes.
//! A mismatch means a shard was lost, truncated, corrupted or its index edited.

use std::path::Path;

use super::{hash_hex, MdsDataset};
use crate::error::{Error, Result};

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

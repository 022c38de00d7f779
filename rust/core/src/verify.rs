//! Checking a dataset against what it records about itself before it is used: the sample
//! count of `midmix.json` against `index.json`, and each shard's size on disk against
//! `index.json`. A mismatch means a shard was lost, truncated or its index edited.

use std::path::Path;

use crate::error::{Error, Result};
use crate::mds::MdsDataset;

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

//! The one validated open. Every command and reader opens a dataset or a mix through `open`, which
//! checks, without reading any shard, everything a dataset records about itself:
//! - `midmix.json` against its checksum (`report::read_json`);
//! - `index.json` against the hash `midmix.json` records of it, and its shard entries against
//!   `midmix.json`: the sample count, the columns and their encodings, a content hash for every shard;
//! - every shard file's size on disk against `index.json`.
//!
//! Shard contents are checked against their content hashes the first time a process maps them
//! (`mds::MappedDataset`); an index mix checks its index files and its sources' fingerprints
//! (`mixindex::IndexedMix`). `verify` reads everything.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::mds::{MdsDataset, CONTENT_HASH, INDEX_FILE};

/// A dataset directory after `open`'s checks.
pub struct Opened {
    pub dir: PathBuf,
    /// `midmix.json`, checksum checked; None for MDS written by something else.
    pub manifest: Option<Value>,
    /// The MDS listing; None for an index mix (its samples live in its sources).
    pub mds: Option<MdsDataset>,
}

impl Opened {
    /// Whether this is an index mix (a manifest over other datasets' shards).
    pub fn is_index_mix(&self) -> bool {
        self.mds.is_none()
    }

    /// The sample count `midmix.json` records.
    pub fn recorded_samples(&self) -> Option<u64> {
        recorded_samples(self.manifest.as_ref()?)
    }
}

/// The sample count a manifest records: `counts.samples`, or a mix's `total_samples`.
fn recorded_samples(m: &Value) -> Option<u64> {
    m["counts"]["samples"]
        .as_u64()
        .or_else(|| m["total_samples"].as_u64())
}

/// Open `dir` (a prepared dataset, a mix of either form, or MDS written elsewhere), checked as the
/// module says.
pub fn open(dir: &Path) -> Result<Opened> {
    crate::paths::check_local(dir)?;
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(Error::dataset(dir, format!("{what}: no dataset here")));
    }
    let manifest = crate::report::read_json(dir)?.map(|(_, m)| m);
    if let Some(m) = &manifest {
        if m["kind"] == "mix" && m["form"] == "index" {
            return Ok(Opened {
                dir: dir.to_path_buf(),
                manifest,
                mds: None,
            });
        }
    }
    let index = dir.join(INDEX_FILE);
    if !index.is_file() {
        return Err(Error::dataset(
            dir,
            match manifest {
                Some(_) => "index.json is missing: the dataset is incomplete or damaged",
                None => "has neither index.json nor midmix.json: not a dataset",
            },
        ));
    }
    let sealed = manifest
        .as_ref()
        .and_then(|m| m["index_xxh3_128"].as_str().map(String::from));
    if let Some(recorded) = &sealed {
        let actual = crate::report::file_xxh3_128(&index)?;
        if &actual != recorded {
            return Err(Error::dataset(
                &index,
                "differs from the one midmix.json records (its xxh3_128): edited, damaged or replaced since the dataset was written",
            ));
        }
    }
    let ds = MdsDataset::open(dir)?;
    let recorded = manifest
        .as_ref()
        .map(|m| {
            recorded_samples(m).ok_or_else(|| {
                Error::dataset(
                    dir.join(crate::report::REPORT_FILE),
                    "records no sample count (counts.samples or total_samples)",
                )
            })
        })
        .transpose()?;
    crate::verify::check_counts_and_sizes(
        "dataset",
        dir,
        &ds,
        recorded.unwrap_or_else(|| ds.num_samples()),
    )?;
    if let Some(m) = &manifest {
        check_columns(dir, m, &ds)?;
    }
    if sealed.is_some() {
        // Every shard midmix writes records its content hash; one without it was edited out.
        if let Some(sh) = ds
            .shards
            .iter()
            .find(|sh| !sh.raw_hashes.iter().any(|(a, _)| a == CONTENT_HASH))
        {
            return Err(Error::dataset(
                &index,
                format!("shard {} records no {CONTENT_HASH} hash", sh.raw_basename),
            ));
        }
    }
    Ok(Opened {
        dir: dir.to_path_buf(),
        manifest,
        mds: Some(ds),
    })
}

/// `index.json`'s columns and encodings against `midmix.json`'s `columns`.
fn check_columns(dir: &Path, m: &Value, ds: &MdsDataset) -> Result<()> {
    let Some(recorded) = m["columns"].as_object() else {
        return Ok(());
    };
    if ds.shards.is_empty() {
        return Ok(()); // an empty dataset (a task part with no input) lists no columns
    }
    let listed: Vec<(String, String)> = ds
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.spec.clone()))
        .collect();
    let want: Vec<(String, String)> = recorded
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    if listed != want {
        let show = |cols: &[(String, String)]| {
            cols.iter()
                .map(|(n, s)| format!("{n}: {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::dataset(
            dir.join(INDEX_FILE),
            format!(
                "lists columns {{{}}} but midmix.json records {{{}}}",
                show(&listed),
                show(&want)
            ),
        ));
    }
    Ok(())
}

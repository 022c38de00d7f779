//! The one validated open. Every command and reader opens a dataset or a mix through `open`, which
//! checks, without reading any shard, everything a dataset records about itself:
//! - `midmix.json` against its checksum (`manifest::Manifest::read`);
//! - `index.json` against the hash `midmix.json` records of it, and its shard entries against
//!   `midmix.json`: the sample count, the columns and their encodings, a content hash for every shard;
//! - every shard file's size on disk against `index.json`.
//!
//! Shard contents are checked against their content hashes the first time a process maps them
//! (`mds::MappedDataset`); an index mix checks its index files and its sources' fingerprints
//! (`mixindex::IndexedMix`). `verify` reads everything.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{Kind, Manifest, MANIFEST_FILE};
use crate::mds::{MappedDataset, MdsDataset, CONTENT_HASH, INDEX_FILE};

/// A dataset directory after `open`'s checks.
pub struct Opened {
    pub dir: PathBuf,
    /// `midmix.json`, checksum checked; None for MDS written by something else.
    pub manifest: Option<Manifest>,
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
        self.manifest.as_ref().map(Manifest::samples)
    }
}

/// Whether `dir` looks like a dataset to open: MDS shards (`index.json`), or a midmix output (an
/// index mix has only `midmix.json`). `open` says what is wrong with one that is not whole.
pub fn is_dataset(dir: &Path) -> bool {
    dir.join(INDEX_FILE).is_file() || dir.join(MANIFEST_FILE).is_file()
}

/// The kind of midmix output at `path`, its seal unchecked (so a damaged output can still be
/// replaced), or why it is not one: `midmix.json` must read and its data must be there
/// (`index.json`, or an index mix's index files). `--overwrite` replaces one of its own kind that
/// holds nothing else (`foreign_entry`).
pub fn output_kind(path: &Path) -> std::result::Result<Kind, String> {
    if !path.is_dir() {
        return Err("is not a midmix dataset directory".into());
    }
    let manifest = std::fs::read(path.join(MANIFEST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let Some(m) = manifest else {
        return Err(
            "is a directory but not a midmix dataset (it lacks a readable midmix.json)".into(),
        );
    };
    let kind = match m["kind"].as_str() {
        Some("prepared") => Kind::Prepared,
        Some("mix") => Kind::Mix,
        k => {
            return Err(format!(
                "holds a midmix.json of unknown kind '{}'",
                k.unwrap_or_default()
            ))
        }
    };
    let has_data = path.join(INDEX_FILE).is_file()
        || (m["form"] == "index" && m["index"]["source"]["file"].is_string());
    if !has_data {
        return Err("is a directory but not a midmix dataset (it lacks index.json)".into());
    }
    Ok(kind)
}

/// Why the midmix output at `path` cannot be replaced as a whole: the first entry in it that midmix
/// does not write (replacing deletes everything there), or that it cannot be listed.
pub fn foreign_entry(path: &Path) -> Option<String> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("cannot be listed: {e}")),
    };
    entries.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let midmix_file = written_by_midmix(&name) && entry.file_type().is_ok_and(|t| t.is_file());
        (!midmix_file).then(|| {
            format!("holds '{name}', which midmix does not write (move it out, or remove the directory yourself)")
        })
    })
}

/// A file name a midmix output holds: its manifest and index, shards (`shard.00000.mds`, compressed
/// `shard.00000.mds.zstd`) and an index mix's arrays.
fn written_by_midmix(name: &str) -> bool {
    let shard = name
        .strip_prefix("shard.")
        .and_then(|rest| rest.split_once(".mds"))
        .is_some_and(|(n, ext)| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (ext.is_empty()
                    || ext
                        .strip_prefix('.')
                        .is_some_and(|e| e.bytes().all(|b| b.is_ascii_alphanumeric())))
        });
    shard
        || [
            MANIFEST_FILE,
            INDEX_FILE,
            crate::manifest::SOURCE_FILE,
            crate::manifest::SAMPLE_FILE,
        ]
        .contains(&name)
}

/// Open `dir` (checked as `open` does) for random access; compressed shards are decompressed into
/// `dir`'s own directory under `cache` (see `MappedDataset`).
pub fn open_mapped(dir: &Path, cache: &Path) -> Result<MappedDataset> {
    let ds = open(dir)?
        .mds
        .ok_or_else(|| Error::dataset(dir, "is an index mix, not MDS shards: open it as a mix"))?;
    Ok(MappedDataset::new(ds, cache))
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
    let manifest = Manifest::read(dir)?;
    if manifest.as_ref().is_some_and(Manifest::is_index_mix) {
        return Ok(Opened {
            dir: dir.to_path_buf(),
            manifest,
            mds: None,
        });
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
        .and_then(|m| m.seal().index_xxh3_128.clone());
    if let Some(recorded) = &sealed {
        let actual = crate::manifest::file_xxh3_128(&index)?;
        if &actual != recorded {
            return Err(Error::dataset(
                &index,
                "differs from the one midmix.json records (its xxh3_128): edited, damaged or replaced since the dataset was written",
            ));
        }
    }
    let ds = MdsDataset::open(dir)?;
    let recorded = manifest.as_ref().map(Manifest::samples);
    crate::mds::integrity::check_counts_and_sizes(
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
fn check_columns(dir: &Path, m: &Manifest, ds: &MdsDataset) -> Result<()> {
    let recorded = m.columns();
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
        .map(|(k, v)| (k.clone(), v.clone()))
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

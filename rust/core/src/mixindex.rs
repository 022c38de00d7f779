//! Index mixes: a mix stored as which sample of which source each position takes, over the
//! untouched prepared sources (what `build-mix` writes unless `--materialize`).
//!
//! Two little-endian arrays, one entry per position: `mix.source.u8` (the source index, as the
//! materialized `source` column) and `mix.sample.u32` (the sample within that source). Five bytes
//! per position instead of a copy of its tokens: a 128B-token mix at seq_len 2048 is 62.5M
//! positions, 312 MB of index against 256 GB of uint16 tokens. The sample ids are stored rather
//! than recomputed from the seed because recomputing needs each source's whole permutation in
//! memory in every reader (4 bytes per source sample, per DataLoader worker).
//!
//! A mix records each source's path and the xxh3 of its `index.json` (which lists every shard's
//! size and hashes); opening checks both, and every shard's size, so a moved, rewritten or
//! re-prepared source is refused by name instead of read.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{Form, IndexFile, IndexFiles, Manifest, MixManifest, SourceInfo};
use crate::mds::{Column, MappedDataset, INDEX_FILE};

pub use crate::manifest::{SAMPLE_FILE, SOURCE_FILE};

fn write_array(dir: &Path, name: &str, bytes: impl Iterator<Item = u8>) -> Result<IndexFile> {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut written = 0u64;
    let mut flush = |buf: &mut Vec<u8>, w: &mut std::io::BufWriter<std::fs::File>| {
        hasher.update(buf);
        written += buf.len() as u64;
        let r = w.write_all(buf).map_err(|e| Error::io(&path, e));
        buf.clear();
        r
    };
    for b in bytes {
        buf.push(b);
        if buf.len() == buf.capacity() {
            flush(&mut buf, &mut w)?;
        }
    }
    flush(&mut buf, &mut w)?;
    w.flush().map_err(|e| Error::io(&path, e))?;
    Ok(IndexFile {
        file: name.to_string(),
        bytes: written,
        xxh3_128: format!("{:032x}", hasher.digest128()),
    })
}

/// Write the index arrays of `picks` (source, sample) into `dir`.
pub fn write(dir: &Path, picks: &[(u8, u32)]) -> Result<IndexFiles> {
    let source = write_array(dir, SOURCE_FILE, picks.iter().map(|p| p.0))?;
    let sample = write_array(
        dir,
        SAMPLE_FILE,
        picks.iter().flat_map(|p| p.1.to_le_bytes()),
    )?;
    Ok(IndexFiles {
        positions: picks.len() as u64,
        source,
        sample,
    })
}

/// Open a mix's source (the validated open), refusing it unless it is the data the mix was built on:
/// its fingerprint (or, for mixes from before fingerprints, its `index.json`) as recorded.
fn open_source(info: &SourceInfo, tokens_spec: &str, cache: &Path) -> Result<MappedDataset> {
    let dir = PathBuf::from(&info.path);
    let name = &info.name;
    if !dir.join(INDEX_FILE).exists() {
        return Err(Error::dataset(
            &dir,
            format!(
                "source '{name}' of this mix is gone (moved or deleted): put it back at this path or rebuild the mix"
            ),
        ));
    }
    let changed = || {
        Error::dataset(
            &dir,
            format!(
                "source '{name}' is not the data this mix was built on (rewritten or re-prepared since); rebuild the mix"
            ),
        )
    };
    let opened = crate::dataset::open(&dir)?;
    match (&info.fingerprint, opened.manifest.as_ref()) {
        (Some(recorded), Some(m)) => {
            if m.seal().fingerprint.as_ref() != Some(recorded) {
                return Err(changed());
            }
        }
        (Some(_), None) => return Err(changed()),
        (None, _) => {
            if crate::manifest::file_xxh3_128(&dir.join(INDEX_FILE))? != info.index_xxh3_128 {
                return Err(changed());
            }
        }
    }
    if opened.recorded_samples() != Some(info.samples) {
        return Err(changed());
    }
    let ds = opened.mds.ok_or_else(|| {
        Error::dataset(&dir, format!("source '{name}' is a mix, not prepared data"))
    })?;
    let spec = ds
        .columns
        .iter()
        .find(|c| c.name == "tokens")
        .map(|c| c.spec.as_str());
    if ds.columns.len() != 1 || spec != Some(tokens_spec) {
        return Err(Error::dataset(
            &dir,
            format!("source '{name}' does not hold one {tokens_spec} tokens column"),
        ));
    }
    Ok(MappedDataset::new(ds, cache))
}

/// An index mix opened for reading: its sources mapped, its index arrays mapped.
pub struct IndexedMix {
    pub dir: PathBuf,
    pub report: MixManifest,
    pub files: IndexFiles,
    sources: Vec<MappedDataset>,
    source_map: memmap2::Mmap,
    sample_map: memmap2::Mmap,
    sample_bytes: usize,
    /// A cache of this process's own (`open_private`), removed when the mix is dropped.
    private_cache: Option<PathBuf>,
}

impl Drop for IndexedMix {
    fn drop(&mut self) {
        if let Some(cache) = &self.private_cache {
            let _ = std::fs::remove_dir_all(cache);
        }
    }
}

fn map(path: &Path, expected: u64) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len != expected {
        return Err(Error::dataset(
            path,
            format!("is {len} bytes but midmix.json records {expected}: truncated or rewritten"),
        ));
    }
    // SAFETY: a finished mix's index files are not modified while mapped (midmix writes a mix
    // under a temporary name and renames it when done).
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

impl IndexedMix {
    /// The index-mix manifest of `dir`, or None when `dir` is not an index mix.
    pub fn manifest(dir: &Path) -> Result<Option<(MixManifest, IndexFiles)>> {
        let Some(Manifest::Mix(report)) = Manifest::read(dir)? else {
            return Ok(None);
        };
        if report.form != Form::Index {
            return Ok(None);
        }
        let files = report.index.clone().ok_or_else(|| {
            Error::dataset(
                dir.join(crate::manifest::MANIFEST_FILE),
                "an index mix without its 'index' files",
            )
        })?;
        let report = *report;
        Ok(Some((report, files)))
    }

    /// Open `dir`; compressed source shards are decompressed into `cache` (each source's into its
    /// own directory there, see `MappedDataset::open`).
    pub fn open(dir: &Path, cache: &Path) -> Result<IndexedMix> {
        let manifest = Self::manifest(dir)?
            .ok_or_else(|| Error::dataset(dir, "is not an index mix (midmix.json form 'index')"))?;
        Self::open_manifest(dir, manifest, cache)
    }

    /// Open `dir` for one command in this process: decompressed shards go to a private directory,
    /// removed when the mix is dropped.
    pub fn open_private(dir: &Path) -> Result<IndexedMix> {
        static OPENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OPENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cache = std::env::temp_dir().join(format!("midmix-mix-{}-{n}", std::process::id()));
        match Self::open(dir, &cache) {
            Ok(mut mix) => {
                mix.private_cache = Some(cache);
                Ok(mix)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&cache);
                Err(e)
            }
        }
    }

    /// Open `dir` from its already-read manifest (`IndexedMix::manifest`).
    pub fn open_manifest(
        dir: &Path,
        (report, files): (MixManifest, IndexFiles),
        cache: &Path,
    ) -> Result<IndexedMix> {
        let tokens_spec = report
            .columns
            .get("tokens")
            .cloned()
            .ok_or_else(|| Error::dataset(dir, "midmix.json records no tokens column"))?;
        let sources = report
            .source_info
            .iter()
            .map(|info| open_source(info, &tokens_spec, cache))
            .collect::<Result<Vec<_>>>()?;
        if files.source.bytes != files.positions || files.sample.bytes != 4 * files.positions {
            return Err(Error::dataset(
                dir,
                "midmix.json: index file sizes do not match its positions",
            ));
        }
        if files.positions != report.total_samples {
            return Err(Error::dataset(
                dir,
                format!(
                    "midmix.json: the index holds {} positions but total_samples is {}",
                    files.positions, report.total_samples
                ),
            ));
        }
        let source_map = map(&dir.join(&files.source.file), files.source.bytes)?;
        let sample_map = map(&dir.join(&files.sample.file), files.sample.bytes)?;
        let sample_bytes = crate::mds::Encoding::parse(&tokens_spec)?
            .fixed_size()
            .ok_or_else(|| Error::dataset(dir, "tokens column is not fixed-size"))?;
        let mix = IndexedMix {
            dir: dir.to_path_buf(),
            report,
            files,
            sources,
            source_map,
            sample_map,
            sample_bytes,
            private_cache: None,
        };
        // 5 bytes per position, hashed at ~10 GB/s: 30 ms for a 128B-token mix.
        mix.check_index_hashes()?;
        Ok(mix)
    }

    pub fn num_samples(&self) -> u64 {
        self.files.positions
    }

    pub fn sources(&self) -> &[MappedDataset] {
        &self.sources
    }

    /// The mix's columns as a materialized mix stores them: `source` (uint8) and `tokens`.
    pub fn columns(&self) -> Result<Vec<Column>> {
        let spec = &self.report.columns["tokens"];
        crate::mds::sorted_columns(&[("source", "uint8"), ("tokens", spec)])
    }

    /// (source, sample within it) of position `k`.
    pub fn pick(&self, k: u64) -> Option<(u8, u32)> {
        let k = usize::try_from(k).ok()?;
        let s = *self.source_map.get(k)?;
        let b = self.sample_map.get(4 * k..4 * k + 4)?;
        Some((s, u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    }

    /// (source, token bytes) of position `k`; None past the end. An error when the index names a
    /// source or sample that does not exist (a damaged index) or the source's shard is damaged.
    pub fn sample(&self, k: u64) -> Result<Option<(u8, &[u8])>> {
        let Some((s, idx)) = self.pick(k) else {
            return Ok(None);
        };
        let source = self
            .sources
            .get(s as usize)
            .ok_or_else(|| self.damaged(k, &format!("names source {s}, which the mix lacks")))?;
        // (Past the open's checks only when an index file was rewritten since: mapped, not copied.)
        match source.sample(idx as u64)? {
            Some(bytes) if bytes.len() == self.sample_bytes => Ok(Some((s, bytes))),
            _ => Err(self.damaged(
                k,
                &format!(
                    "names sample {idx} of source '{}', which it lacks or holds at another size",
                    self.report.sources[s as usize]
                ),
            )),
        }
    }

    /// Every position's pick, checked against the sources (for `export` and `verify`).
    pub fn picks(&self) -> Result<Vec<(u8, u32)>> {
        let n = self.num_samples();
        let mut out = Vec::with_capacity(n as usize);
        for k in 0..n {
            let (s, idx) = self.pick(k).ok_or_else(|| self.damaged(k, "unreadable"))?;
            let avail = self
                .sources
                .get(s as usize)
                .map(|d| d.num_samples())
                .ok_or_else(|| {
                    self.damaged(k, &format!("names source {s}, which the mix lacks"))
                })?;
            if idx as u64 >= avail {
                return Err(self.damaged(
                    k,
                    &format!(
                        "names sample {idx} of source '{}', which has {avail}",
                        self.report.sources[s as usize]
                    ),
                ));
            }
            out.push((s, idx));
        }
        Ok(out)
    }

    pub fn damaged(&self, k: u64, what: &str) -> Error {
        Error::dataset(
            &self.dir,
            format!(
                "index position {k} ({SOURCE_FILE}, {SAMPLE_FILE}) {what}: damaged index, or rewritten since it was opened"
            ),
        )
    }

    /// Recompute the index files' xxh3 against what `midmix.json` records.
    pub fn check_index_hashes(&self) -> Result<()> {
        for (f, map) in [
            (&self.files.source, &self.source_map),
            (&self.files.sample, &self.sample_map),
        ] {
            let got = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(map));
            if got != f.xxh3_128 {
                return Err(Error::dataset(
                    self.dir.join(&f.file),
                    format!(
                        "xxh3_128 is {got} but midmix.json records {}: corrupt index",
                        f.xxh3_128
                    ),
                ));
            }
        }
        Ok(())
    }
}

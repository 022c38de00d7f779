//! Reading an MDS directory back: its index, its shards and their samples, in shard order
//! (`MdsDataset`) or by sample index through memory maps (`MappedDataset`).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use std::sync::OnceLock;

use super::encoding::{Column, Encoding};
use super::shard::{hash_hex, CONTENT_HASH, INDEX_FILE};
use crate::error::{Error, Result};

/// An MDS directory opened for reading.
pub struct MdsDataset {
    pub dir: PathBuf,
    pub columns: Vec<Column>,
    pub shards: Vec<ShardInfo>,
}

#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub raw_basename: String,
    pub zip_basename: Option<String>,
    pub compression: Option<String>,
    pub samples: u64,
    /// File sizes `index.json` records (`raw_data.bytes`, `zip_data.bytes`).
    pub raw_bytes: Option<u64>,
    pub zip_bytes: Option<u64>,
    /// Hashes `index.json` records, (algorithm, hex digest), sorted by algorithm.
    pub raw_hashes: Vec<(String, String)>,
    pub zip_hashes: Vec<(String, String)>,
}

impl ShardInfo {
    /// The hash of the raw (uncompressed) shard that readers check: `xxh3_64`, which midmix records
    /// for every shard it writes, else the first recorded one midmix can compute.
    pub fn content_hash(&self) -> Option<(&str, &str)> {
        fn computable(entry: &(String, String)) -> Option<(&str, &str)> {
            hash_hex(&entry.0, b"")
                .is_some()
                .then_some((entry.0.as_str(), entry.1.as_str()))
        }
        self.raw_hashes
            .iter()
            .find(|(a, _)| a == CONTENT_HASH)
            .and_then(computable)
            .or_else(|| self.raw_hashes.iter().find_map(computable))
    }
}

/// One shard's bytes, decompressed, with sample access.
pub struct Shard {
    bytes: Vec<u8>,
    n: usize,
}

impl Shard {
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The whole (decompressed) shard file.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The encoded bytes of sample `i`.
    pub fn sample(&self, i: usize) -> Option<&[u8]> {
        if i >= self.n {
            return None;
        }
        let at = 4 + 4 * i;
        let begin = u32::from_le_bytes(self.bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let end = u32::from_le_bytes(self.bytes.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        self.bytes.get(begin..end)
    }
}

/// `{"sha1": "ab12…", …}` as sorted (algorithm, digest) pairs; anything else is no hashes.
fn recorded_hashes(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl MdsDataset {
    pub fn open(dir: &Path) -> Result<MdsDataset> {
        let path = dir.join(INDEX_FILE);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let index: Value = serde_json::from_str(&text)
            .map_err(|e| Error::dataset(&path, format!("not valid JSON: {e}")))?;
        let bad = |msg: &str| Error::dataset(&path, msg.to_string());
        let shards_v = index["shards"]
            .as_array()
            .ok_or_else(|| bad("no 'shards' list"))?;
        let mut columns: Option<Vec<Column>> = None;
        let mut shards = Vec::new();
        for s in shards_v {
            if s["format"] != "mds" || s["version"] != 2 {
                return Err(bad("only MDS version 2 shards are supported"));
            }
            let names = s["column_names"]
                .as_array()
                .ok_or_else(|| bad("shard without column_names"))?;
            let encs = s["column_encodings"]
                .as_array()
                .ok_or_else(|| bad("shard without column_encodings"))?;
            let cols: Vec<Column> = names
                .iter()
                .zip(encs)
                .map(|(n, e)| {
                    let (n, e) = (
                        n.as_str().unwrap_or_default(),
                        e.as_str().unwrap_or_default(),
                    );
                    Ok(Column {
                        name: n.to_string(),
                        spec: e.to_string(),
                        encoding: Encoding::parse(e)?,
                    })
                })
                .collect::<Result<_>>()?;
            match &columns {
                None => columns = Some(cols),
                Some(c) if c.iter().map(|c| &c.spec).eq(cols.iter().map(|c| &c.spec)) => {}
                Some(_) => return Err(bad("shards disagree on columns")),
            }
            shards.push(ShardInfo {
                raw_basename: s["raw_data"]["basename"]
                    .as_str()
                    .ok_or_else(|| bad("shard without raw_data.basename"))?
                    .to_string(),
                zip_basename: s["zip_data"]["basename"].as_str().map(String::from),
                compression: s["compression"].as_str().map(String::from),
                samples: s["samples"]
                    .as_u64()
                    .ok_or_else(|| bad("shard without samples"))?,
                raw_bytes: s["raw_data"]["bytes"].as_u64(),
                zip_bytes: s["zip_data"]["bytes"].as_u64(),
                raw_hashes: recorded_hashes(&s["raw_data"]["hashes"]),
                zip_hashes: recorded_hashes(&s["zip_data"]["hashes"]),
            });
        }
        Ok(MdsDataset {
            dir: dir.to_path_buf(),
            columns: columns.unwrap_or_default(),
            shards,
        })
    }

    pub fn num_samples(&self) -> u64 {
        self.shards.iter().map(|s| s.samples).sum()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Shard `i`'s bytes (decompressed), checked against its recorded content hash.
    pub fn load_shard(&self, i: usize) -> Result<Shard> {
        let info = self
            .shards
            .get(i)
            .ok_or_else(|| Error::dataset(&self.dir, format!("no shard {i}")))?;
        let raw_path = self.dir.join(&info.raw_basename);
        let bytes = match (fs::read(&raw_path), &info.zip_basename) {
            (Ok(b), _) => b,
            (Err(_), Some(zip)) => {
                let zpath = self.dir.join(zip);
                let z = fs::read(&zpath).map_err(|e| Error::io(&zpath, e))?;
                if !info
                    .compression
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("zstd")
                {
                    return Err(Error::dataset(
                        &zpath,
                        "only zstd-compressed shards can be read",
                    ));
                }
                zstd::stream::decode_all(&z[..]).map_err(|e| Error::io(&zpath, e))?
            }
            (Err(e), None) => return Err(Error::io(&raw_path, e)),
        };
        let shown = match (raw_path.exists(), &info.zip_basename) {
            (false, Some(zip)) => self.dir.join(zip),
            _ => raw_path.clone(),
        };
        check_content(info, &bytes).map_err(|msg| Error::dataset(&shown, msg))?;
        let bad = || Error::dataset(&raw_path, "shard header is truncated or corrupt");
        let n = u32::from_le_bytes(
            bytes
                .get(0..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        if n as u64 != info.samples || bytes.len() < 4 + 4 * (n + 1) {
            return Err(bad());
        }
        let shard = Shard { bytes, n };
        if n > 0 && shard.sample(n - 1).is_none() {
            return Err(bad());
        }
        Ok(shard)
    }

    /// Split an encoded sample into per-column byte slices (ndarray headers included).
    pub fn split_sample<'a>(&self, sample: &'a [u8]) -> Option<Vec<&'a [u8]>> {
        split_sample(&self.columns, sample)
    }
}

/// Split a sample encoded with `columns` into per-column byte slices (ndarray headers included).
pub fn split_sample<'a>(columns: &[Column], sample: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    let var: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.encoding.fixed_size().is_none())
        .map(|(i, _)| i)
        .collect();
    let mut sizes = vec![0usize; columns.len()];
    for (slot, &ci) in var.iter().enumerate() {
        let at = slot * 4;
        sizes[ci] = u32::from_le_bytes(sample.get(at..at + 4)?.try_into().ok()?) as usize;
    }
    let mut pos = var.len() * 4;
    let mut out = Vec::with_capacity(columns.len());
    for (c, size) in columns.iter().zip(sizes) {
        let size = c.encoding.fixed_size().unwrap_or(size);
        out.push(sample.get(pos..pos + size)?);
        pos += size;
    }
    Some(out)
}

/// An MDS dataset opened for random access by sample index, through memory-mapped shards.
///
/// A shard is mapped the first time one of its samples is read, and its bytes are then checked
/// against the content hash `index.json` records for it (`ShardInfo::content_hash`), once per
/// process: start-up costs a `stat` per shard whatever the data's size, and a shard edited since
/// it was written is an error naming it, never data.
pub struct MappedDataset {
    ds: MdsDataset,
    /// The first sample index of each shard.
    starts: Vec<u64>,
    samples: u64,
    cache: PathBuf,
    /// Each shard's map, made (and checked) on first use; a failure is kept as its message.
    maps: Vec<OnceLock<std::result::Result<memmap2::Mmap, (PathBuf, String)>>>,
}

/// The directory under `cache` that holds `dir`'s decompressed shards: named by the dataset's
/// canonical path and the bytes of its `index.json` (every shard's size and hashes), so two
/// datasets never share one and a rewritten dataset gets a fresh one.
fn dataset_cache_dir(dir: &Path, cache: &Path) -> Result<PathBuf> {
    let canon = fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let index_path = dir.join(INDEX_FILE);
    let index = fs::read(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(canon.to_string_lossy().as_bytes());
    h.update(b"\0");
    h.update(&index);
    Ok(cache.join(format!("{:032x}", h.digest128())))
}

/// The cached file of a compressed shard: its name carries the compressed file's size and
/// modification time, so a shard rewritten in place (even to the same size) is decompressed afresh.
fn cache_name(dir: &Path, sh: &ShardInfo) -> Result<String> {
    let zip = dir.join(sh.zip_basename.as_deref().unwrap_or(&sh.raw_basename));
    let meta = fs::metadata(&zip).map_err(|e| Error::io(&zip, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}.{:x}-{:x}", sh.raw_basename, meta.len(), mtime))
}

/// Remove dataset directories under `cache` not opened for `max_age` (best effort: the cache is
/// shared by processes that may be using other entries).
pub fn prune_cache(cache: &Path, max_age: std::time::Duration) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > max_age);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn map_file(path: &Path) -> std::result::Result<memmap2::Mmap, (PathBuf, String)> {
    let file = fs::File::open(path).map_err(|e| (path.to_path_buf(), e.to_string()))?;
    // SAFETY: a shard is not modified while it is mapped: it belongs to a finished dataset (written
    // under a temporary name, renamed when complete), or to the cache, whose files are only ever
    // replaced by rename (the mapped inode stays as it was). One rewritten in place anyway fails
    // its content hash when first mapped.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| (path.to_path_buf(), e.to_string()))
}

impl MappedDataset {
    /// Random access over `ds`, already opened and checked.
    pub fn new(ds: MdsDataset, cache: &Path) -> MappedDataset {
        let mut starts = Vec::with_capacity(ds.shards.len());
        let mut next = 0u64;
        for sh in &ds.shards {
            starts.push(next);
            next += sh.samples;
        }
        let maps = ds.shards.iter().map(|_| OnceLock::new()).collect();
        MappedDataset {
            ds,
            starts,
            samples: next,
            cache: cache.to_path_buf(),
            maps,
        }
    }

    pub fn num_samples(&self) -> u64 {
        self.samples
    }

    pub fn dataset(&self) -> &MdsDataset {
        &self.ds
    }

    /// Shard `s`, mapped and checked against its content hash (the first call; later ones reuse it).
    pub fn shard(&self, s: usize) -> Result<&memmap2::Mmap> {
        self.maps[s]
            .get_or_init(|| self.map_checked(s))
            .as_ref()
            .map_err(|(path, msg)| Error::dataset(path, msg.clone()))
    }

    fn map_checked(&self, s: usize) -> std::result::Result<memmap2::Mmap, (PathBuf, String)> {
        let sh = &self.ds.shards[s];
        let dir = &self.ds.dir;
        let raw = dir.join(&sh.raw_basename);
        if raw.exists() {
            let map = map_file(&raw)?;
            check_content(sh, &map).map_err(|msg| (raw, msg))?;
            return Ok(map);
        }
        // Kept only compressed: the decompressed copy in the cache, checked like the shard itself.
        // A copy that fails (damaged in the cache) is removed and decompressed afresh.
        let err = |e: Error| (dir.to_path_buf(), e.to_string());
        let sub = dataset_cache_dir(dir, &self.cache).map_err(err)?;
        fs::create_dir_all(&sub).map_err(|e| (sub.clone(), e.to_string()))?;
        // Marks the entry as in use for `prune_cache`.
        if let Ok(d) = fs::File::open(&sub) {
            let _ = d.set_modified(std::time::SystemTime::now());
        }
        let out = sub.join(cache_name(dir, sh).map_err(err)?);
        if out.exists() {
            let map = map_file(&out)?;
            if check_content(sh, &map).is_ok() {
                return Ok(map);
            }
            drop(map);
            let _ = fs::remove_file(&out);
        }
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let bytes = self.ds.load_shard(s).map_err(err)?.into_bytes();
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = sub.join(format!(
            ".{}.tmp-{}-{n}",
            sh.raw_basename,
            std::process::id()
        ));
        fs::write(&tmp, bytes).map_err(|e| (tmp.clone(), e.to_string()))?;
        fs::rename(&tmp, &out).map_err(|e| (out.clone(), e.to_string()))?;
        let map = map_file(&out)?;
        check_content(sh, &map).map_err(|msg| (out, msg))?;
        Ok(map)
    }

    /// The bytes of sample `k`: None past the end; an error when its shard is damaged.
    pub fn sample(&self, k: u64) -> Result<Option<&[u8]>> {
        let Some(s) = self.starts.partition_point(|&st| st <= k).checked_sub(1) else {
            return Ok(None);
        };
        if k >= self.samples {
            return Ok(None);
        }
        let local = (k - self.starts[s]) as usize;
        let m = self.shard(s)?;
        let at = 4 + 4 * local;
        let bounds = || -> Option<&[u8]> {
            let begin = u32::from_le_bytes(m.get(at..at + 4)?.try_into().ok()?) as usize;
            let end = u32::from_le_bytes(m.get(at + 4..at + 8)?.try_into().ok()?) as usize;
            m.get(begin..end)
        };
        bounds().map(Some).ok_or_else(|| {
            Error::dataset(
                self.ds.dir.join(&self.ds.shards[s].raw_basename),
                format!("sample {local} lies outside the shard: the shard is corrupt"),
            )
        })
    }
}

/// `bytes` (a whole raw shard) against the content hash `index.json` records for it; Ok when it
/// records none midmix can compute (MDS written elsewhere, or by midmix before it hashed every shard).
fn check_content(sh: &ShardInfo, bytes: &[u8]) -> std::result::Result<(), String> {
    let Some((algo, recorded)) = sh.content_hash() else {
        return Ok(());
    };
    let actual = hash_hex(algo, bytes).unwrap_or_default();
    if actual.eq_ignore_ascii_case(recorded) {
        return Ok(());
    }
    Err(format!(
        "its bytes hash to {algo} {actual} but index.json records {recorded}: the shard changed since it was written"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mds::{ColumnValue, MdsWriter, WriterOptions};

    /// Both readers give the same sample bytes, across shards and with compression.
    #[test]
    fn mapped_samples_match_shard_samples() {
        for compression in [None, Some("zstd")] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("ds");
            let opts = WriterOptions {
                compression: compression.map(String::from),
                size_limit: Some(400),
                ..Default::default()
            };
            let mut w = MdsWriter::create(&dir, &[("tokens", "ndarray:uint16:4")], &opts).unwrap();
            for i in 0..50u8 {
                w.write(&[ColumnValue::Raw(&[i; 8])]).unwrap();
            }
            w.finish().unwrap();
            let ds = MdsDataset::open(&dir).unwrap();
            assert!(ds.shards.len() > 1);
            let mapped = crate::dataset::open_mapped(&dir, &tmp.path().join("cache")).unwrap();
            assert_eq!(mapped.num_samples(), 50);
            let mut k = 0;
            for si in 0..ds.shards.len() {
                let shard = ds.load_shard(si).unwrap();
                for i in 0..shard.len() {
                    assert_eq!(mapped.sample(k).unwrap(), shard.sample(i));
                    k += 1;
                }
            }
            assert_eq!(mapped.sample(k).unwrap(), None);
        }
    }

    fn write_compressed(dir: &Path, fill: u8) {
        write(dir, fill, Some("zstd"), &[]);
    }

    fn write(dir: &Path, fill: u8, compression: Option<&str>, hashes: &[&str]) {
        let opts = WriterOptions {
            compression: compression.map(String::from),
            hashes: hashes.iter().map(|h| h.to_string()).collect(),
            size_limit: Some(400),
        };
        let mut w = MdsWriter::create(dir, &[("tokens", "ndarray:uint16:4")], &opts).unwrap();
        for i in 0..50u8 {
            w.write(&[ColumnValue::Raw(&[i ^ fill; 8])]).unwrap();
        }
        w.finish().unwrap();
    }

    /// Reads every sample (so every shard is mapped, and a compressed one decompressed).
    fn read_all(m: &MappedDataset) {
        for k in 0..m.num_samples() {
            m.sample(k).unwrap().unwrap();
        }
    }

    fn cached_files(cache: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(cache)
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().path())
            .collect();
        out.sort();
        out
    }

    /// A compressed shard is decompressed once per dataset, when first read: a second open maps the
    /// same files, another dataset gets its own directory, and a dataset rewritten in place is
    /// decompressed afresh (never served from the old cache).
    #[test]
    fn the_decompression_cache_is_per_dataset_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write_compressed(&a, 0);
        write_compressed(&b, 0xff);
        let first = crate::dataset::open_mapped(&a, &cache).unwrap();
        assert!(!cache.exists(), "opening decompresses nothing");
        read_all(&first);
        let files = cached_files(&cache);
        let written: Vec<_> = files
            .iter()
            .map(|f| fs::metadata(f).unwrap().modified().unwrap())
            .collect();
        let again = crate::dataset::open_mapped(&a, &cache).unwrap();
        read_all(&again);
        assert_eq!(cached_files(&cache), files);
        let rewritten: Vec<_> = files
            .iter()
            .map(|f| fs::metadata(f).unwrap().modified().unwrap())
            .collect();
        assert_eq!(written, rewritten, "the second open decompressed again");
        let other = crate::dataset::open_mapped(&b, &cache).unwrap();
        read_all(&other);
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 2);
        assert_eq!(first.sample(3).unwrap(), again.sample(3).unwrap());
        assert_eq!(first.sample(3).unwrap(), Some(&[3u8; 8][..]));
        assert_eq!(other.sample(3).unwrap(), Some(&[3 ^ 0xff; 8][..]));
        // Rewritten in place with other content (same sizes): the cache must not answer for it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::remove_dir_all(&a).unwrap();
        write_compressed(&a, 0x0f);
        let fresh = crate::dataset::open_mapped(&a, &cache).unwrap();
        assert_eq!(fresh.sample(3).unwrap(), Some(&[3 ^ 0x0f; 8][..]));
        assert_eq!(
            first.sample(3).unwrap(),
            Some(&[3u8; 8][..]),
            "a live map kept its bytes"
        );
        prune_cache(&cache, std::time::Duration::ZERO);
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 0);
    }

    /// A shard whose bytes no longer match its recorded content hash is an error naming it the first
    /// time it is read, also when its size is unchanged; a damaged copy in the decompression cache
    /// is decompressed afresh instead of served.
    #[test]
    fn shards_are_checked_against_their_content_hash_when_first_read() {
        let tmp = tempfile::tempdir().unwrap();
        let raw = tmp.path().join("raw");
        write(&raw, 0, None, &[CONTENT_HASH]);
        let shard = raw.join("shard.00001.mds");
        let mut bytes = fs::read(&shard).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&shard, &bytes).unwrap();
        let m = crate::dataset::open_mapped(&raw, &tmp.path().join("cache")).unwrap();
        assert_eq!(m.sample(0).unwrap(), Some(&[0u8; 8][..])); // shard 0 is intact
        let err = (0..50).find_map(|k| m.sample(k).err()).unwrap().to_string();
        assert!(
            err.starts_with(&format!("{}: its bytes hash to xxh3_64 ", shard.display())),
            "{err}"
        );
        assert!(
            err.ends_with("the shard changed since it was written"),
            "{err}"
        );

        let zipped = tmp.path().join("zipped");
        let cache = tmp.path().join("cache");
        write(&zipped, 0, Some("zstd"), &[CONTENT_HASH]);
        read_all(&crate::dataset::open_mapped(&zipped, &cache).unwrap());
        for f in cached_files(&cache) {
            let mut b = fs::read(&f).unwrap();
            let n = b.len() - 1;
            b[n] ^= 0xff;
            fs::write(&f, b).unwrap();
        }
        let m = crate::dataset::open_mapped(&zipped, &cache).unwrap();
        for k in 0..50u8 {
            assert_eq!(m.sample(k as u64).unwrap(), Some(&[k; 8][..]));
        }
    }
}

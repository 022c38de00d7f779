//! MosaicML Streaming's MDS format (version 2), written byte-for-byte as `streaming.MDSWriter`
//! 0.13.0 writes it, and read back for `inspect` and `merge`.
//!
//! Shard file: `u32 N | u32 offsets[N+1] | config JSON | samples`; a sample is `u32 sizes` of its
//! variable-size columns followed by every column's bytes, columns sorted by name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::pyjson;

pub const INDEX_FILE: &str = "index.json";
pub const DEFAULT_SIZE_LIMIT: u64 = 1 << 26;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U8,
    I8,
    U16,
    I16,
    F16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "uint8" => Dtype::U8,
            "int8" => Dtype::I8,
            "uint16" => Dtype::U16,
            "int16" => Dtype::I16,
            "float16" => Dtype::F16,
            "uint32" => Dtype::U32,
            "int32" => Dtype::I32,
            "float32" => Dtype::F32,
            "uint64" => Dtype::U64,
            "int64" => Dtype::I64,
            "float64" => Dtype::F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::U16 => "uint16",
            Dtype::I16 => "int16",
            Dtype::F16 => "float16",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::F32 => "float32",
            Dtype::U64 => "uint64",
            Dtype::I64 => "int64",
            Dtype::F64 => "float64",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The byte `streaming`'s NDArray encoding writes for the dtype when the spec omits it.
    fn code(self) -> u8 {
        match self {
            Dtype::U8 => 8,
            Dtype::I8 => 9,
            Dtype::U16 => 16,
            Dtype::I16 => 17,
            Dtype::F16 => 18,
            Dtype::U32 => 32,
            Dtype::I32 => 33,
            Dtype::F32 => 34,
            Dtype::U64 => 64,
            Dtype::I64 => 65,
            Dtype::F64 => 66,
        }
    }

    fn from_code(code: u8) -> Option<Dtype> {
        [
            Dtype::U8,
            Dtype::I8,
            Dtype::U16,
            Dtype::I16,
            Dtype::F16,
            Dtype::U32,
            Dtype::I32,
            Dtype::F32,
            Dtype::U64,
            Dtype::I64,
            Dtype::F64,
        ]
        .into_iter()
        .find(|d| d.code() == code)
    }
}

/// A column encoding as `streaming` names it (`uint8`, `int`, `str`, `bytes`, `ndarray:uint16:2048`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    Scalar(Dtype),
    Str,
    Bytes,
    NdArray {
        dtype: Option<Dtype>,
        shape: Option<Vec<u64>>,
    },
}

impl Encoding {
    pub fn parse(spec: &str) -> Result<Encoding> {
        let bad = || Error::Config(format!("unsupported MDS column encoding '{spec}'"));
        Ok(match spec {
            "str" => Encoding::Str,
            "bytes" => Encoding::Bytes,
            "int" => Encoding::Scalar(Dtype::I64),
            s if s == "ndarray" || s.starts_with("ndarray:") => {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() > 3 {
                    return Err(bad());
                }
                let dtype = match parts.get(1) {
                    Some(d) => Some(Dtype::parse(d).ok_or_else(bad)?),
                    None => None,
                };
                let shape = match parts.get(2) {
                    Some(sh) => {
                        let dims: Vec<u64> = sh
                            .split(',')
                            .map(|d| d.parse::<u64>().ok().filter(|&d| d >= 1))
                            .collect::<Option<_>>()
                            .ok_or_else(bad)?;
                        Some(dims)
                    }
                    None => None,
                };
                Encoding::NdArray { dtype, shape }
            }
            s => Encoding::Scalar(Dtype::parse(s).ok_or_else(bad)?),
        })
    }

    /// Byte size of a fixed-size column, `None` for a variable-size one.
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            Encoding::Scalar(d) => Some(d.size()),
            Encoding::NdArray {
                dtype: Some(d),
                shape: Some(shape),
            } => Some(shape.iter().product::<u64>() as usize * d.size()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub spec: String,
    pub encoding: Encoding,
}

/// One column's value for a sample.
pub enum Value_<'a> {
    /// Already in the column's byte form: little-endian scalar, UTF-8 text, raw bytes, or the
    /// values of an ndarray whose dtype and shape are both in the spec.
    Raw(&'a [u8]),
    /// An ndarray whose spec leaves out the dtype or the shape (values little-endian, C order).
    Array {
        dtype: Dtype,
        shape: &'a [u64],
        data: &'a [u8],
    },
}
pub use Value_ as ColumnValue;

/// Columns sorted by name, as `MDSWriter` stores them.
pub fn sorted_columns(columns: &[(&str, &str)]) -> Result<Vec<Column>> {
    let mut cols: Vec<Column> = columns
        .iter()
        .map(|(n, s)| {
            Ok(Column {
                name: n.to_string(),
                spec: s.to_string(),
                encoding: Encoding::parse(s)?,
            })
        })
        .collect::<Result<_>>()?;
    cols.sort_by(|a, b| a.name.cmp(&b.name));
    for w in cols.windows(2) {
        if w[0].name == w[1].name {
            return Err(Error::Config(format!("duplicate column '{}'", w[0].name)));
        }
    }
    Ok(cols)
}

/// Append one encoded sample to `out`.
pub fn encode_sample(
    columns: &[Column],
    values: &[ColumnValue<'_>],
    out: &mut Vec<u8>,
) -> Result<()> {
    if values.len() != columns.len() {
        return Err(Error::Config(format!(
            "sample has {} values for {} columns",
            values.len(),
            columns.len()
        )));
    }
    let start = out.len();
    let var_count = columns
        .iter()
        .filter(|c| c.encoding.fixed_size().is_none())
        .count();
    out.resize(start + 4 * var_count, 0);
    let mut var_slot = 0;
    for (col, val) in columns.iter().zip(values) {
        let col_start = out.len();
        match (&col.encoding, val) {
            (
                Encoding::NdArray { dtype, shape },
                ColumnValue::Array {
                    dtype: d,
                    shape: s,
                    data,
                },
            ) => {
                if dtype.is_some_and(|spec| spec != *d) {
                    return Err(Error::Config(format!(
                        "column '{}' is {} but got {}",
                        col.name,
                        col.spec,
                        d.name()
                    )));
                }
                if s.is_empty() || s.contains(&0) || s.len() > 63 {
                    return Err(Error::Config(format!(
                        "column '{}': an ndarray needs 1..63 dimensions of size >= 1",
                        col.name
                    )));
                }
                let n: u64 = s.iter().product();
                if n as usize * d.size() != data.len() {
                    return Err(Error::Config(format!(
                        "column '{}': data does not match shape",
                        col.name
                    )));
                }
                if dtype.is_none() {
                    out.push(d.code());
                }
                match shape {
                    Some(spec_shape) if spec_shape.as_slice() != *s => {
                        return Err(Error::Config(format!(
                            "column '{}': shape differs from {}",
                            col.name, col.spec
                        )))
                    }
                    Some(_) => {}
                    None => {
                        let max = s.iter().copied().max().unwrap_or(0);
                        let (code, width) = if max < 1 << 8 {
                            (0u8, 1)
                        } else if max < 1 << 16 {
                            (1, 2)
                        } else if max < 1 << 32 {
                            (2, 4)
                        } else {
                            (3, 8)
                        };
                        out.push(((s.len() as u8) << 2) | code);
                        for &dim in s.iter() {
                            out.extend_from_slice(&dim.to_le_bytes()[..width]);
                        }
                    }
                }
                out.extend_from_slice(data);
            }
            (enc, ColumnValue::Raw(bytes)) => {
                if let Some(size) = enc.fixed_size() {
                    if bytes.len() != size {
                        return Err(Error::Config(format!(
                            "column '{}' ({}) takes {} bytes, got {}",
                            col.name,
                            col.spec,
                            size,
                            bytes.len()
                        )));
                    }
                } else if matches!(enc, Encoding::NdArray { .. }) {
                    return Err(Error::Config(format!(
                        "column '{}' needs an array value",
                        col.name
                    )));
                }
                out.extend_from_slice(bytes);
            }
            (_, ColumnValue::Array { .. }) => {
                return Err(Error::Config(format!(
                    "column '{}' is not an ndarray",
                    col.name
                )))
            }
        }
        if col.encoding.fixed_size().is_none() {
            let size = (out.len() - col_start) as u32;
            let at = start + 4 * var_slot;
            out[at..at + 4].copy_from_slice(&size.to_le_bytes());
            var_slot += 1;
        }
    }
    Ok(())
}

/// A hash algorithm `streaming` accepts and midmix implements.
pub fn hash_hex(algo: &str, data: &[u8]) -> Option<String> {
    use md5::Md5;
    use sha1::Sha1;
    use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
    use xxhash_rust::{xxh3, xxh32, xxh64};
    Some(match algo {
        "md5" => hex::encode(Md5::digest(data)),
        "sha1" => hex::encode(Sha1::digest(data)),
        "sha224" => hex::encode(Sha224::digest(data)),
        "sha256" => hex::encode(Sha256::digest(data)),
        "sha384" => hex::encode(Sha384::digest(data)),
        "sha512" => hex::encode(Sha512::digest(data)),
        "xxh32" => format!("{:08x}", xxh32::xxh32(data, 0)),
        "xxh64" => format!("{:016x}", xxh64::xxh64(data, 0)),
        "xxh3_64" => format!("{:016x}", xxh3::xxh3_64(data)),
        "xxh128" | "xxh3_128" => format!("{:032x}", xxh3::xxh3_128(data)),
        _ => return None,
    })
}

pub const SUPPORTED_HASHES: &[&str] = &[
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "xxh32", "xxh64", "xxh3_64", "xxh128",
    "xxh3_128",
];

/// Parsed `--compression`: only zstd (the one `streaming` users pick for token data).
#[derive(Debug, Clone)]
pub struct Compression {
    pub spec: String,
    pub level: i32,
}

impl Compression {
    pub fn parse(spec: &str) -> Result<Compression> {
        let (family, level) = match spec.split_once(':') {
            Some((f, l)) => (f, Some(l)),
            None => (spec, None),
        };
        if family != "zstd" {
            return Err(Error::Config(format!(
                "compression '{spec}' is not supported: use zstd or zstd:LEVEL (1-22)"
            )));
        }
        let level = match level {
            None => 3,
            Some(l) => l
                .parse::<i32>()
                .ok()
                .filter(|l| (1..=22).contains(l))
                .ok_or_else(|| Error::Config(format!("bad zstd level in '{spec}': use 1-22")))?,
        };
        Ok(Compression {
            spec: spec.to_string(),
            level,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    pub compression: Option<String>,
    pub hashes: Vec<String>,
    /// `None` = no limit (one shard), as `MDSWriter(size_limit=None)`.
    pub size_limit: Option<u64>,
}

/// What every shard of one dataset shares: its columns, the embedded config JSON and compression.
/// Used by the streaming `MdsWriter` and by writers that build shards in parallel.
#[derive(Clone)]
pub struct ShardFormat {
    pub columns: Vec<Column>,
    config: Value,
    config_json: String,
    compression: Option<Compression>,
    hashes: Vec<String>,
    pub size_limit: Option<u64>,
}

impl ShardFormat {
    pub fn new(columns: &[(&str, &str)], opts: &WriterOptions) -> Result<ShardFormat> {
        let columns = sorted_columns(columns)?;
        let compression = opts
            .compression
            .as_deref()
            .map(Compression::parse)
            .transpose()?;
        let mut hashes = opts.hashes.clone();
        hashes.sort();
        hashes.dedup();
        for h in &hashes {
            if hash_hex(h, b"").is_none() {
                return Err(Error::Config(format!(
                    "hash '{h}' is not supported; choose from {}",
                    SUPPORTED_HASHES.join(", ")
                )));
            }
        }
        if let Some(limit) = opts.size_limit {
            if limit >= 1 << 32 || limit == 0 {
                return Err(Error::Config(format!(
                    "shard size limit {limit} must be in 1..2^32"
                )));
            }
        }
        let config = json!({
            "column_encodings": columns.iter().map(|c| c.spec.clone()).collect::<Vec<_>>(),
            "column_names": columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "column_sizes": columns.iter().map(|c| c.encoding.fixed_size()).collect::<Vec<_>>(),
            "compression": compression.as_ref().map(|c| c.spec.clone()),
            "format": "mds",
            "hashes": hashes,
            "size_limit": opts.size_limit,
            "version": 2,
        });
        Ok(ShardFormat {
            config_json: pyjson::dumps(&config),
            columns,
            config,
            compression,
            hashes,
            size_limit: opts.size_limit,
        })
    }

    /// Bytes a shard takes before its samples, as `MDSWriter` counts them when splitting.
    fn base_size(&self) -> u64 {
        4 + 4 + self.config_json.len() as u64
    }

    /// How many fixed-size samples of `sample_size` bytes `MDSWriter` puts in each shard.
    pub fn samples_per_shard(&self, sample_size: usize) -> u64 {
        match self.size_limit {
            None => u64::MAX,
            Some(limit) => {
                (limit.saturating_sub(self.base_size()) / (sample_size as u64 + 4)).max(1)
            }
        }
    }

    /// A shard file: `u32 N | u32 offsets[N+1] | config JSON | samples`, given where each sample ends.
    pub fn assemble(&self, ends: &[u32], data: &[u8]) -> Vec<u8> {
        let n = ends.len();
        let header = 4 + 4 * (n + 1) + self.config_json.len();
        let mut bytes = Vec::with_capacity(header + data.len());
        bytes.extend_from_slice(&(n as u32).to_le_bytes());
        bytes.extend_from_slice(&(header as u32).to_le_bytes());
        for &end in ends {
            bytes.extend_from_slice(&(header as u32 + end).to_le_bytes());
        }
        bytes.extend_from_slice(self.config_json.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    /// Hash, compress and write shard `index`; returns its `index.json` entry.
    pub fn write_shard(
        &self,
        dir: &Path,
        index: usize,
        samples: u64,
        bytes: &[u8],
    ) -> Result<Value> {
        let hash_map = |data: &[u8]| -> Value {
            let mut m = serde_json::Map::new();
            for h in &self.hashes {
                if let Some(hex) = hash_hex(h, data) {
                    m.insert(h.clone(), Value::String(hex));
                }
            }
            Value::Object(m)
        };
        let basename = format!("shard.{index:05}.mds");
        let raw = json!({"basename": basename, "bytes": bytes.len(), "hashes": hash_map(bytes)});
        let zip = match &self.compression {
            None => {
                write_file(&dir.join(&basename), bytes)?;
                Value::Null
            }
            Some(c) => {
                // bulk::compress writes the content size into the frame header, which old
                // python-zstd releases need to decompress it.
                let z = zstd::bulk::compress(bytes, c.level)
                    .map_err(|e| Error::io(dir.join(&basename), e))?;
                let zname = format!("{basename}.zstd");
                write_file(&dir.join(&zname), &z)?;
                json!({"basename": zname, "bytes": z.len(), "hashes": hash_map(&z)})
            }
        };
        let mut shard = self.config.clone();
        if let Value::Object(m) = &mut shard {
            m.insert("raw_data".into(), raw);
            m.insert("samples".into(), json!(samples));
            m.insert("zip_data".into(), zip);
        }
        Ok(shard)
    }
}

impl ShardFormat {
    /// Write shard `index` of `n` fixed-size samples of `sample_size` bytes, produced by `fill`
    /// straight into the file (the header is known up front), so no shard-sized buffer is built.
    /// With hashes or compression the whole shard is needed at once, and it is buffered.
    pub fn write_fixed_shard(
        &self,
        dir: &Path,
        index: usize,
        n: usize,
        sample_size: usize,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Value> {
        let header = 4 + 4 * (n + 1) + self.config_json.len();
        let mut head = Vec::with_capacity(header);
        head.extend_from_slice(&(n as u32).to_le_bytes());
        for j in 0..=n {
            head.extend_from_slice(&((header + j * sample_size) as u32).to_le_bytes());
        }
        head.extend_from_slice(self.config_json.as_bytes());
        if !self.hashes.is_empty() || self.compression.is_some() {
            let mut bytes = head;
            fill(&mut bytes)?;
            return self.write_shard(dir, index, n as u64, &bytes);
        }
        let basename = format!("shard.{index:05}.mds");
        let path = dir.join(&basename);
        let file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        w.write_all(&head).map_err(|e| Error::io(&path, e))?;
        fill(&mut w)?;
        w.flush().map_err(|e| Error::io(&path, e))?;
        let mut shard = self.config.clone();
        if let Value::Object(m) = &mut shard {
            let bytes = header + n * sample_size;
            m.insert(
                "raw_data".into(),
                json!({"basename": basename, "bytes": bytes, "hashes": {}}),
            );
            m.insert("samples".into(), json!(n));
            m.insert("zip_data".into(), Value::Null);
        }
        Ok(shard)
    }
}

/// Bytes the shards take on disk (the compressed files when compressed), from their index entries.
pub fn stored_bytes(shards: &[Value]) -> u64 {
    shards
        .iter()
        .filter_map(|s| {
            s["zip_data"]["bytes"]
                .as_u64()
                .or_else(|| s["raw_data"]["bytes"].as_u64())
        })
        .sum()
}

/// Write `index.json` for the given shard entries.
pub fn write_index(dir: &Path, shards: &[Value]) -> Result<()> {
    let index = json!({"shards": shards, "version": 2});
    let path = dir.join(INDEX_FILE);
    fs::write(&path, pyjson::dumps(&index)).map_err(|e| Error::io(&path, e))
}

struct FlushJob {
    index: usize,
    samples: u64,
    bytes: Vec<u8>,
}

/// Writes an MDS directory sample by sample. Shards are hashed, compressed and written on a
/// background thread while the caller goes on producing samples.
pub struct MdsWriter {
    dir: PathBuf,
    format: ShardFormat,
    // The shard being filled: its samples back to back, and where each ends.
    data: Vec<u8>,
    ends: Vec<u32>,
    shard_size: u64,
    shards_started: usize,
    samples_written: u64,
    tx: Option<mpsc::SyncSender<FlushJob>>,
    flusher: Option<thread::JoinHandle<Result<Vec<Value>>>>,
    scratch: Vec<u8>,
}

impl MdsWriter {
    pub fn create(dir: &Path, columns: &[(&str, &str)], opts: &WriterOptions) -> Result<MdsWriter> {
        let format = ShardFormat::new(columns, opts)?;
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (tx, rx) = mpsc::sync_channel::<FlushJob>(2);
        let flush_dir = dir.to_path_buf();
        let flush_format = format.clone();
        let flusher = thread::spawn(move || -> Result<Vec<Value>> {
            rx.into_iter()
                .map(|job| flush_format.write_shard(&flush_dir, job.index, job.samples, &job.bytes))
                .collect()
        });
        let mut w = MdsWriter {
            dir: dir.to_path_buf(),
            format,
            data: Vec::new(),
            ends: Vec::new(),
            shard_size: 0,
            shards_started: 0,
            samples_written: 0,
            tx: Some(tx),
            flusher: Some(flusher),
            scratch: Vec::new(),
        };
        w.reset_shard();
        Ok(w)
    }

    pub fn columns(&self) -> &[Column] {
        &self.format.columns
    }

    pub fn samples_written(&self) -> u64 {
        self.samples_written
    }

    fn reset_shard(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.shard_size = self.format.base_size();
    }

    pub fn write(&mut self, values: &[ColumnValue<'_>]) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        encode_sample(&self.format.columns, values, &mut scratch)?;
        let r = self.write_encoded(&scratch);
        self.scratch = scratch;
        r
    }

    /// Append a sample already in MDS sample form.
    pub fn write_encoded(&mut self, sample: &[u8]) -> Result<()> {
        let size = sample.len() as u64 + 4;
        if let Some(limit) = self.format.size_limit {
            if limit < self.shard_size + size && !self.ends.is_empty() {
                self.flush()?;
            }
        }
        self.data.extend_from_slice(sample);
        self.ends.push(self.data.len() as u32);
        self.shard_size += size;
        if self.shard_size >= 1 << 32 {
            return Err(Error::dataset(
                &self.dir,
                "a shard would reach 4 GiB: set a size limit",
            ));
        }
        self.samples_written += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let n = self.ends.len();
        let bytes = self.format.assemble(&self.ends, &self.data);
        let job = FlushJob {
            index: self.shards_started,
            samples: n as u64,
            bytes,
        };
        self.shards_started += 1;
        self.reset_shard();
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            // The flusher stopped on an error: collect it.
            return Err(self.join_flusher().err().unwrap_or_else(|| {
                Error::dataset(&self.dir, "shard writer stopped unexpectedly")
            }));
        }
        Ok(())
    }

    fn join_flusher(&mut self) -> Result<Vec<Value>> {
        self.tx = None;
        match self.flusher.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::dataset(&self.dir, "shard writer thread panicked"))?,
            None => Err(Error::dataset(&self.dir, "writer already finished")),
        }
    }

    /// Flush the last shard and write `index.json`. Returns the shard entries.
    pub fn finish(mut self) -> Result<Vec<Value>> {
        if !self.ends.is_empty() {
            self.flush()?;
        }
        let shards = self.join_flusher()?;
        write_index(&self.dir, &shards)?;
        Ok(shards)
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(data).map_err(|e| Error::io(path, e))
}

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
        let var: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.encoding.fixed_size().is_none())
            .map(|(i, _)| i)
            .collect();
        let mut sizes = vec![0usize; self.columns.len()];
        for (slot, &ci) in var.iter().enumerate() {
            let at = slot * 4;
            sizes[ci] = u32::from_le_bytes(sample.get(at..at + 4)?.try_into().ok()?) as usize;
        }
        let mut pos = var.len() * 4;
        let mut out = Vec::with_capacity(self.columns.len());
        for (c, size) in self.columns.iter().zip(sizes) {
            let size = c.encoding.fixed_size().unwrap_or(size);
            out.push(sample.get(pos..pos + size)?);
            pos += size;
        }
        Some(out)
    }
}

/// Decode an ndarray column's bytes into (dtype, shape, values) given its encoding.
pub fn decode_ndarray<'a>(enc: &Encoding, bytes: &'a [u8]) -> Option<(Dtype, Vec<u64>, &'a [u8])> {
    let Encoding::NdArray { dtype, shape } = enc else {
        return None;
    };
    let mut pos = 0;
    let dtype = match dtype {
        Some(d) => *d,
        None => {
            pos += 1;
            Dtype::from_code(*bytes.first()?)?
        }
    };
    let shape = match shape {
        Some(s) => s.clone(),
        None => {
            let b = *bytes.get(pos)?;
            pos += 1;
            let ndim = (b >> 2) as usize;
            let width = 1usize << (b & 3);
            let mut s = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                let mut buf = [0u8; 8];
                buf[..width].copy_from_slice(bytes.get(pos..pos + width)?);
                s.push(u64::from_le_bytes(buf));
                pos += width;
            }
            s
        }
    };
    let values = bytes.get(pos..)?;
    if values.len() != shape.iter().product::<u64>() as usize * dtype.size() {
        return None;
    }
    Some((dtype, shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_sample<'a>(
        tokens: &'a [u8],
        shape: &'a [u64],
        src: &'a [u8],
        id: &'a [u8],
        text: &'a [u8],
    ) -> Vec<ColumnValue<'a>> {
        // Sorted column order: id, src, text, tokens.
        vec![
            ColumnValue::Raw(id),
            ColumnValue::Raw(src),
            ColumnValue::Raw(text),
            ColumnValue::Array {
                dtype: Dtype::U16,
                shape,
                data: tokens,
            },
        ]
    }

    fn write_vector1(dir: &Path, compression: Option<&str>) -> Vec<Value> {
        let opts = WriterOptions {
            compression: compression.map(String::from),
            hashes: vec!["xxh3_64".into(), "sha1".into()],
            size_limit: Some(1 << 20),
        };
        let cols = [
            ("tokens", "ndarray:uint16"),
            ("src", "uint8"),
            ("id", "int"),
            ("text", "str"),
        ];
        let mut w = MdsWriter::create(dir, &cols, &opts).unwrap();
        let t0: Vec<u8> = [1u16, 2, 3].iter().flat_map(|t| t.to_le_bytes()).collect();
        w.write(&v1_sample(&t0, &[3], &[2], &7i64.to_le_bytes(), b"hi"))
            .unwrap();
        let t1: Vec<u8> = 258u16.to_le_bytes().to_vec();
        w.write(&v1_sample(&t1, &[1], &[0], &(-1i64).to_le_bytes(), b""))
            .unwrap();
        w.finish().unwrap()
    }

    /// Golden vector 1 of the reference notes, produced by the real MDSWriter 0.13.0.
    #[test]
    fn golden_vector_1() {
        let dir = tempfile::tempdir().unwrap();
        write_vector1(dir.path(), None);
        let index = fs::read_to_string(dir.path().join("index.json")).unwrap();
        assert_eq!(
            index,
            r#"{"shards": [{"column_encodings": ["int", "uint8", "str", "ndarray:uint16"], "column_names": ["id", "src", "text", "tokens"], "column_sizes": [8, 1, null, null], "compression": null, "format": "mds", "hashes": ["sha1", "xxh3_64"], "raw_data": {"basename": "shard.00000.mds", "bytes": 318, "hashes": {"sha1": "f2a802f486ce7e39452a555741bb3873c78177c7", "xxh3_64": "07162cf085219159"}}, "samples": 2, "size_limit": 1048576, "version": 2, "zip_data": null}], "version": 2}"#
        );
        let shard = fs::read(dir.path().join("shard.00000.mds")).unwrap();
        assert_eq!(shard.len(), 318);
        assert_eq!(
            &shard[..16],
            &[2, 0, 0, 0, 0x0e, 1, 0, 0, 0x29, 1, 0, 0, 0x3e, 1, 0, 0]
        );
        assert_eq!(
            &shard[270..297],
            &[
                2, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i', 4, 3, 1, 0, 2, 0, 3,
                0
            ]
        );
        assert_eq!(
            &shard[297..],
            &[0, 0, 0, 0, 4, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 0, 4, 1, 2, 1]
        );

        // Read back.
        let ds = MdsDataset::open(dir.path()).unwrap();
        assert_eq!(ds.num_samples(), 2);
        let sh = ds.load_shard(0).unwrap();
        let cols = ds.split_sample(sh.sample(0).unwrap()).unwrap();
        assert_eq!(cols[2], b"hi");
        let (d, s, v) = decode_ndarray(&ds.columns[3].encoding, cols[3]).unwrap();
        assert_eq!((d, s, v), (Dtype::U16, vec![3], &[1u8, 0, 2, 0, 3, 0][..]));
    }

    #[test]
    fn golden_vector_1_zstd() {
        let dir = tempfile::tempdir().unwrap();
        let shards = write_vector1(dir.path(), Some("zstd:7"));
        assert_eq!(shards[0]["raw_data"]["bytes"], 322);
        assert_eq!(
            shards[0]["raw_data"]["hashes"]["sha1"],
            "9cb31c9cffad732e0ff97dc8c613814b79677f05"
        );
        assert_eq!(shards[0]["zip_data"]["basename"], "shard.00000.mds.zstd");
        assert!(!dir.path().join("shard.00000.mds").exists());
        let ds = MdsDataset::open(dir.path()).unwrap();
        assert_eq!(ds.load_shard(0).unwrap().len(), 2);
    }

    /// Golden vector 2: fixed-size columns, no size limit, no hashes.
    #[test]
    fn golden_vector_2() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions::default();
        let mut w = MdsWriter::create(
            dir.path(),
            &[("tokens", "ndarray:uint16:4"), ("src", "uint8")],
            &opts,
        )
        .unwrap();
        let t: Vec<u8> = [1u16, 2, 3, 65535]
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        let mut enc = Vec::new();
        encode_sample(
            w.columns(),
            &[ColumnValue::Raw(&[1]), ColumnValue::Raw(&t)],
            &mut enc,
        )
        .unwrap();
        assert_eq!(enc, vec![1, 1, 0, 2, 0, 3, 0, 255, 255]);
        w.write_encoded(&enc).unwrap();
        let shards = w.finish().unwrap();
        assert_eq!(shards[0]["column_sizes"], json!([1, 8]));
        assert_eq!(shards[0]["size_limit"], Value::Null);
        assert_eq!(shards[0]["hashes"], json!([]));
        assert_eq!(shards[0]["raw_data"]["hashes"], json!({}));
    }

    #[test]
    fn splits_shards_at_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            size_limit: Some(400),
            ..Default::default()
        };
        let mut w =
            MdsWriter::create(dir.path(), &[("tokens", "ndarray:uint16:8")], &opts).unwrap();
        let base = w.format.base_size();
        let per = 16 + 4;
        let fit = (400 - base) / per;
        for _ in 0..(fit * 2 + 1) {
            w.write(&[ColumnValue::Raw(&[0u8; 16])]).unwrap();
        }
        let shards = w.finish().unwrap();
        let counts: Vec<u64> = shards
            .iter()
            .map(|s| s["samples"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, vec![fit, fit, 1]);
    }

    #[test]
    fn rejects_bad_options() {
        let dir = tempfile::tempdir().unwrap();
        let cols = [("tokens", "ndarray:uint16:8")];
        let bad = |o: WriterOptions| {
            MdsWriter::create(dir.path(), &cols, &o)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(bad(WriterOptions {
            compression: Some("br".into()),
            ..Default::default()
        })
        .contains("not supported"));
        assert!(bad(WriterOptions {
            compression: Some("zstd:99".into()),
            ..Default::default()
        })
        .contains("1-22"));
        assert!(bad(WriterOptions {
            hashes: vec!["crc32".into()],
            ..Default::default()
        })
        .contains("crc32"));
        assert!(Encoding::parse("ndarray:uint16:0").is_err());
        assert!(Encoding::parse("pkl").is_err());
    }
}

//! The shard file and its listing: layout, compression, hashes, and `index.json`.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::encoding::{sorted_columns, Column};
use crate::error::{Error, Result};
use crate::pyjson;

pub const INDEX_FILE: &str = "index.json";
/// The hash midmix records for every shard it writes (besides any `--hashes`), and that readers check
/// each shard against the first time they map it. `streaming` computes it too (`validate_hash`).
pub const CONTENT_HASH: &str = "xxh3_64";

/// `hashes` with the content hash added: what midmix's writers record.
pub fn with_content_hash(hashes: &[String]) -> Vec<String> {
    let mut out = hashes.to_vec();
    out.push(CONTENT_HASH.to_string());
    out.sort();
    out.dedup();
    out
}
pub const DEFAULT_SIZE_LIMIT: u64 = 1 << 26;

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
    pub(super) fn base_size(&self) -> u64 {
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
    pub fn assemble_into(&self, ends: &[u32], data: &[u8], bytes: &mut Vec<u8>) {
        let n = ends.len();
        let header = 4 + 4 * (n + 1) + self.config_json.len();
        bytes.clear();
        bytes.reserve(header + data.len());
        bytes.extend_from_slice(&(n as u32).to_le_bytes());
        bytes.extend_from_slice(&(header as u32).to_le_bytes());
        for &end in ends {
            bytes.extend_from_slice(&(header as u32 + end).to_le_bytes());
        }
        bytes.extend_from_slice(self.config_json.as_bytes());
        bytes.extend_from_slice(data);
    }

    /// Hash, compress and write shard `index`; returns its `index.json` entry. `stop` returning
    /// true ends the compression within a piece (`Error::Interrupted`).
    pub fn write_shard(
        &self,
        dir: &Path,
        index: usize,
        samples: u64,
        bytes: &[u8],
        stop: &dyn Fn() -> bool,
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
                let z = compress_in_pieces(bytes, c.level, stop)
                    .map_err(|e| Error::io(dir.join(&basename), e))?
                    .ok_or(Error::Interrupted)?;
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

    /// Write shard `index` of `n` fixed-size samples of `sample_size` bytes, produced by `fill`
    /// straight into the file (the header is known up front), so no shard-sized buffer is built;
    /// the content hash is computed on the way. With compression or other hashes the whole shard
    /// is needed at once, and it is buffered.
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
        let streamed = self.compression.is_none() && self.hashes.iter().all(|h| h == CONTENT_HASH);
        if !streamed {
            let mut bytes = head;
            fill(&mut bytes)?;
            return self.write_shard(dir, index, n as u64, &bytes, &|| false);
        }
        let basename = format!("shard.{index:05}.mds");
        let path = dir.join(&basename);
        let file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: xxhash_rust::xxh3::Xxh3::new(),
        };
        w.write_all(&head).map_err(|e| Error::io(&path, e))?;
        fill(&mut w)?;
        w.flush().map_err(|e| Error::io(&path, e))?;
        let mut hashes = serde_json::Map::new();
        if !self.hashes.is_empty() {
            hashes.insert(
                CONTENT_HASH.into(),
                json!(format!("{:016x}", w.hasher.digest())),
            );
        }
        let mut shard = self.config.clone();
        if let Value::Object(m) = &mut shard {
            let bytes = header + n * sample_size;
            m.insert(
                "raw_data".into(),
                json!({"basename": basename, "bytes": bytes, "hashes": hashes}),
            );
            m.insert("samples".into(), json!(n));
            m.insert("zip_data".into(), Value::Null);
        }
        Ok(shard)
    }
}

/// Input fed to zstd at a time, between checks of `stop`: at level 19 (1–3 MB/s on token data)
/// a quarter of a second or less, where one 64 MB shard in one call took 20 s to stop (Slurm
/// kills 30 s after its SIGTERM).
const COMPRESS_PIECE: usize = 1 << 18;

/// One zstd frame of `bytes` (the same frame whole or in pieces: the pledged size sets the same
/// parameters), with the content size in its header, which old python-zstd releases need to
/// decompress it. None when `stop` was set.
fn compress_in_pieces(
    bytes: &[u8],
    level: i32,
    stop: &dyn Fn() -> bool,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::with_capacity(bytes.len() / 3), level)?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(bytes.len() as u64))?;
    for piece in bytes.chunks(COMPRESS_PIECE) {
        if stop() {
            return Ok(None);
        }
        enc.write_all(piece)?;
    }
    enc.finish().map(Some)
}

/// A writer that hashes (xxh3-64) what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(data).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use crate::mds::{ColumnValue, MdsWriter, WriterOptions};

    /// Bytes zstd works hard on at high levels (few values, no long repeats): ~1 MB/s at 19.
    fn tokens(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (i % 7) as u8 + (x % 3) as u8
            })
            .collect()
    }

    #[test]
    fn pieces_make_one_frame_with_its_content_size_that_decodes_to_the_bytes() {
        for (n, level) in [(0, 3), (1000, 1), ((3 << 20) + 17, 3), ((2 << 20) + 5, 19)] {
            let bytes = tokens(n);
            let z = super::compress_in_pieces(&bytes, level, &|| false)
                .unwrap()
                .unwrap();
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&z).ok(),
                Some(Some(n as u64))
            );
            assert_eq!(
                zstd::stream::decode_all(&z[..]).unwrap(),
                bytes,
                "{n} {level}"
            );
        }
        assert!(super::compress_in_pieces(&tokens(10), 3, &|| true)
            .unwrap()
            .is_none());
    }

    /// A writer dropped while it compresses (an error, Ctrl-C or SIGTERM upstream) stops within a
    /// piece, not at the end of its shards (two of 4 MB queued take ~8 s at level 19).
    #[test]
    fn a_writer_dropped_while_compressing_at_level_19_stops_within_two_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MdsWriter::create(
            dir.path(),
            &[("tokens", "ndarray:uint8:65536")],
            &WriterOptions {
                compression: Some("zstd:19".into()),
                size_limit: Some(4 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        let data = tokens(65536 * 3 * 64);
        for sample in data.chunks(65536) {
            w.write(&[ColumnValue::Raw(sample)]).unwrap();
        }
        let t = std::time::Instant::now();
        drop(w);
        assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
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
    }
}

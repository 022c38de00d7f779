//! `MdsWriter`: writes an MDS directory sample by sample.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use serde_json::Value;

use super::encoding::{encode_sample, Column, ColumnValue};
use super::shard::{write_index, ShardFormat, WriterOptions};
use crate::error::{Error, Result};

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
    /// Shard buffers the flusher is done with.
    spare: mpsc::Receiver<Vec<u8>>,
    /// Set when the writer is dropped unfinished: the flusher stops within a compression piece.
    stop: Arc<AtomicBool>,
    scratch: Vec<u8>,
}

impl MdsWriter {
    pub fn create(dir: &Path, columns: &[(&str, &str)], opts: &WriterOptions) -> Result<MdsWriter> {
        MdsWriter::create_stoppable(dir, columns, opts, None)
    }

    /// `create`, with a flag (a command's Ctrl-C/SIGTERM) that also stops the shards being
    /// compressed, within a piece: the caller may be blocked handing the flusher a shard.
    pub fn create_stoppable(
        dir: &Path,
        columns: &[(&str, &str)],
        opts: &WriterOptions,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<MdsWriter> {
        let format = ShardFormat::new(columns, opts)?;
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (tx, rx) = mpsc::sync_channel::<FlushJob>(2);
        let (spare_tx, spare) = mpsc::sync_channel::<Vec<u8>>(2);
        let flush_dir = dir.to_path_buf();
        let flush_format = format.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flush_stop = stop.clone();
        let flusher = thread::spawn(move || -> Result<Vec<Value>> {
            rx.into_iter()
                .map(|job| {
                    let entry = flush_format.write_shard(
                        &flush_dir,
                        job.index,
                        job.samples,
                        &job.bytes,
                        &|| {
                            flush_stop.load(Ordering::Relaxed)
                                || cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
                        },
                    );
                    // The buffer goes back for a later shard: refilling memory already mapped
                    // costs less than a fresh shard-sized allocation the kernel must zero.
                    let _ = spare_tx.try_send(job.bytes);
                    entry
                })
                .collect()
        });
        let mut w = MdsWriter {
            dir: dir.to_path_buf(),
            // A shard's worth up front (address space only until it is written), so the buffer
            // is not copied as it grows.
            data: Vec::with_capacity(format.size_limit.map_or(0, |l| l.min(1 << 28) as usize)),
            format,
            ends: Vec::new(),
            shard_size: 0,
            shards_started: 0,
            samples_written: 0,
            tx: Some(tx),
            flusher: Some(flusher),
            spare,
            scratch: Vec::new(),
            stop,
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
        let mut bytes = self.spare.try_recv().unwrap_or_default();
        self.format
            .assemble_into(&self.ends, &self.data, &mut bytes);
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

impl Drop for MdsWriter {
    /// A writer dropped unfinished (an error or a cancel upstream) waits for shards still being
    /// written, so its directory can be removed right after without a file appearing in it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;
    use crate::mds::{decode_ndarray, Dtype, MdsDataset};

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
}

//! Reading input files into batches of raw records, in input order, hashing the bytes read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::Xxh3;

use super::parquet::read_parquet;
use super::{
    Compression, FieldValue, Format, InputFile, Payload, Portion, RawBatch, RawRecord, ReadOptions,
};
use crate::error::{Error, Location, Result, Unit};

const BATCH_BYTES: usize = 4 << 20;
const BATCH_RECORDS: usize = 4096;

/// Counts (compressed bytes for .gz/.zst) and hashes the bytes read from disk, so each input is read once: for its records and
/// for the xxh3-128 fingerprint the report records.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
    hash: Arc<Mutex<Xxh3>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        if let Ok(mut h) = self.hash.lock() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// xxh3-128 of a whole file's bytes, as a hex string.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let mut h = Xxh3::new();
    hash_from(path, 0, &mut h)?;
    Ok(format!("{:032x}", h.digest128()))
}

/// Feed the bytes of `path` from `offset` to its end into `h`.
fn hash_from(path: &Path, offset: u64, h: &mut Xxh3) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

/// Collects records into batches and hands each on to the sink, noting the input consumed.
struct Batcher<'a> {
    /// Index of the file being read.
    file: usize,
    records: Vec<RawRecord>,
    bytes: usize,
    consumed: &'a AtomicU64,
    sink: &'a mut dyn FnMut(RawBatch) -> bool,
}

impl Batcher<'_> {
    fn push(&mut self, record: RawRecord, bytes: usize) {
        self.records.push(record);
        self.bytes += bytes;
    }

    fn full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.records.len() >= BATCH_RECORDS
    }

    /// Hand on the batch cut at input position `pos`; false once the sink wants no more.
    fn emit(&mut self, pos: u64) -> bool {
        self.consumed.store(pos, Ordering::Relaxed);
        self.bytes = 0;
        (self.sink)(RawBatch {
            file: self.file,
            records: std::mem::take(&mut self.records),
            input_pos: pos,
        })
    }
}

/// Every file's records into `sink`, in order. Returns each file's xxh3-128 fingerprint where the
/// reading saw all its bytes (JSONL and text; `None` for Parquet, which is read by row group, and
/// for every file when the sink stopped early). Stops at the first input-level error or when `sink`
/// returns false.
pub fn read_all(
    files: &[InputFile],
    opts: &ReadOptions,
    consumed: &Arc<AtomicU64>,
    sink: &mut dyn FnMut(RawBatch) -> bool,
) -> Result<Vec<Option<String>>> {
    let mut sums = vec![None; files.len()];
    let mut done_bytes = 0u64;
    let mut batcher = Batcher {
        file: 0,
        records: Vec::new(),
        bytes: 0,
        consumed,
        sink,
    };
    for (fi, f) in files.iter().enumerate() {
        batcher.file = fi;
        let more = match f.format {
            Format::Parquet => read_parquet_records(f, &opts.fields, done_bytes, &mut batcher)?,
            Format::Jsonl(_) | Format::Text(_) if f.portion != Portion::Whole => {
                read_line_portion(f, done_bytes, &mut batcher)? // not every byte read: no hash here
            }
            Format::Jsonl(comp) | Format::Text(comp) => {
                let hash = Arc::new(Mutex::new(Xxh3::new()));
                let (more, read) = read_text_records(
                    f,
                    comp,
                    opts.text_per_line,
                    done_bytes,
                    &mut batcher,
                    hash.clone(),
                )?;
                if more {
                    let mut h = hash
                        .lock()
                        .map_err(|_| Error::Config("input hash lock poisoned".into()))?;
                    // A decoder may stop before the end (after its last frame): hash the rest.
                    hash_from(&f.path, read, &mut h)?;
                    sums[fi] = Some(format!("{:032x}", h.digest128()));
                }
                more
            }
        };
        if !more {
            return Ok(vec![None; files.len()]);
        }
        done_bytes += f.size;
        if !batcher.records.is_empty() && !batcher.emit(done_bytes) {
            return Ok(vec![None; files.len()]);
        }
        consumed.store(done_bytes, Ordering::Relaxed);
    }
    Ok(sums)
}

/// One Parquet file's rows into `batcher`, `done_bytes` being the input before it. Returns
/// false when the sink wants no more.
fn read_parquet_records(
    f: &InputFile,
    fields: &[String],
    done_bytes: u64,
    batcher: &mut Batcher<'_>,
) -> Result<bool> {
    let mut more = true;
    read_parquet(f, fields, &mut |row, values, frac| {
        let size: usize = values
            .iter()
            .map(|v| match v {
                Some(FieldValue::Str(s)) => s.len(),
                Some(FieldValue::Bytes(b)) => b.len(),
                _ => 0,
            })
            .sum();
        let record = RawRecord {
            unit: Unit::Row(row),
            payload: Payload::Fields(values),
        };
        batcher.push(record, size);
        if batcher.full() {
            let pos = done_bytes + (f.size as f64 * frac) as u64;
            if !batcher.emit(pos) {
                more = false;
            }
        }
        more
    })?;
    Ok(more)
}

/// The lines of an uncompressed file that start in its `Portion::Lines` range, with their line
/// numbers in the whole file. A line that starts before the range belongs to the task before.
fn read_line_portion(f: &InputFile, done_bytes: u64, batcher: &mut Batcher<'_>) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let Portion::Lines { start, end } = f.portion else {
        return Err(Error::Config(format!("{}: not a line portion", f.label)));
    };
    let io = |e| Error::io(&f.path, e);
    let mut file = File::open(&f.path).map_err(io)?;
    // Where the first whole line at or after `start` begins, and how many lines come before it.
    let (mut pos, mut line_no) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    while pos < start {
        let want = ((start - pos) as usize).min(buf.len());
        let n = file.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Ok(true); // the file ends before the portion
        }
        line_no += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        pos += n as u64;
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    if start > 0 {
        let mut before = [0u8; 1];
        reader.seek(SeekFrom::Start(start - 1)).map_err(io)?;
        reader.read_exact(&mut before).map_err(io)?;
        if before[0] != b'\n' {
            let mut rest = Vec::new(); // the end of a line that started before the portion
            pos += reader.read_until(b'\n', &mut rest).map_err(io)? as u64;
            line_no += 1;
        }
    }
    let is_json = matches!(f.format, Format::Jsonl(_));
    while pos < end {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::BadInput {
                loc: Location {
                    path: f.label.clone(),
                    unit: Unit::Line(line_no + 1),
                },
                msg: format!("read error: {e}"),
            })?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        line_no += 1;
        let (record, size) = line_record(line, line_no, is_json);
        batcher.push(record, size);
        if batcher.full() && !batcher.emit(done_bytes + pos.saturating_sub(start).min(f.size)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Line `line_no` as read (its `\n` or `\r\n` dropped) as a record, and its size in bytes.
fn line_record(mut line: Vec<u8>, line_no: u64, is_json: bool) -> (RawRecord, usize) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let size = line.len();
    let payload = if is_json {
        Payload::Json(line)
    } else {
        Payload::Text(line)
    };
    let record = RawRecord {
        unit: Unit::Line(line_no),
        payload,
    };
    (record, size)
}

/// A JSONL or text file, decompressed, buffered; `count` gets the bytes read from disk.
fn open_text(
    f: &InputFile,
    comp: Compression,
    count: Arc<AtomicU64>,
    hash: Arc<Mutex<Xxh3>>,
) -> Result<Box<dyn BufRead>> {
    let file = File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
    let counting = CountingReader {
        inner: file,
        count,
        hash,
    };
    Ok(match comp {
        Compression::None => Box::new(BufReader::with_capacity(1 << 20, counting)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::new(counting)),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::stream::read::Decoder::new(counting).map_err(|e| Error::io(&f.path, e))?,
        )),
    })
}

/// One JSONL or text file's records (lines, or the whole text file) into `batcher`,
/// `done_bytes` being the input before it. Returns false when the sink wants no more.
fn read_text_records(
    f: &InputFile,
    comp: Compression,
    text_per_line: bool,
    done_bytes: u64,
    batcher: &mut Batcher<'_>,
    hash: Arc<Mutex<Xxh3>>,
) -> Result<(bool, u64)> {
    let file_bytes = Arc::new(AtomicU64::new(0));
    let mut reader = open_text(f, comp, file_bytes.clone(), hash)?;
    let read = |b: &Arc<AtomicU64>| b.load(Ordering::Relaxed);
    let is_json = matches!(f.format, Format::Jsonl(_));
    let corrupt = |line: u64, e: std::io::Error| Error::BadInput {
        loc: Location {
            path: f.label.clone(),
            unit: Unit::Line(line),
        },
        msg: match comp {
            Compression::None => format!("read error: {e}"),
            _ => format!("truncated or corrupt compressed stream ({e})"),
        },
    };
    if !is_json && !text_per_line {
        let mut text = Vec::new();
        reader.read_to_end(&mut text).map_err(|e| corrupt(1, e))?;
        let record = RawRecord {
            unit: Unit::File,
            payload: Payload::Text(text),
        };
        batcher.push(record, 0);
        drop(reader);
        return Ok((true, read(&file_bytes)));
    }
    let mut line_no = 0u64;
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| corrupt(line_no + 1, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let (record, size) = line_record(line, line_no, is_json);
        batcher.push(record, size);
        // Progress counts bytes read from disk, capped at the file's size.
        let pos = || done_bytes + file_bytes.load(Ordering::Relaxed).min(f.size);
        if batcher.full() && !batcher.emit(pos()) {
            return Ok((false, 0));
        }
    }
    drop(reader);
    Ok((true, read(&file_bytes)))
}

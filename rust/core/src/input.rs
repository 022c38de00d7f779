//! Finding input files and reading them as raw records, in input order.
//!
//! Reading only splits files into records (lines, Parquet rows, whole text files); parsing JSON,
//! checking UTF-8 and extracting fields happen later, in parallel (see `record`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Location, Result, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl(Compression),
    Text(Compression),
    Parquet,
}

#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    /// How errors and reports name it (the path, or e.g. `hf:gsm8k:train` for exported datasets).
    pub label: String,
    pub format: Format,
    pub size: u64,
    /// The part of it read: a `--num-tasks` task may take part of a file (`tasks::task_files`).
    pub portion: Portion,
}

/// Which part of a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Portion {
    #[default]
    Whole,
    /// The lines that start in this byte range (uncompressed JSONL, or text read a line a document).
    Lines { start: u64, end: u64 },
    /// These row groups of a Parquet file.
    RowGroups { start: usize, end: usize },
}

/// Format from a file name: `.jsonl`/`.json`/`.ndjson`, `.txt`, each optionally `.gz`/`.zst`,
/// and `.parquet`.
pub fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, comp) = if let Some(s) = name.strip_suffix(".gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name
        .strip_suffix(".zst")
        .or_else(|| name.strip_suffix(".zstd"))
    {
        (s, Compression::Zstd)
    } else {
        (name.as_str(), Compression::None)
    };
    if stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson") {
        Some(Format::Jsonl(comp))
    } else if stem.ends_with(".txt") {
        Some(Format::Text(comp))
    } else if stem.ends_with(".parquet") && comp == Compression::None {
        Some(Format::Parquet)
    } else {
        None
    }
}

/// Expand files, directories (recursively) and globs into an ordered, de-duplicated file list.
/// Directory and glob matches are sorted by path, so the order never depends on the file system.
pub fn discover(specs: &[String]) -> Result<Vec<InputFile>> {
    let mut out: Vec<InputFile> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for spec in specs {
        let path = PathBuf::from(spec);
        crate::paths::check_local(&path)?;
        let mut found: Vec<PathBuf> = Vec::new();
        if path.is_dir() {
            walk(&path, &mut found, &mut Vec::new())?;
            found.retain(|p| format_of(p).is_some());
            found.sort();
            if found.is_empty() {
                return Err(Error::Config(format!(
                    "{spec}: directory holds no .jsonl/.json/.txt(.gz/.zst) or .parquet files"
                )));
            }
        } else if spec.contains(['*', '?', '[']) {
            // glob skips names that are not UTF-8 without a word; look for them first.
            check_glob_names(spec)?;
            let paths =
                glob::glob(spec).map_err(|e| Error::Config(format!("bad glob '{spec}': {e}")))?;
            for p in paths {
                let p = p.map_err(|e| {
                    let path = e.path().to_path_buf();
                    Error::io(path, e.into())
                })?;
                if p.is_file() && format_of(&p).is_some() {
                    found.push(p);
                }
            }
            found.sort();
            if found.is_empty() {
                return Err(Error::Config(format!(
                    "{spec}: glob matches no input files"
                )));
            }
        } else if path.is_file() {
            if format_of(&path).is_none() {
                return Err(Error::Config(format!(
                    "{spec}: unknown input format (expected .jsonl, .json, .ndjson, .txt, optionally .gz/.zst, or .parquet)"
                )));
            }
            found.push(path);
        } else {
            return Err(Error::Config(format!("{spec}: no such file or directory")));
        }
        for p in found {
            // One file reached by two paths (a symlink, `a/../a`) is read once.
            let key = p.canonicalize().map_err(|e| Error::io(&p, e))?;
            if seen.insert(key) {
                let size = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
                let format = format_of(&p).unwrap_or(Format::Jsonl(Compression::None));
                out.push(InputFile {
                    portion: Portion::Whole,
                    label: p.display().to_string(),
                    path: p,
                    format,
                    size,
                });
            }
        }
    }
    Ok(out)
}

/// Every file under `dir`, following symlinks; `ancestors` holds the canonical directories above, so
/// a link back to one of them (a loop) is an error instead of the same files listed again and again.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, ancestors: &mut Vec<PathBuf>) -> Result<()> {
    let canonical = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if ancestors.contains(&canonical) {
        return Err(Error::Config(format!(
            "{}: a symlink loop (it leads back to {}); remove the link or name the files to read",
            dir.display(),
            canonical.display()
        )));
    }
    ancestors.push(canonical);
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            walk(&p, out, ancestors)?;
        } else {
            check_utf8_name(dir, &p)?;
            out.push(p);
        }
    }
    ancestors.pop();
    Ok(())
}

/// A file whose name is not UTF-8 has no format we can tell, and dropping it would silently
/// lose data: refuse it, naming the directory it is in.
fn check_utf8_name(dir: &Path, file: &Path) -> Result<()> {
    match file.file_name() {
        Some(name) if name.to_str().is_none() => Err(Error::BadInput {
            loc: Location {
                path: dir.display().to_string(),
                unit: Unit::File,
            },
            msg: format!(
                "holds a file whose name is not UTF-8 ({}); rename it (inputs are never skipped silently)",
                name.to_string_lossy()
            ),
        }),
        _ => Ok(()),
    }
}

/// The directories a glob reads: from its literal leading directory down as many levels as it
/// has components (any depth with `**`). Any file there with a non-UTF-8 name is an error.
fn check_glob_names(spec: &str) -> Result<()> {
    let path = Path::new(spec);
    let mut base = PathBuf::new();
    let mut rest = Vec::new();
    for c in path.components() {
        let s = c.as_os_str().to_string_lossy();
        if rest.is_empty() && !s.contains(['*', '?', '[']) {
            base.push(c);
        } else {
            rest.push(s.into_owned());
        }
    }
    let depth = if rest.iter().any(|c| c == "**") {
        usize::MAX
    } else {
        rest.len()
    };
    if base.as_os_str().is_empty() {
        base = PathBuf::from(".");
    }
    scan_names(&base, depth)
}

fn scan_names(dir: &Path, depth: usize) -> Result<()> {
    if depth == 0 {
        return Ok(());
    }
    // A glob over a missing directory matches nothing; `discover` reports that itself.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            scan_names(&p, depth - 1)?;
        } else {
            check_utf8_name(dir, &p)?;
        }
    }
    Ok(())
}

/// A record as read, before parsing.
pub enum Payload {
    /// One JSON line.
    Json(Vec<u8>),
    /// A text document (a whole file or one line): bytes still to be checked as UTF-8.
    Text(Vec<u8>),
    /// Parquet values of the requested columns, in order (`None` = null).
    Fields(Vec<Option<FieldValue>>),
}

pub enum FieldValue {
    Str(String),
    Bytes(Vec<u8>),
    Other(&'static str),
}

pub struct RawRecord {
    pub unit: Unit,
    pub payload: Payload,
}

pub struct RawBatch {
    pub file: usize,
    pub records: Vec<RawRecord>,
    /// Input bytes consumed when this batch was cut (for progress).
    pub input_pos: u64,
}

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

pub struct ReadOptions {
    /// Fields to pull out of each Parquet row (JSON fields are extracted later).
    pub fields: Vec<String>,
    /// `.txt`: one document per line instead of one per file.
    pub text_per_line: bool,
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

/// Stream a Parquet file's requested columns row by row: `row(index, values, fraction_done)`.
fn read_parquet(
    f: &InputFile,
    fields: &[String],
    row_fn: &mut dyn FnMut(u64, Vec<Option<FieldValue>>, f64) -> bool,
) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let bad = |unit, msg: String| Error::BadInput {
        loc: Location {
            path: f.label.clone(),
            unit,
        },
        msg,
    };
    let file = File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(Unit::File, format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let root = schema.root_schema();
    let mut projected = Vec::new();
    for name in fields {
        let field = root
            .get_fields()
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = root.get_fields().iter().map(|t| t.name()).collect();
                bad(
                    Unit::File,
                    format!("no column '{name}' (columns: {})", names.join(", ")),
                )
            })?;
        projected.push(field.clone());
    }
    let projection = parquet::schema::types::Type::group_type_builder(root.name())
        .with_fields(projected)
        .build()
        .map_err(|e| bad(Unit::File, e.to_string()))?;
    let meta = reader.metadata();
    let groups = match f.portion {
        Portion::RowGroups { start, end } => start..end.min(meta.num_row_groups()),
        _ => 0..meta.num_row_groups(),
    };
    // Row numbers count from the start of the file, whichever row groups are read.
    let first_row: u64 = (0..groups.start)
        .map(|g| meta.row_group(g).num_rows() as u64)
        .sum();
    let read_rows: u64 = groups
        .clone()
        .map(|g| meta.row_group(g).num_rows() as u64)
        .sum();
    let total_rows = read_rows.max(1) as f64;
    let mut k = 0u64; // rows read so far
    for g in groups {
        // Row group by row group, streamed: one group's rows are never all held at once.
        let group = reader
            .get_row_group(g)
            .map_err(|e| bad(Unit::File, format!("cannot read row group {g}: {e}")))?;
        let rows = group
            .get_row_iter(Some(projection.clone()))
            .map_err(|e| bad(Unit::File, format!("cannot read rows: {e}")))?;
        for row in rows {
            let i = first_row + k;
            k += 1;
            let row = row.map_err(|e| {
                bad(
                    Unit::Row(i),
                    format!("truncated or corrupt Parquet data: {e}"),
                )
            })?;
            let mut values: Vec<Option<FieldValue>> = Vec::with_capacity(fields.len());
            let cols: Vec<(&String, &Field)> = row.get_column_iter().collect();
            for name in fields {
                let v = cols.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                values.push(match v {
                    None | Some(Field::Null) => None,
                    Some(Field::Str(s)) => Some(FieldValue::Str(s.clone())),
                    Some(Field::Bytes(b)) => Some(FieldValue::Bytes(b.data().to_vec())),
                    Some(Field::ListInternal(_)) => Some(FieldValue::Other("list")),
                    Some(Field::MapInternal(_)) => Some(FieldValue::Other("map")),
                    Some(Field::Group(_)) => Some(FieldValue::Other("struct")),
                    Some(_) => Some(FieldValue::Other("number or other scalar")),
                });
            }
            if !row_fn(i, values, k as f64 / total_rows) {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_loop_is_an_error_and_a_linked_file_is_read_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("corpus");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a.jsonl"), "{\"text\": \"a\"}\n").unwrap();
        // A second name for the same file, and for the same directory: read once.
        std::os::unix::fs::symlink(d.join("sub/a.jsonl"), d.join("alias.jsonl")).unwrap();
        std::os::unix::fs::symlink(d.join("sub"), tmp.path().join("sub-link")).unwrap();
        let specs = [
            d.display().to_string(),
            tmp.path().join("sub-link").display().to_string(),
        ];
        let files = discover(&specs).unwrap();
        assert_eq!(
            files.len(),
            1,
            "{:?}",
            files.iter().map(|f| &f.label).collect::<Vec<_>>()
        );
        // A link back to an ancestor: refused, naming it.
        std::os::unix::fs::symlink(&d, d.join("sub/loop")).unwrap();
        let err = discover(&[d.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sub/loop: a symlink loop"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_file_names_are_an_error_not_a_skip() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("good.jsonl"), "{\"text\": \"a\"}\n").unwrap();
        let bad = dir.join(OsStr::from_bytes(b"caf\xe9.jsonl"));
        if std::fs::write(&bad, "{\"text\": \"b\"}\n").is_err() {
            return; // a file system that refuses non-UTF-8 names cannot have the problem
        }
        let want = format!(
            "{}: holds a file whose name is not UTF-8 (caf\u{fffd}.jsonl); rename it (inputs are never skipped silently)",
            dir.display()
        );
        for spec in [
            dir.display().to_string(),
            format!("{}/*.jsonl", dir.display()),
            format!("{}/**/*.jsonl", tmp.path().display()),
        ] {
            match discover(std::slice::from_ref(&spec)) {
                Err(e @ Error::BadInput { .. }) => assert_eq!(e.to_string(), want, "{spec}"),
                other => panic!("{spec}: expected a bad-input error, got {other:?}"),
            }
        }
        std::fs::remove_file(&bad).unwrap();
        assert_eq!(discover(&[dir.display().to_string()]).unwrap().len(), 1);
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(
            format_of(Path::new("a/b.jsonl.zst")),
            Some(Format::Jsonl(Compression::Zstd))
        );
        assert_eq!(
            format_of(Path::new("b.JSON.gz")),
            Some(Format::Jsonl(Compression::Gzip))
        );
        assert_eq!(
            format_of(Path::new("c.txt")),
            Some(Format::Text(Compression::None))
        );
        assert_eq!(format_of(Path::new("d.parquet")), Some(Format::Parquet));
        assert_eq!(format_of(Path::new("e.csv")), None);
    }
}

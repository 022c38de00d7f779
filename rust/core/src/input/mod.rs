//! Finding input files and reading them as raw records, in input order.
//!
//! Reading only splits files into records (lines, Parquet rows, whole text files); parsing JSON,
//! checking UTF-8 and extracting fields happen later, in parallel (see `record`).
//!
//! `format` tells a file's format from its name, `discover` finds the files, `read` reads them
//! into batches of records (`parquet` streams a Parquet file's rows).

mod discover;
mod format;
mod parquet;
mod read;

use std::path::PathBuf;

use crate::error::Unit;

pub use discover::discover;
pub use format::{format_of, Compression, Format};
pub use read::{file_fingerprint, read_all};

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

pub struct ReadOptions {
    /// Fields to pull out of each Parquet row (JSON fields are extracted later).
    pub fields: Vec<String>,
    /// `.txt`: one document per line instead of one per file.
    pub text_per_line: bool,
}

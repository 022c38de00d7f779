//! `--num-tasks N --task-index I`: the I-th of N contiguous, byte-balanced portions of the inputs.
//!
//! The inputs are laid end to end by size and cut at N-1 evenly spaced byte offsets. A file that can
//! be read from the middle is cut there too: an uncompressed JSONL file (or text read a line a
//! document) at any byte, each line going to the task its first byte falls in; a Parquet file between
//! row groups, each row group going to the task its middle falls in. Any other file (compressed, or a
//! whole-file text document) goes whole to the task its middle falls in. Concatenating the tasks'
//! records in task order gives back every record once, in input order, which is what `merge` needs
//! for its output to equal a single run's.

use std::fs::File;

use crate::error::{Error, Location, Result, Unit};
use crate::input::{Compression, Format, InputFile, Portion};

/// The files (with the portion of each) that task `index` of `count` reads.
pub fn task_files(
    files: &[InputFile],
    count: usize,
    index: usize,
    text_per_line: bool,
) -> Result<Vec<InputFile>> {
    let total: u64 = files.iter().map(|f| f.size.max(1)).sum();
    let bound = |k: usize| -> u64 { (total as u128 * k as u128 / count.max(1) as u128) as u64 };
    let (lo, hi) = (bound(index), bound(index + 1));
    let mut out = Vec::new();
    let mut at = 0u64; // where the file starts in the inputs laid end to end
    for f in files {
        let size = f.size.max(1);
        let (start, end) = (at, at + size);
        at = end;
        let lines = match f.format {
            Format::Jsonl(Compression::None) => true,
            Format::Text(Compression::None) => text_per_line,
            _ => false,
        };
        if lines {
            // The lines that start in [lo, hi) of this file; the last task takes the file to its end.
            let (a, b) = (lo.max(start) - start, hi.min(end).saturating_sub(start));
            if a < b {
                let b = if hi >= total { f.size.max(b) } else { b };
                out.push(with(f, Portion::Lines { start: a, end: b }));
            }
            continue;
        }
        if f.format == Format::Parquet {
            let groups = row_group_sizes(f)?;
            if groups.len() > 1 {
                // Row group g spans its share of the file's bytes; it goes where its middle lies.
                let sum: u64 = groups.iter().map(|&g| g.max(1)).sum();
                let (mut first, mut last, mut acc) = (None, 0, 0u128);
                for (g, &gs) in groups.iter().enumerate() {
                    let w = gs.max(1) as u128;
                    let mid = start as u128 + (acc * 2 + w) * size as u128 / (2 * sum as u128);
                    acc += w;
                    if (lo as u128..hi as u128).contains(&mid) {
                        first.get_or_insert(g);
                        last = g + 1;
                    }
                }
                if let Some(first) = first {
                    out.push(with(
                        f,
                        Portion::RowGroups {
                            start: first,
                            end: last,
                        },
                    ));
                }
                continue;
            }
        }
        let mid = start + size / 2;
        if (lo..hi).contains(&mid) {
            out.push(f.clone());
        }
    }
    Ok(out)
}

fn with(f: &InputFile, portion: Portion) -> InputFile {
    InputFile {
        portion,
        ..f.clone()
    }
}

/// The compressed size of each row group of a Parquet file (from its footer).
fn row_group_sizes(f: &InputFile) -> Result<Vec<u64>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::BadInput {
        loc: Location {
            path: f.label.clone(),
            unit: Unit::File,
        },
        msg: format!("not a readable Parquet file: {e}"),
    })?;
    let meta = reader.metadata();
    Ok((0..meta.num_row_groups())
        .map(|g| meta.row_group(g).compressed_size().max(0) as u64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(size: u64, format: Format) -> InputFile {
        InputFile {
            path: PathBuf::new(),
            label: String::new(),
            format,
            size,
            portion: Portion::Whole,
        }
    }

    /// Whole files are each in one task, in order; line portions tile each file without a gap.
    #[test]
    fn tasks_cover_every_file_and_byte_once_in_order() {
        let zst = Format::Jsonl(Compression::Zstd);
        let plain = Format::Jsonl(Compression::None);
        let files = vec![
            file(5, zst),
            file(100, plain),
            file(1, zst),
            file(0, zst),
            file(37, plain),
        ];
        for count in 1..12 {
            let mut whole = Vec::new();
            let mut covered = vec![0u64; files.len()];
            for i in 0..count {
                for f in task_files(&files, count, i, false).unwrap() {
                    let k = files
                        .iter()
                        .position(|g| g.size == f.size && g.format == f.format)
                        .unwrap();
                    match f.portion {
                        Portion::Whole => whole.push(k),
                        Portion::Lines { start, end } => {
                            assert_eq!(start, covered[k], "count {count} task {i}");
                            covered[k] = end;
                        }
                        Portion::RowGroups { .. } => unreachable!(),
                    }
                }
            }
            assert_eq!(whole, vec![0, 2, 3], "count {count}");
            assert_eq!((covered[1], covered[4]), (100, 37), "count {count}");
        }
    }
}

//! Input formats and compressions, told from file names.

use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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

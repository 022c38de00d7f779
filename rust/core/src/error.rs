//! One error type for the whole core. Every variant that comes from input names where it is.

use std::path::PathBuf;

/// Where in the input a problem is: a file and, when known, the 1-based line (text formats)
/// or 0-based row (Parquet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    File,
    Line(u64),
    Row(u64),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.unit {
            Unit::File => write!(f, "{}", self.path),
            Unit::Line(n) => write!(f, "{}:{} (line {})", self.path, n, n),
            Unit::Row(n) => write!(f, "{} (row {})", self.path, n),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record the user's data got wrong: malformed JSON, bad UTF-8, a missing field.
    #[error("{loc}: {msg}")]
    BadRecord { loc: Location, msg: String },

    /// A whole input that cannot be read: missing, truncated, not the format its name says.
    #[error("{loc}: {msg}")]
    BadInput { loc: Location, msg: String },

    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: String, msg: String },

    /// A bad option or combination of options.
    #[error("{0}")]
    Config(String),

    /// The output directory, or a dataset being read back, is not what was expected.
    #[error("{path}: {msg}")]
    Dataset { path: String, msg: String },

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into().display().to_string(),
            source,
        }
    }

    pub fn dataset(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into().display().to_string(),
            msg: msg.into(),
        }
    }
}

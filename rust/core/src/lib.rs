//! midmix-core: the Python-free engine of midmix. Reads corpora, tokenizes exactly as Hugging
//! Face `tokenizers` does, packs, and writes MosaicML Streaming MDS datasets.

pub mod dataset;
pub mod error;
pub mod input;
pub mod manifest;
pub mod mds;
pub mod merge;
pub mod mix;
pub mod mixindex;
mod named;
pub mod pack;
pub mod paths;
pub mod plan;
pub mod pool;
pub mod prepare;
pub mod progress;
pub mod pyjson;
pub mod record;
pub mod samples;
pub mod staging;
pub mod tasks;
pub mod tokenize;
pub mod unigram;
pub mod verify;

pub use error::{Error, Location, Result, Unit};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

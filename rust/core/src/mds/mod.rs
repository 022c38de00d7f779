//! MosaicML Streaming's MDS format (version 2), written byte-for-byte as `streaming.MDSWriter`
//! 0.13.0 writes it, and read back for `inspect` and `merge`.
//!
//! Shard file: `u32 N | u32 offsets[N+1] | config JSON | samples`; a sample is `u32 sizes` of its
//! variable-size columns followed by every column's bytes, columns sorted by name.
//!
//! - `encoding`: column encodings and one sample's bytes;
//! - `shard`: the shard file format, compression, hashes and `index.json`;
//! - `writer`: `MdsWriter`, which streams samples into shards;
//! - `reader`: `MdsDataset` and its shards read back, and `MappedDataset` for random access;
//! - `integrity`: shards against `index.json` (counts, sizes, hashes).

mod encoding;
pub mod integrity;
mod reader;
mod shard;
mod writer;

pub use encoding::{
    decode_ndarray, encode_sample, sorted_columns, Column, ColumnValue, Dtype, Encoding,
};
pub use reader::{prune_cache, split_sample, MappedDataset, MdsDataset, Shard, ShardInfo};
pub use shard::{
    hash_hex, stored_bytes, with_content_hash, write_index, Compression, ShardFormat,
    WriterOptions, CONTENT_HASH, DEFAULT_SIZE_LIMIT, INDEX_FILE, SUPPORTED_HASHES,
};
pub use writer::MdsWriter;

//! Random access by sample index to any dataset midmix reads: MDS shards (prepared data,
//! materialized mixes, MDS from elsewhere) or an index mix over its sources. Readers (the Python
//! loaders, `stats`, `verify`) go through this, so both forms of a mix read the same.

use std::borrow::Cow;
use std::path::Path;

use crate::error::Result;
use crate::manifest::Manifest;
use crate::mds::{Column, MappedDataset};
use crate::mixindex::IndexedMix;

pub enum Samples {
    Mds(MappedDataset),
    Index(Box<IndexedMix>),
}

impl Samples {
    /// Open `dir` (the validated open, `crate::dataset::open`) as an index mix when its
    /// `midmix.json` says so, else as MDS. Compressed shards are decompressed into `cache`. Returns
    /// the manifest the open read too (None for MDS written elsewhere).
    pub fn open(dir: &Path, cache: &Path) -> Result<(Samples, Option<Manifest>)> {
        let opened = crate::dataset::open(dir)?;
        let samples = match opened.mds {
            Some(ds) => Samples::Mds(MappedDataset::new(ds, cache)),
            None => Samples::Index(Box::new(IndexedMix::open(dir, cache)?)),
        };
        Ok((samples, opened.manifest))
    }

    pub fn num_samples(&self) -> u64 {
        match self {
            Samples::Mds(d) => d.num_samples(),
            Samples::Index(m) => m.num_samples(),
        }
    }

    /// Columns in MDS order (sorted by name), as a materialized copy would store them.
    pub fn columns(&self) -> Result<Vec<Column>> {
        match self {
            Samples::Mds(d) => Ok(d.dataset().columns.clone()),
            Samples::Index(m) => m.columns(),
        }
    }

    /// Sample `k` encoded as MDS stores it (`source` byte then tokens, for a mix); None past
    /// the end, an error when its shard or the mix's index is damaged.
    pub fn encoded(&self, k: u64) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(match self {
            Samples::Mds(d) => d.sample(k)?.map(Cow::Borrowed),
            Samples::Index(m) => m.sample(k)?.map(|(s, t)| {
                let mut v = Vec::with_capacity(1 + t.len());
                v.push(s);
                v.extend_from_slice(t);
                Cow::Owned(v)
            }),
        })
    }

    /// (source, token bytes) of sample `k` of fixed-size `[source +] tokens` data; `with_source`
    /// says whether MDS samples start with a `source` byte (an index mix always has one).
    pub fn tokens(&self, k: u64, with_source: bool) -> Result<Option<(u8, &[u8])>> {
        match self {
            Samples::Mds(d) => Ok(d.sample(k)?.and_then(|s| {
                if with_source {
                    Some((*s.first()?, &s[1..]))
                } else {
                    Some((0, s))
                }
            })),
            Samples::Index(m) => m.sample(k),
        }
    }
}

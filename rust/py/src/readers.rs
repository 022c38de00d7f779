//! Random access to a dataset's samples from memory-mapped shards: `TokenReader` gathers the
//! fixed-size `tokens` (+ `source`) of pretraining data and mixes into one numpy array without
//! decoding; `SampleReader` returns whole samples of any layout (SFT data, inspect) as dicts.
//! Both keep the shards mapped, so a read costs the sample, not the shard, and both read an index
//! mix through its sources (`midmix_core::samples`).

use std::path::{Path, PathBuf};

use midmix_core::mds::{self, Column, Dtype, Encoding};
use midmix_core::samples::Samples;
use numpy::PyArray1;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::arrays::{array, scalar};
use crate::errors::{to_py, DatasetError, MidmixError};

/// Where readers keep decompressed shards: `$MIDMIX_CACHE_DIR`, else `midmix-cache` in the temp
/// directory. Shared by every reader on the machine (DataLoader workers, ranks, later runs); each
/// dataset has its own directory in it (`midmix_core::dataset::open_mapped`).
fn cache_root() -> PathBuf {
    std::env::var_os("MIDMIX_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("midmix-cache"))
}

/// Cache entries no reader opened for this long are removed when a reader opens.
const CACHE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Open `dir` through the core's validated open (`midmix_core::dataset`), its shards (an index
/// mix: its sources' shards) mapped on first use and checked against their content hashes then.
/// Compressed shards are decompressed once into the cache (`cache_root`), one directory per
/// dataset. Returns the vocabulary size the manifest records (token ids must be below it), when
/// there is a manifest.
fn open_samples(dir: &Path) -> PyResult<(Samples, Vec<Column>, Option<u64>)> {
    let cache = cache_root();
    mds::prune_cache(&cache, CACHE_MAX_AGE);
    let (data, manifest) = Samples::open(dir, &cache).map_err(to_py)?;
    let vocab = manifest.map(|m| m.tokenizer().vocab_size);
    let columns = data.columns().map_err(to_py)?;
    Ok((data, columns, vocab))
}

/// Gathered tokens [n, seq_len] (stored dtype) and, for mixes, the source of each sample.
type Batch<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyArray1<u8>>>);
/// The same with the tokens decoded to int64.
type Int64Batch<'py> = (
    Bound<'py, numpy::PyArray2<i64>>,
    Option<Bound<'py, PyArray1<u8>>>,
);

#[pyclass(name = "TokenReader", frozen)]
pub struct TokenReader {
    data: Samples,
    seq_len: usize,
    dtype: Dtype,
    has_source: bool,
    /// Ids must be below this (from midmix.json): a larger one means a corrupt shard.
    vocab: Option<u64>,
    dir: PathBuf,
}

#[pymethods]
impl TokenReader {
    #[new]
    fn new(dir: PathBuf) -> PyResult<Self> {
        let (data, cols, vocab) = open_samples(&dir)?;
        let bad = || {
            DatasetError::new_err(format!(
                "{}: expected fixed-size columns tokens [+ source]",
                dir.display()
            ))
        };
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        let has_source = match names.as_slice() {
            ["tokens"] => false,
            ["source", "tokens"] => cols[0].encoding == Encoding::Scalar(Dtype::U8),
            _ => return Err(bad()),
        };
        let Encoding::NdArray {
            dtype: Some(dtype @ (Dtype::U16 | Dtype::U32)),
            shape: Some(shape),
        } = &cols[cols.len() - 1].encoding
        else {
            return Err(bad());
        };
        Ok(TokenReader {
            seq_len: shape.iter().product::<u64>() as usize,
            dtype: *dtype,
            data,
            has_source,
            vocab,
            dir,
        })
    }

    #[getter]
    fn num_samples(&self) -> u64 {
        self.data.num_samples()
    }

    #[getter]
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn __len__(&self) -> usize {
        self.data.num_samples() as usize
    }

    /// Samples `indices` as (tokens [n, seq_len] in the stored dtype, source [n] or None).
    fn gather<'py>(&self, py: Python<'py>, indices: Vec<u64>) -> PyResult<Batch<'py>> {
        let width = self.dtype.size() * self.seq_len;
        let mut tokens = vec![0u8; indices.len() * width];
        let mut sources = vec![0u8; if self.has_source { indices.len() } else { 0 }];
        for (j, &k) in indices.iter().enumerate() {
            let (src, row) = self.row(k)?;
            if self.has_source {
                sources[j] = src;
            }
            tokens[j * width..(j + 1) * width].copy_from_slice(row);
        }
        let arr = array(py, self.dtype, &tokens)?.into_bound(py);
        let arr = arr.call_method1("reshape", ([indices.len(), self.seq_len],))?;
        Ok((
            arr,
            self.has_source.then(|| PyArray1::from_vec(py, sources)),
        ))
    }

    /// Samples `start + stride·j` for j < count, decoded straight into int64 (what embedding layers
    /// take), as (tokens [count, seq_len], source [count] or None). One pass, no intermediate copy.
    fn read_strided<'py>(
        &self,
        py: Python<'py>,
        start: u64,
        stride: u64,
        count: usize,
    ) -> PyResult<Int64Batch<'py>> {
        // Filled by extending (no zeroing pass first): one write per token.
        let mut tokens: Vec<i64> = Vec::with_capacity(count * self.seq_len);
        let mut sources = Vec::with_capacity(if self.has_source { count } else { 0 });
        for j in 0..count {
            let (src, row) = self.row(start + stride * j as u64)?;
            if self.has_source {
                sources.push(src);
            }
            match self.dtype {
                Dtype::U16 => tokens.extend(
                    row.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64),
                ),
                _ => tokens.extend(
                    row.chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64),
                ),
            }
        }
        self.check_ids(start, tokens.iter().copied().max())?;
        let arr = numpy::ndarray::Array2::from_shape_vec((count, self.seq_len), tokens)
            .map_err(|e| MidmixError::new_err(e.to_string()))?;
        Ok((
            numpy::PyArray2::from_owned_array(py, arr),
            self.has_source.then(|| PyArray1::from_vec(py, sources)),
        ))
    }
}

impl TokenReader {
    /// Refuse a batch holding an id at or past the vocabulary: one compare per token, while the
    /// ids are hot in cache, against a corrupt shard that would otherwise train silently.
    fn check_ids(&self, first: u64, max: Option<i64>) -> PyResult<()> {
        match (self.vocab, max) {
            (Some(v), Some(m)) if m as u64 >= v => Err(DatasetError::new_err(format!(
                "{}: token id {m} ≥ vocab size {v} in the batch starting at sample {first}: corrupt shard? \
                 (`midmix verify` names it)",
                self.dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// (source index, token bytes) of sample `k`.
    fn row(&self, k: u64) -> PyResult<(u8, &[u8])> {
        let width = self.dtype.size() * self.seq_len;
        let at_sample = |e: midmix_core::Error| match e {
            // Which sample the reader was asked for: the failure is reported in its training step.
            midmix_core::Error::Dataset { path, msg } => to_py(midmix_core::Error::Dataset {
                path,
                msg: format!("{msg} (reading position {k} of {})", self.dir.display()),
            }),
            other => to_py(other),
        };
        match self.data.tokens(k, self.has_source).map_err(at_sample)? {
            Some((s, t)) if t.len() == width => Ok((s, t)),
            Some(_) => Err(DatasetError::new_err(format!(
                "{}: sample {k} is not {width} bytes: corrupt",
                self.dir.display()
            ))),
            None => Err(PyIndexError::new_err(format!(
                "sample {k} out of range: {} has {} samples",
                self.dir.display(),
                self.data.num_samples()
            ))),
        }
    }
}

#[pyclass(name = "SampleReader", frozen)]
pub struct SampleReader {
    data: Samples,
    columns: Vec<Column>,
    dir: PathBuf,
}

#[pymethods]
impl SampleReader {
    #[new]
    fn new(dir: PathBuf) -> PyResult<Self> {
        let (data, columns, _) = open_samples(&dir)?;
        Ok(SampleReader { data, columns, dir })
    }

    /// Column names in the order MDS stores them (sorted).
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    fn __len__(&self) -> usize {
        self.data.num_samples() as usize
    }

    /// Sample `index` as {column: value}: ndarrays as numpy arrays, str, bytes, numbers.
    fn __getitem__<'py>(&self, py: Python<'py>, index: i64) -> PyResult<Bound<'py, PyDict>> {
        let total = self.data.num_samples();
        let k = if index < 0 {
            index + total as i64
        } else {
            index
        };
        if k < 0 || k as u64 >= total {
            return Err(PyIndexError::new_err(format!(
                "sample {index} out of range: {} has {total} samples",
                self.dir.display()
            )));
        }
        let corrupt =
            || DatasetError::new_err(format!("{}: sample {k} is corrupt", self.dir.display()));
        let bytes = self
            .data
            .encoded(k as u64)
            .map_err(to_py)?
            .ok_or_else(corrupt)?;
        let cols = mds::split_sample(&self.columns, &bytes).ok_or_else(corrupt)?;
        let out = PyDict::new(py);
        for (col, bytes) in self.columns.iter().zip(cols) {
            let value: Py<PyAny> = match &col.encoding {
                Encoding::Str => String::from_utf8_lossy(bytes)
                    .into_owned()
                    .into_pyobject(py)?
                    .into_any()
                    .unbind(),
                Encoding::Bytes => PyBytes::new(py, bytes).into_any().unbind(),
                Encoding::Scalar(d) => scalar(py, *d, bytes)?,
                enc @ Encoding::NdArray { .. } => {
                    let (dtype, _shape, values) =
                        mds::decode_ndarray(enc, bytes).ok_or_else(corrupt)?;
                    array(py, dtype, values)?
                }
            };
            out.set_item(&col.name, value)?;
        }
        Ok(out)
    }
}

pub fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TokenReader>()?;
    m.add_class::<SampleReader>()?;
    Ok(())
}

//! `Tokenizer`: a tokenizer.json loaded with midmix's encoder (the one `prepare` uses).

use std::path::PathBuf;
use std::sync::Arc;

use midmix_core::tokenize::{Encoder, EncoderChoice};
use numpy::PyArray1;
use pyo3::prelude::*;

use crate::errors::to_py;

/// Concatenated ids and the offsets of each text's ids.
type FlatIds<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<u64>>);

#[pyclass(name = "Tokenizer", frozen)]
pub struct PyTokenizer {
    inner: Arc<Encoder>,
}

#[pymethods]
impl PyTokenizer {
    #[new]
    #[pyo3(signature = (path, encoder="auto"))]
    fn new(path: PathBuf, encoder: &str) -> PyResult<Self> {
        let encoder = EncoderChoice::parse(encoder).map_err(to_py)?;
        Ok(PyTokenizer {
            // Shared with every prepare and Tokenizer of this process on the same file contents.
            inner: Encoder::shared(&path, encoder).map_err(to_py)?,
        })
    }

    /// Ids of `text`, as `tokenizers` gives them with `add_special_tokens=False`.
    fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        py.detach(|| self.inner.encode(text)).map_err(to_py)
    }

    /// Ids of each text, encoded in parallel (as `prepare` encodes its batches).
    #[pyo3(signature = (texts, threads=None))]
    fn encode_batch(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        threads: Option<usize>,
    ) -> PyResult<Vec<Vec<u32>>> {
        let enc = self.inner.clone();
        py.detach(move || {
            let pool = midmix_core::pool::thread_pool(threads)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            pool.install(|| enc.encode_batch(&refs))
        })
        .map_err(to_py)
    }

    /// All texts' ids concatenated (uint32) and where each text's ids start and end (uint64,
    /// len(texts) + 1 offsets): no Python list per token.
    #[pyo3(signature = (texts, threads=None))]
    fn encode_batch_flat<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        threads: Option<usize>,
    ) -> PyResult<FlatIds<'py>> {
        let enc = self.inner.clone();
        let (flat, offsets) = py
            .detach(move || {
                let pool = midmix_core::pool::thread_pool(threads)?;
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let ids = pool.install(|| enc.encode_batch(&refs))?;
                let mut offsets = Vec::with_capacity(ids.len() + 1);
                offsets.push(0u64);
                let mut flat = Vec::with_capacity(ids.iter().map(Vec::len).sum());
                for doc in ids {
                    flat.extend_from_slice(&doc);
                    offsets.push(flat.len() as u64);
                }
                Ok::<_, midmix_core::Error>((flat, offsets))
            })
            .map_err(to_py)?;
        Ok((
            PyArray1::from_vec(py, flat),
            PyArray1::from_vec(py, offsets),
        ))
    }

    #[pyo3(signature = (ids, skip_special_tokens=false))]
    fn decode(&self, ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        self.inner.decode(&ids, skip_special_tokens).map_err(to_py)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    #[getter]
    fn vocab_size(&self) -> u64 {
        self.inner.vocab_size
    }

    #[getter]
    fn sha256(&self) -> String {
        self.inner.fingerprint.clone()
    }

    /// "fastokens" or "hf-tokenizers".
    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend_name()
    }

    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.inner.default_eos().map(|(_, id)| id)
    }
}

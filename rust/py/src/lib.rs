//! `midmix._core`: a thin PyO3 layer over midmix-core. Work runs with the GIL released; errors
//! become the exception classes below, carrying the file and line/row at fault.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use midmix_core::mds::{self, Dtype, Encoding, MdsDataset, WriterOptions};
use midmix_core::prepare::{Mode, OnBadRecord, PrepareOptions};
use midmix_core::report::SftInfo;
use midmix_core::tokenize::{Encoder, EncoderChoice};
use midmix_core::{Error, Unit};
use numpy::PyArray1;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(
    _core,
    MidmixError,
    PyException,
    "Base class of every midmix error."
);
create_exception!(
    _core,
    InputError,
    MidmixError,
    "A bad input file or record; `.path`, `.line`, `.row` say where."
);
create_exception!(
    _core,
    TokenizerError,
    MidmixError,
    "A tokenizer that cannot be read or used."
);
create_exception!(
    _core,
    ConfigError,
    MidmixError,
    "A bad option or combination of options."
);
create_exception!(
    _core,
    DatasetError,
    MidmixError,
    "An output or dataset directory that is not as expected."
);

fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    Python::attach(|py| {
        let (e, loc) = match &err {
            Error::BadRecord { loc, .. } | Error::BadInput { loc, .. } => {
                (InputError::new_err(msg), Some(loc.clone()))
            }
            Error::Tokenizer { .. } => (TokenizerError::new_err(msg), None),
            Error::Config(_) => (ConfigError::new_err(msg), None),
            Error::Dataset { .. } => (DatasetError::new_err(msg), None),
            Error::Io { .. } => (MidmixError::new_err(msg), None),
            Error::Interrupted => (pyo3::exceptions::PyKeyboardInterrupt::new_err(msg), None),
        };
        if let Some(loc) = loc {
            let v = e.value(py);
            let (line, row) = match loc.unit {
                Unit::Line(n) => (Some(n), None),
                Unit::Row(n) => (None, Some(n)),
                Unit::File => (None, None),
            };
            let _ = v.setattr("path", loc.path);
            let _ = v.setattr("line", line);
            let _ = v.setattr("row", row);
        }
        e
    })
}

/// Run `work` on its own thread with the GIL released, checking for Ctrl-C meanwhile; on an
/// interrupt, `cancel` tells the work to stop, and its staged output is removed.
fn run_interruptible<T: Send + 'static>(
    py: Python<'_>,
    cancel: Arc<AtomicBool>,
    work: impl FnOnce() -> midmix_core::Result<T> + Send + 'static,
) -> PyResult<T> {
    let handle = std::thread::spawn(work);
    while !handle.is_finished() {
        py.detach(|| std::thread::sleep(Duration::from_millis(50)));
        if let Err(e) = py.check_signals() {
            cancel.store(true, Ordering::Relaxed);
            let _ = py.detach(|| handle.join());
            return Err(e);
        }
    }
    match handle.join() {
        Ok(r) => r.map_err(to_py),
        Err(_) => Err(MidmixError::new_err("midmix worker thread panicked")),
    }
}

fn report_json(r: &midmix_core::report::Report) -> PyResult<String> {
    serde_json::to_string(r).map_err(|e| MidmixError::new_err(e.to_string()))
}

/// Prepare a dataset; returns its report (`midmix.json`) as a JSON string.
#[pyfunction]
#[pyo3(signature = (
    name, inputs, tokenizer, seq_len, out, *, input_labels=None, encoder="auto", overwrite=false,
    mode="pretrain", text_field=String::from("text"), text_per_line=false, prompt_field=String::from("prompt"),
    response_field=String::from("response"), mask_prompt=true, eos=None, bos=None, compression=None,
    hashes=vec![], size_limit=Some(mds::DEFAULT_SIZE_LIMIT), on_bad_record="error",
    num_tasks=None, task_index=None, threads=None, progress=false
))]
#[allow(clippy::too_many_arguments)]
fn prepare(
    py: Python<'_>,
    name: String,
    inputs: Vec<String>,
    tokenizer: PathBuf,
    seq_len: usize,
    out: PathBuf,
    input_labels: Option<Vec<String>>,
    encoder: &str,
    overwrite: bool,
    mode: &str,
    text_field: String,
    text_per_line: bool,
    prompt_field: String,
    response_field: String,
    mask_prompt: bool,
    eos: Option<String>,
    bos: Option<String>,
    compression: Option<String>,
    hashes: Vec<String>,
    size_limit: Option<u64>,
    on_bad_record: &str,
    num_tasks: Option<usize>,
    task_index: Option<usize>,
    threads: Option<usize>,
    progress: bool,
) -> PyResult<String> {
    let mut opts = PrepareOptions::new(&name, inputs, tokenizer, seq_len, out);
    opts.input_labels = input_labels;
    opts.encoder = EncoderChoice::parse(encoder).map_err(to_py)?;
    opts.overwrite = overwrite;
    opts.mode = match mode {
        "pretrain" => Mode::Pretrain {
            text_field,
            text_per_line,
        },
        "sft" => Mode::Sft(SftInfo {
            prompt_field,
            response_field,
            mask_prompt,
        }),
        m => {
            return Err(ConfigError::new_err(format!(
                "unknown mode '{m}': use pretrain or sft"
            )))
        }
    };
    opts.eos = eos;
    opts.bos = bos;
    opts.writer = WriterOptions {
        compression,
        hashes,
        size_limit,
    };
    opts.on_bad_record = match on_bad_record {
        "error" => OnBadRecord::Error,
        "skip" => OnBadRecord::Skip,
        m => {
            return Err(ConfigError::new_err(format!(
                "unknown --on-bad-record '{m}': use error or skip"
            )))
        }
    };
    opts.task = match (num_tasks, task_index) {
        (None, None) => None,
        (Some(n), Some(i)) => Some((n, i)),
        _ => {
            return Err(ConfigError::new_err(
                "--num-tasks and --task-index go together",
            ))
        }
    };
    opts.threads = threads;
    opts.progress = progress;
    let cancel = Arc::new(AtomicBool::new(false));
    opts.cancel = Some(cancel.clone());
    let report = run_interruptible(py, cancel, move || midmix_core::prepare::prepare(&opts))?;
    report_json(&report)
}

/// Merge the parts of a `--num-tasks` prepare; returns the merged report as a JSON string.
#[pyfunction]
#[pyo3(signature = (parts, out, *, overwrite=false, progress=false))]
fn merge(
    py: Python<'_>,
    parts: Vec<PathBuf>,
    out: PathBuf,
    overwrite: bool,
    progress: bool,
) -> PyResult<String> {
    let opts = midmix_core::merge::MergeOptions {
        parts,
        out,
        overwrite,
        progress,
    };
    let report = run_interruptible(py, Arc::new(AtomicBool::new(false)), move || {
        midmix_core::merge::merge(&opts)
    })?;
    report_json(&report)
}

/// Sample `index` of an MDS directory as {column: value}; ndarrays come back as numpy arrays.
#[pyfunction]
fn read_sample<'py>(py: Python<'py>, dir: PathBuf, index: u64) -> PyResult<Bound<'py, PyDict>> {
    let ds = MdsDataset::open(&dir).map_err(to_py)?;
    let total = ds.num_samples();
    if index >= total {
        return Err(pyo3::exceptions::PyIndexError::new_err(format!(
            "sample {index} out of range: {} has {total} samples",
            dir.display()
        )));
    }
    let (mut shard_i, mut local) = (0usize, index);
    while local >= ds.shards[shard_i].samples {
        local -= ds.shards[shard_i].samples;
        shard_i += 1;
    }
    let shard = ds.load_shard(shard_i).map_err(to_py)?;
    let corrupt = || DatasetError::new_err(format!("{}: sample {index} is corrupt", dir.display()));
    let sample = shard.sample(local as usize).ok_or_else(corrupt)?;
    let cols = ds.split_sample(sample).ok_or_else(corrupt)?;
    let out = PyDict::new(py);
    for (col, bytes) in ds.columns.iter().zip(cols) {
        let value: Py<PyAny> = match &col.encoding {
            Encoding::Str => String::from_utf8_lossy(bytes)
                .into_owned()
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            Encoding::Bytes => pyo3::types::PyBytes::new(py, bytes).into_any().unbind(),
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

fn scalar(py: Python<'_>, d: Dtype, b: &[u8]) -> PyResult<Py<PyAny>> {
    let bad = || DatasetError::new_err("scalar column has the wrong size");
    macro_rules! int {
        ($t:ty) => {
            <$t>::from_le_bytes(b.try_into().map_err(|_| bad())?)
                .into_pyobject(py)?
                .into_any()
                .unbind()
        };
    }
    Ok(match d {
        Dtype::U8 => int!(u8),
        Dtype::I8 => int!(i8),
        Dtype::U16 => int!(u16),
        Dtype::I16 => int!(i16),
        Dtype::U32 => int!(u32),
        Dtype::I32 => int!(i32),
        Dtype::U64 => int!(u64),
        Dtype::I64 => int!(i64),
        Dtype::F32 => int!(f32),
        Dtype::F64 => int!(f64),
        Dtype::F16 => return Err(DatasetError::new_err("float16 scalars are not supported")),
    })
}

fn array(py: Python<'_>, d: Dtype, b: &[u8]) -> PyResult<Py<PyAny>> {
    macro_rules! arr {
        ($t:ty, $n:expr) => {
            PyArray1::from_vec(
                py,
                b.chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])))
                    .collect::<Vec<$t>>(),
            )
            .into_any()
            .unbind()
        };
    }
    Ok(match d {
        Dtype::U8 => arr!(u8, 1),
        Dtype::I8 => arr!(i8, 1),
        Dtype::U16 => arr!(u16, 2),
        Dtype::I16 => arr!(i16, 2),
        Dtype::U32 => arr!(u32, 4),
        Dtype::I32 => arr!(i32, 4),
        Dtype::U64 => arr!(u64, 8),
        Dtype::I64 => arr!(i64, 8),
        Dtype::F32 => arr!(f32, 4),
        Dtype::F64 => arr!(f64, 8),
        Dtype::F16 => return Err(DatasetError::new_err("float16 arrays are not supported")),
    })
}

/// A phase as Python passes it: (length kind, length, [(source, weight)], ramp).
type PhaseTuple = (String, u64, Vec<(String, f64)>, bool);
/// A gathered batch: tokens [n, seq_len] and, for mixes, the source of each sample.
type Batch<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyArray1<u8>>>);
/// Concatenated ids and the offsets of each text's ids.
type FlatIds<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<u64>>);
/// The same with the tokens decoded to int64.
type Int64Batch<'py> = (
    Bound<'py, numpy::PyArray2<i64>>,
    Option<Bound<'py, PyArray1<u8>>>,
);

/// Build a weighted, scheduled mix; returns its report (`midmix.json`) as a JSON string.
/// `phases`: (length kind "tokens" | "samples" | "fill", length, [(source, weight)], ramp).
#[pyfunction]
#[pyo3(signature = (
    sources, phases, out, *, seed=0, global_batch=None, exact_per_batch=false, on_exhaust="error",
    max_repeat=None, overwrite=false, size_limit=Some(mds::DEFAULT_SIZE_LIMIT), threads=None, progress=false
))]
#[allow(clippy::too_many_arguments)]
fn build_mix(
    py: Python<'_>,
    sources: Vec<(String, PathBuf)>,
    phases: Vec<PhaseTuple>,
    out: PathBuf,
    seed: u64,
    global_batch: Option<u64>,
    exact_per_batch: bool,
    on_exhaust: &str,
    max_repeat: Option<u64>,
    overwrite: bool,
    size_limit: Option<u64>,
    threads: Option<usize>,
    progress: bool,
) -> PyResult<String> {
    use midmix_core::mix::{Length, MixOptions, OnExhaust, PhaseSpec};
    let phases = phases
        .into_iter()
        .map(|(kind, n, weights, ramp)| {
            let length = match kind.as_str() {
                "tokens" => Length::Tokens(n),
                "samples" => Length::Samples(n),
                "fill" => Length::Fill,
                k => {
                    return Err(ConfigError::new_err(format!(
                        "unknown phase length kind '{k}'"
                    )))
                }
            };
            Ok(PhaseSpec {
                length,
                weights,
                ramp,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let on_exhaust = match (on_exhaust, max_repeat) {
        ("error", None) => OnExhaust::Error,
        ("repeat", m) => OnExhaust::Repeat(m),
        ("stop", None) => OnExhaust::Stop,
        (_, Some(_)) => {
            return Err(ConfigError::new_err(
                "--max-repeat goes with --on-exhaust repeat",
            ))
        }
        (m, _) => {
            return Err(ConfigError::new_err(format!(
                "unknown --on-exhaust '{m}': use error, repeat or stop"
            )))
        }
    };
    let opts = MixOptions {
        sources,
        phases,
        seed,
        global_batch,
        exact_per_batch,
        on_exhaust,
        out,
        overwrite,
        size_limit,
        threads,
        progress,
    };
    let report = run_interruptible(py, Arc::new(AtomicBool::new(false)), move || {
        midmix_core::mix::build_mix(&opts)
    })?;
    serde_json::to_string(&report).map_err(|e| MidmixError::new_err(e.to_string()))
}

/// Unigram counts as Python gets them: (counts uint64 [ids], documents, tokens, skipped).
type UnigramTuple<'py> = (Bound<'py, PyArray1<u64>>, u64, u64, u64);

fn unigram_tuple(py: Python<'_>, u: midmix_core::unigram::Unigram) -> UnigramTuple<'_> {
    (
        PyArray1::from_vec(py, u.counts),
        u.documents,
        u.tokens,
        u.skipped,
    )
}

/// Token-id counts over raw inputs, tokenized as `prepare` tokenizes (no special tokens added).
#[pyfunction]
#[pyo3(signature = (
    inputs, tokenizer, *, fields=vec![String::from("text")], text_per_line=false, max_docs=None,
    max_tokens_per_doc=None, seed=0, encoder="auto", threads=None
))]
#[allow(clippy::too_many_arguments)]
fn unigram_raw<'py>(
    py: Python<'py>,
    inputs: Vec<String>,
    tokenizer: PathBuf,
    fields: Vec<String>,
    text_per_line: bool,
    max_docs: Option<u64>,
    max_tokens_per_doc: Option<usize>,
    seed: u64,
    encoder: &str,
    threads: Option<usize>,
) -> PyResult<UnigramTuple<'py>> {
    let opts = midmix_core::unigram::RawOptions {
        inputs,
        tokenizer,
        encoder: EncoderChoice::parse(encoder).map_err(to_py)?,
        fields,
        text_per_line,
        max_docs,
        max_tokens_per_doc,
        seed,
        threads,
    };
    let u = run_interruptible(py, Arc::new(AtomicBool::new(false)), move || {
        midmix_core::unigram::count_raw(&opts)
    })?;
    Ok(unigram_tuple(py, u))
}

/// Token-id counts of a prepared or mixed dataset, without re-tokenizing; `exclude` ids are not
/// counted (pass the EOS/BOS that `prepare` inserted).
#[pyfunction]
#[pyo3(signature = (dir, *, exclude=vec![], threads=None))]
fn unigram_dataset(
    py: Python<'_>,
    dir: PathBuf,
    exclude: Vec<u32>,
    threads: Option<usize>,
) -> PyResult<UnigramTuple<'_>> {
    let u = run_interruptible(py, Arc::new(AtomicBool::new(false)), move || {
        midmix_core::unigram::count_dataset(&dir, &exclude, threads)
    })?;
    Ok(unigram_tuple(py, u))
}

/// Random access to a pretraining or mix dataset's fixed-size `tokens` (and `source`) columns,
/// from memory-mapped shards: the gather runs in Rust, without decoding, into one numpy array.
#[pyclass(name = "MixReader", frozen)]
struct PyMixReader {
    source: midmix_core::mix::Source,
    seq_len: usize,
    dtype: Dtype,
    has_source: bool,
}

#[pymethods]
impl PyMixReader {
    #[new]
    fn new(dir: PathBuf) -> PyResult<Self> {
        let cache = std::env::temp_dir().join(format!("midmix-reader-{}", std::process::id()));
        let source = midmix_core::mix::Source::open(&dir, &cache).map_err(to_py)?;
        let cols = &source.dataset().columns;
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
            dtype: Some(dtype),
            shape: Some(shape),
        } = &cols[cols.len() - 1].encoding
        else {
            return Err(bad());
        };
        Ok(PyMixReader {
            seq_len: shape.iter().product::<u64>() as usize,
            dtype: *dtype,
            source,
            has_source,
        })
    }

    #[getter]
    fn num_samples(&self) -> u64 {
        self.source.num_samples()
    }

    #[getter]
    fn seq_len(&self) -> usize {
        self.seq_len
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
        let arr = numpy::ndarray::Array2::from_shape_vec((count, self.seq_len), tokens)
            .map_err(|e| MidmixError::new_err(e.to_string()))?;
        Ok((
            numpy::PyArray2::from_owned_array(py, arr),
            self.has_source.then(|| PyArray1::from_vec(py, sources)),
        ))
    }
}

impl PyMixReader {
    /// (source index, token bytes) of sample `k`.
    fn row(&self, k: u64) -> PyResult<(u8, &[u8])> {
        let width = self.dtype.size() * self.seq_len;
        let skip = usize::from(self.has_source);
        let s = self
            .source
            .sample(k)
            .filter(|s| s.len() == width + skip)
            .ok_or_else(|| {
                pyo3::exceptions::PyIndexError::new_err(format!(
                    "sample {k} out of range or corrupt"
                ))
            })?;
        Ok((if self.has_source { s[0] } else { 0 }, &s[skip..]))
    }
}

/// A tokenizer.json loaded with midmix's encoder (the same one `prepare` uses).
#[pyclass(name = "Tokenizer", frozen)]
struct PyTokenizer {
    inner: Arc<Encoder>,
}

#[pymethods]
impl PyTokenizer {
    #[new]
    #[pyo3(signature = (path, encoder="auto"))]
    fn new(path: PathBuf, encoder: &str) -> PyResult<Self> {
        let choice = EncoderChoice::parse(encoder).map_err(to_py)?;
        Ok(PyTokenizer {
            inner: Arc::new(Encoder::from_file(&path, choice).map_err(to_py)?),
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
            let pool = midmix_core::prepare::thread_pool(threads)?;
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
                let pool = midmix_core::prepare::thread_pool(threads)?;
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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", midmix_core::VERSION)?;
    m.add("MidmixError", py.get_type::<MidmixError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("DatasetError", py.get_type::<DatasetError>())?;
    m.add_function(wrap_pyfunction!(prepare, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(read_sample, m)?)?;
    m.add_function(wrap_pyfunction!(build_mix, m)?)?;
    m.add_function(wrap_pyfunction!(unigram_raw, m)?)?;
    m.add_function(wrap_pyfunction!(unigram_dataset, m)?)?;
    m.add_class::<PyTokenizer>()?;
    m.add_class::<PyMixReader>()?;
    Ok(())
}

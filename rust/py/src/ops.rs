//! The long-running operations: prepare, merge, build-mix, export and unigram counting. Each takes one
//! options object (see `options.rs`) and returns what the core returns; and the validated open.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use numpy::PyArray1;
use pyo3::prelude::*;

use midmix_core::manifest::{Manifest, MixManifest};
use midmix_core::staging::OutputOptions;

use crate::errors::{run_interruptible, MidmixError};
use crate::errors::{to_py, DatasetError};
use crate::options::from_python;

/// A fresh stop flag, set in `output` (and returned for `run_interruptible`).
fn cancellable(output: &mut OutputOptions) -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    output.cancel = Some(cancel.clone());
    cancel
}

fn to_json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| MidmixError::new_err(e.to_string()))
}

/// Prepare a dataset; returns its manifest (`midmix.json`) as a JSON string.
#[pyfunction]
fn prepare(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut opts: midmix_core::prepare::PrepareOptions = from_python(options)?;
    let cancel = cancellable(&mut opts.output);
    let manifest = run_interruptible(py, cancel, move || midmix_core::prepare::prepare(&opts))?;
    to_json(&manifest)
}

/// Merge the parts of a `--num-tasks` prepare; returns the merged manifest as a JSON string.
#[pyfunction]
fn merge(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut opts: midmix_core::merge::MergeOptions = from_python(options)?;
    let cancel = cancellable(&mut opts.output);
    let manifest = run_interruptible(py, cancel, move || midmix_core::merge::merge(&opts))?;
    to_json(&manifest)
}

/// Build a weighted, scheduled mix; returns its manifest (`midmix.json`) as a JSON string.
#[pyfunction]
fn build_mix(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut opts: midmix_core::mix::MixOptions = from_python(options)?;
    let cancel = cancellable(&mut opts.output);
    let manifest = run_interruptible(py, cancel, move || midmix_core::mix::build_mix(&opts))?;
    to_json(&manifest)
}

/// Write an index mix as MDS shards; returns the exported mix's manifest as a JSON string.
#[pyfunction]
fn export(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut opts: midmix_core::mix::ExportOptions = from_python(options)?;
    let cancel = cancellable(&mut opts.output);
    let manifest = run_interruptible(py, cancel, move || midmix_core::mix::export(&opts))?;
    to_json(&manifest)
}

/// The plan's cumulative target per source among the first `n` positions of a mix, from its
/// manifest (`midmix.json` as a JSON string).
#[pyfunction]
fn planned_counts(manifest: &str, n: u64) -> PyResult<Vec<f64>> {
    let report: MixManifest = serde_json::from_str(manifest)
        .map_err(|e| DatasetError::new_err(format!("not a mix manifest: {e}")))?;
    midmix_core::mix::planned_counts(&report, n).map_err(to_py)
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
fn unigram_raw<'py>(py: Python<'py>, options: &Bound<'py, PyAny>) -> PyResult<UnigramTuple<'py>> {
    let mut opts: midmix_core::unigram::RawOptions = from_python(options)?;
    let cancel = Arc::new(AtomicBool::new(false));
    opts.cancel = Some(cancel.clone());
    let u = run_interruptible(py, cancel, move || midmix_core::unigram::count_raw(&opts))?;
    Ok(unigram_tuple(py, u))
}

/// Token-id counts of a prepared or mixed dataset, without re-tokenizing; `exclude` ids are not
/// counted (pass the EOS/BOS that `prepare` inserted).
#[pyfunction]
fn unigram_dataset(
    py: Python<'_>,
    dir: PathBuf,
    exclude: Vec<u32>,
    threads: Option<usize>,
) -> PyResult<UnigramTuple<'_>> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let u = run_interruptible(py, cancel, move || {
        midmix_core::unigram::count_dataset(&dir, &exclude, threads, Some(&flag))
    })?;
    Ok(unigram_tuple(py, u))
}

/// Check a dataset against its own records (counts, shard sizes, recorded hashes, ids below the
/// vocabulary); returns what was checked as a JSON string.
#[pyfunction]
fn verify(py: Python<'_>, dir: PathBuf) -> PyResult<String> {
    let cancel = Arc::new(AtomicBool::new(false));
    let report = run_interruptible(py, cancel, move || midmix_core::verify::verify(&dir))?;
    to_json(&report)
}

/// The one validated open (`midmix_core::dataset::open`, and for an index mix its index files and its
/// sources' identities, `IndexedMix`): returns `midmix.json` (None for MDS written elsewhere) and
/// `index.json` (None for an index mix) as JSON strings, read once they were checked.
#[pyfunction]
fn open_dataset(dir: PathBuf) -> PyResult<(Option<String>, Option<String>)> {
    let opened = midmix_core::dataset::open(&dir).map_err(to_py)?;
    let index = if opened.is_index_mix() {
        midmix_core::mixindex::IndexedMix::open_private(&dir).map_err(to_py)?;
        None
    } else {
        let path = dir.join(midmix_core::mds::INDEX_FILE);
        Some(
            std::fs::read_to_string(&path)
                .map_err(|e| to_py(midmix_core::error::Error::io(&path, e)))?,
        )
    };
    Ok((opened.manifest.as_ref().map(Manifest::to_json), index))
}

/// The JSON schema of `midmix.json` for each kind, as a JSON string: what `midmix.manifest`'s
/// dataclasses are checked against.
#[pyfunction]
fn manifest_schema() -> String {
    midmix_core::manifest::schema().to_string()
}

/// The one check of a phase's weights (`midmix_core::mix::check_weights`); `at` names the phase.
#[pyfunction]
fn check_weights(weights: Vec<(String, f64)>, at: &str) -> PyResult<()> {
    midmix_core::mix::check_weights(&weights, at).map_err(to_py)
}

/// Whether `dir` looks like a dataset to open (`midmix_core::dataset::is_dataset`).
#[pyfunction]
fn is_dataset(dir: PathBuf) -> bool {
    midmix_core::dataset::is_dataset(&dir)
}

pub fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(open_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(manifest_schema, m)?)?;
    m.add_function(wrap_pyfunction!(is_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(check_weights, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(prepare, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(build_mix, m)?)?;
    m.add_function(wrap_pyfunction!(export, m)?)?;
    m.add_function(wrap_pyfunction!(planned_counts, m)?)?;
    m.add_function(wrap_pyfunction!(unigram_raw, m)?)?;
    m.add_function(wrap_pyfunction!(unigram_dataset, m)?)?;
    Ok(())
}

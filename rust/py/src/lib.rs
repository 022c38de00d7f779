//! `midmix._core`: a thin PyO3 layer over midmix-core, private to the `midmix` package (whose
//! `api`, `dataset` and `tokenizer` modules are the public face). Work runs with the GIL released;
//! errors become `midmix.errors`' exception classes (`errors.rs`), carrying the file and line/row at fault.

mod arrays;
mod errors;
mod ops;
mod options;
mod readers;
mod tokenizer;

use pyo3::prelude::*;

/// The encoders allocate a vector per text piece and per batch, from several threads at once:
/// mimalloc's thread-local heaps make that several percent of prepare's CPU cheaper than glibc's
/// malloc. It serves only the Rust allocations of this module; Python keeps its own allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", midmix_core::VERSION)?;
    ops::add_to(m)?;
    readers::add_to(m)?;
    m.add_class::<tokenizer::PyTokenizer>()?;
    Ok(())
}

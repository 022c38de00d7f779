//! The exception classes that core errors become, and running core work off the GIL with Ctrl-C
//! handled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use midmix_core::{Error, Unit};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

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

pub fn add_to(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("MidmixError", py.get_type::<MidmixError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("TokenizerError", py.get_type::<TokenizerError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("DatasetError", py.get_type::<DatasetError>())?;
    Ok(())
}

/// A core error as the matching Python exception; input errors carry where they happened.
pub fn to_py(err: Error) -> PyErr {
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

/// Run `work` on its own thread with the GIL released, checking for Ctrl-C (and any other
/// signal Python raises on, such as SIGTERM with a handler) meanwhile. On a signal, `cancel`
/// (the flag the work's options carry) tells the work to stop; the work removes its staged
/// output, and the signal's exception is raised once it has.
pub fn run_interruptible<T: Send + 'static>(
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

//! The exceptions core errors become, and running core work off the GIL with Ctrl-C handled.
//!
//! The classes are `midmix.errors`' (plain Python classes, so they pickle out of DataLoader workers
//! and other processes); this module raises them by name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use midmix_core::{Error, Unit};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// `class::new_err(msg)` for each class of `midmix.errors`.
macro_rules! midmix_error {
    ($($name:ident),*) => {$(
        pub struct $name;
        impl $name {
            pub fn new_err(msg: impl Into<String>) -> PyErr {
                raise(stringify!($name), msg.into())
            }
        }
    )*};
}
midmix_error!(
    MidmixError,
    InputError,
    TokenizerError,
    ConfigError,
    DatasetError
);

/// An instance of `midmix.errors.<class>` with `msg` (the import error itself if the module is gone).
fn raise(class: &str, msg: String) -> PyErr {
    Python::attach(|py| {
        let cls = py
            .import("midmix.errors")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match cls {
            Ok(cls) => PyErr::from_type(cls, msg),
            Err(e) => e,
        }
    })
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

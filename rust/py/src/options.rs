//! The options objects of `midmix.options` as core option structs, converted by field name in one
//! generic place: Python hands the dataclass as plain data (`midmix.options.as_core`) and serde
//! (`pythonize`) builds the core struct, which refuses a missing or unknown field. Enum-valued
//! strings are parsed by the core's own parsers (`FromStr`), so every message about a bad value
//! comes from one place.

use pyo3::prelude::*;
use serde::de::DeserializeOwned;

use crate::errors::ConfigError;

/// `obj` (what `midmix.options.as_core` made of an options dataclass) as the core struct `T`; an
/// error names the field at fault (`output.threads: …`).
pub fn from_python<T: DeserializeOwned>(obj: &Bound<'_, PyAny>) -> PyResult<T> {
    let mut de = pythonize::Depythonizer::from_object(obj);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ConfigError::new_err(format!("{}: {}", e.path(), e.inner())))
}

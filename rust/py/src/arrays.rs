//! Little-endian column bytes → numpy arrays and Python scalars.

use midmix_core::mds::Dtype;
use numpy::PyArray1;
use pyo3::prelude::*;

use crate::errors::DatasetError;

pub fn scalar(py: Python<'_>, d: Dtype, b: &[u8]) -> PyResult<Py<PyAny>> {
    let bad = || DatasetError::new_err("scalar column has the wrong size");
    macro_rules! num {
        ($t:ty) => {
            <$t>::from_le_bytes(b.try_into().map_err(|_| bad())?)
                .into_pyobject(py)?
                .into_any()
                .unbind()
        };
    }
    Ok(match d {
        Dtype::U8 => num!(u8),
        Dtype::I8 => num!(i8),
        Dtype::U16 => num!(u16),
        Dtype::I16 => num!(i16),
        Dtype::U32 => num!(u32),
        Dtype::I32 => num!(i32),
        Dtype::U64 => num!(u64),
        Dtype::I64 => num!(i64),
        Dtype::F32 => num!(f32),
        Dtype::F64 => num!(f64),
        Dtype::F16 => return Err(DatasetError::new_err("float16 scalars are not supported")),
    })
}

/// A 1-d array of `d` from its bytes; a trailing partial element is an error, not a guess.
pub fn array(py: Python<'_>, d: Dtype, b: &[u8]) -> PyResult<Py<PyAny>> {
    if d != Dtype::F16 && !b.len().is_multiple_of(d.size()) {
        return Err(DatasetError::new_err(format!(
            "{} bytes are not a whole number of {} values",
            b.len(),
            d.name()
        )));
    }
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

//! Column encodings as `streaming` names them, and the bytes of one sample: encoding a sample
//! from its column values, and decoding an ndarray column back.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U8,
    I8,
    U16,
    I16,
    F16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "uint8" => Dtype::U8,
            "int8" => Dtype::I8,
            "uint16" => Dtype::U16,
            "int16" => Dtype::I16,
            "float16" => Dtype::F16,
            "uint32" => Dtype::U32,
            "int32" => Dtype::I32,
            "float32" => Dtype::F32,
            "uint64" => Dtype::U64,
            "int64" => Dtype::I64,
            "float64" => Dtype::F64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::U16 => "uint16",
            Dtype::I16 => "int16",
            Dtype::F16 => "float16",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::F32 => "float32",
            Dtype::U64 => "uint64",
            Dtype::I64 => "int64",
            Dtype::F64 => "float64",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The byte `streaming`'s NDArray encoding writes for the dtype when the spec omits it.
    fn code(self) -> u8 {
        match self {
            Dtype::U8 => 8,
            Dtype::I8 => 9,
            Dtype::U16 => 16,
            Dtype::I16 => 17,
            Dtype::F16 => 18,
            Dtype::U32 => 32,
            Dtype::I32 => 33,
            Dtype::F32 => 34,
            Dtype::U64 => 64,
            Dtype::I64 => 65,
            Dtype::F64 => 66,
        }
    }

    fn from_code(code: u8) -> Option<Dtype> {
        [
            Dtype::U8,
            Dtype::I8,
            Dtype::U16,
            Dtype::I16,
            Dtype::F16,
            Dtype::U32,
            Dtype::I32,
            Dtype::F32,
            Dtype::U64,
            Dtype::I64,
            Dtype::F64,
        ]
        .into_iter()
        .find(|d| d.code() == code)
    }
}

/// A column encoding as `streaming` names it (`uint8`, `int`, `str`, `bytes`, `ndarray:uint16:2048`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    Scalar(Dtype),
    Str,
    Bytes,
    NdArray {
        dtype: Option<Dtype>,
        shape: Option<Vec<u64>>,
    },
}

impl Encoding {
    pub fn parse(spec: &str) -> Result<Encoding> {
        let bad = || Error::Config(format!("unsupported MDS column encoding '{spec}'"));
        Ok(match spec {
            "str" => Encoding::Str,
            "bytes" => Encoding::Bytes,
            "int" => Encoding::Scalar(Dtype::I64),
            s if s == "ndarray" || s.starts_with("ndarray:") => {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() > 3 {
                    return Err(bad());
                }
                let dtype = match parts.get(1) {
                    Some(d) => Some(Dtype::parse(d).ok_or_else(bad)?),
                    None => None,
                };
                let shape = match parts.get(2) {
                    Some(sh) => {
                        let dims: Vec<u64> = sh
                            .split(',')
                            .map(|d| d.parse::<u64>().ok().filter(|&d| d >= 1))
                            .collect::<Option<_>>()
                            .ok_or_else(bad)?;
                        Some(dims)
                    }
                    None => None,
                };
                Encoding::NdArray { dtype, shape }
            }
            s => Encoding::Scalar(Dtype::parse(s).ok_or_else(bad)?),
        })
    }

    /// Byte size of a fixed-size column, `None` for a variable-size one.
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            Encoding::Scalar(d) => Some(d.size()),
            Encoding::NdArray {
                dtype: Some(d),
                shape: Some(shape),
            } => Some(shape.iter().product::<u64>() as usize * d.size()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub spec: String,
    pub encoding: Encoding,
}

/// One column's value for a sample.
pub enum ColumnValue<'a> {
    /// Already in the column's byte form: little-endian scalar, UTF-8 text, raw bytes, or the
    /// values of an ndarray whose dtype and shape are both in the spec.
    Raw(&'a [u8]),
    /// An ndarray whose spec leaves out the dtype or the shape (values little-endian, C order).
    Array {
        dtype: Dtype,
        shape: &'a [u64],
        data: &'a [u8],
    },
}

/// Columns sorted by name, as `MDSWriter` stores them.
pub fn sorted_columns(columns: &[(&str, &str)]) -> Result<Vec<Column>> {
    let mut cols: Vec<Column> = columns
        .iter()
        .map(|(n, s)| {
            Ok(Column {
                name: n.to_string(),
                spec: s.to_string(),
                encoding: Encoding::parse(s)?,
            })
        })
        .collect::<Result<_>>()?;
    cols.sort_by(|a, b| a.name.cmp(&b.name));
    for w in cols.windows(2) {
        if w[0].name == w[1].name {
            return Err(Error::Config(format!("duplicate column '{}'", w[0].name)));
        }
    }
    Ok(cols)
}

/// Append one encoded sample to `out`.
pub fn encode_sample(
    columns: &[Column],
    values: &[ColumnValue<'_>],
    out: &mut Vec<u8>,
) -> Result<()> {
    if values.len() != columns.len() {
        return Err(Error::Config(format!(
            "sample has {} values for {} columns",
            values.len(),
            columns.len()
        )));
    }
    let start = out.len();
    let var_count = columns
        .iter()
        .filter(|c| c.encoding.fixed_size().is_none())
        .count();
    out.resize(start + 4 * var_count, 0);
    let mut var_slot = 0;
    for (col, val) in columns.iter().zip(values) {
        let col_start = out.len();
        match (&col.encoding, val) {
            (
                Encoding::NdArray { dtype, shape },
                ColumnValue::Array {
                    dtype: d,
                    shape: s,
                    data,
                },
            ) => {
                if dtype.is_some_and(|spec| spec != *d) {
                    return Err(Error::Config(format!(
                        "column '{}' is {} but got {}",
                        col.name,
                        col.spec,
                        d.name()
                    )));
                }
                if s.is_empty() || s.contains(&0) || s.len() > 63 {
                    return Err(Error::Config(format!(
                        "column '{}': an ndarray needs 1..63 dimensions of size >= 1",
                        col.name
                    )));
                }
                let n: u64 = s.iter().product();
                if n as usize * d.size() != data.len() {
                    return Err(Error::Config(format!(
                        "column '{}': data does not match shape",
                        col.name
                    )));
                }
                if dtype.is_none() {
                    out.push(d.code());
                }
                match shape {
                    Some(spec_shape) if spec_shape.as_slice() != *s => {
                        return Err(Error::Config(format!(
                            "column '{}': shape differs from {}",
                            col.name, col.spec
                        )))
                    }
                    Some(_) => {}
                    None => {
                        let max = s.iter().copied().max().unwrap_or(0);
                        let (code, width) = if max < 1 << 8 {
                            (0u8, 1)
                        } else if max < 1 << 16 {
                            (1, 2)
                        } else if max < 1 << 32 {
                            (2, 4)
                        } else {
                            (3, 8)
                        };
                        out.push(((s.len() as u8) << 2) | code);
                        for &dim in s.iter() {
                            out.extend_from_slice(&dim.to_le_bytes()[..width]);
                        }
                    }
                }
                out.extend_from_slice(data);
            }
            (enc, ColumnValue::Raw(bytes)) => {
                if let Some(size) = enc.fixed_size() {
                    if bytes.len() != size {
                        return Err(Error::Config(format!(
                            "column '{}' ({}) takes {} bytes, got {}",
                            col.name,
                            col.spec,
                            size,
                            bytes.len()
                        )));
                    }
                } else if matches!(enc, Encoding::NdArray { .. }) {
                    return Err(Error::Config(format!(
                        "column '{}' needs an array value",
                        col.name
                    )));
                }
                out.extend_from_slice(bytes);
            }
            (_, ColumnValue::Array { .. }) => {
                return Err(Error::Config(format!(
                    "column '{}' is not an ndarray",
                    col.name
                )))
            }
        }
        if col.encoding.fixed_size().is_none() {
            let size = (out.len() - col_start) as u32;
            let at = start + 4 * var_slot;
            out[at..at + 4].copy_from_slice(&size.to_le_bytes());
            var_slot += 1;
        }
    }
    Ok(())
}

/// Decode an ndarray column's bytes into (dtype, shape, values) given its encoding.
pub fn decode_ndarray<'a>(enc: &Encoding, bytes: &'a [u8]) -> Option<(Dtype, Vec<u64>, &'a [u8])> {
    let Encoding::NdArray { dtype, shape } = enc else {
        return None;
    };
    let mut pos = 0;
    let dtype = match dtype {
        Some(d) => *d,
        None => {
            pos += 1;
            Dtype::from_code(*bytes.first()?)?
        }
    };
    let shape = match shape {
        Some(s) => s.clone(),
        None => {
            let b = *bytes.get(pos)?;
            pos += 1;
            let ndim = (b >> 2) as usize;
            let width = 1usize << (b & 3);
            let mut s = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                let mut buf = [0u8; 8];
                buf[..width].copy_from_slice(bytes.get(pos..pos + width)?);
                s.push(u64::from_le_bytes(buf));
                pos += width;
            }
            s
        }
    };
    let values = bytes.get(pos..)?;
    if values.len() != shape.iter().product::<u64>() as usize * dtype.size() {
        return None;
    }
    Some((dtype, shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_encodings() {
        assert!(Encoding::parse("ndarray:uint16:0").is_err());
        assert!(Encoding::parse("pkl").is_err());
    }
}

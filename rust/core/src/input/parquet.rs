//! Streaming a Parquet file's requested columns row by row.

use std::fs::File;

use super::{FieldValue, InputFile, Portion};
use crate::error::{Error, Location, Result, Unit};

/// Stream a Parquet file's requested columns row by row: `row(index, values, fraction_done)`.
pub(super) fn read_parquet(
    f: &InputFile,
    fields: &[String],
    row_fn: &mut dyn FnMut(u64, Vec<Option<FieldValue>>, f64) -> bool,
) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let bad = |unit, msg: String| Error::BadInput {
        loc: Location {
            path: f.label.clone(),
            unit,
        },
        msg,
    };
    let file = File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(Unit::File, format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let root = schema.root_schema();
    let mut projected = Vec::new();
    for name in fields {
        let field = root
            .get_fields()
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = root.get_fields().iter().map(|t| t.name()).collect();
                bad(
                    Unit::File,
                    format!("no column '{name}' (columns: {})", names.join(", ")),
                )
            })?;
        projected.push(field.clone());
    }
    let projection = parquet::schema::types::Type::group_type_builder(root.name())
        .with_fields(projected)
        .build()
        .map_err(|e| bad(Unit::File, e.to_string()))?;
    let meta = reader.metadata();
    let groups = match f.portion {
        Portion::RowGroups { start, end } => start..end.min(meta.num_row_groups()),
        _ => 0..meta.num_row_groups(),
    };
    // Row numbers count from the start of the file, whichever row groups are read.
    let first_row: u64 = (0..groups.start)
        .map(|g| meta.row_group(g).num_rows() as u64)
        .sum();
    let read_rows: u64 = groups
        .clone()
        .map(|g| meta.row_group(g).num_rows() as u64)
        .sum();
    let total_rows = read_rows.max(1) as f64;
    let mut k = 0u64; // rows read so far
    for g in groups {
        // Row group by row group, streamed: one group's rows are never all held at once.
        let group = reader
            .get_row_group(g)
            .map_err(|e| bad(Unit::File, format!("cannot read row group {g}: {e}")))?;
        let rows = group
            .get_row_iter(Some(projection.clone()))
            .map_err(|e| bad(Unit::File, format!("cannot read rows: {e}")))?;
        for row in rows {
            let i = first_row + k;
            k += 1;
            let row = row.map_err(|e| {
                bad(
                    Unit::Row(i),
                    format!("truncated or corrupt Parquet data: {e}"),
                )
            })?;
            let mut values: Vec<Option<FieldValue>> = Vec::with_capacity(fields.len());
            let cols: Vec<(&String, &Field)> = row.get_column_iter().collect();
            for name in fields {
                let v = cols.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                values.push(match v {
                    None | Some(Field::Null) => None,
                    Some(Field::Str(s)) => Some(FieldValue::Str(s.clone())),
                    Some(Field::Bytes(b)) => Some(FieldValue::Bytes(b.data().to_vec())),
                    Some(Field::ListInternal(_)) => Some(FieldValue::Other("list")),
                    Some(Field::MapInternal(_)) => Some(FieldValue::Other("map")),
                    Some(Field::Group(_)) => Some(FieldValue::Other("struct")),
                    Some(_) => Some(FieldValue::Other("number or other scalar")),
                });
            }
            if !row_fn(i, values, k as f64 / total_rows) {
                return Ok(());
            }
        }
    }
    Ok(())
}

//! Checks on the paths a user gives, before anything is read or written there.

use std::path::Path;

use crate::error::{Error, Result};

/// Refuse a path that names a remote location (`s3://…`, `gs://…`, `hf://…`, `http://…`): midmix
/// reads and writes local files only, and such a string would otherwise be taken for a relative
/// directory named `s3:`.
pub fn check_local(path: &Path) -> Result<()> {
    let text = path.to_string_lossy();
    // `scheme://…`, or `scheme:/…` as a path type that collapses `//` (Python's Path, click) hands it on.
    if let Some((scheme, _)) = text.split_once(":/") {
        if scheme.len() > 1
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        {
            return Err(Error::Config(format!(
                "{text}: {scheme}:// locations are not supported yet; copy the data to a local path (or mount it) and give that"
            )));
        }
    }
    Ok(())
}

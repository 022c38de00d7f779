//! Outputs are built under a temporary sibling name and renamed into place only when complete,
//! so a failed or interrupted run never leaves a directory that looks finished.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct StagedDir {
    final_path: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl StagedDir {
    pub fn new(final_path: &Path, overwrite: bool) -> Result<StagedDir> {
        if final_path.exists() && !overwrite {
            return Err(Error::dataset(
                final_path,
                "already exists (pass --overwrite to replace it)",
            ));
        }
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Config(format!("bad output path {}", final_path.display())))?;
        let parent = match final_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let tmp = parent.join(format!(".{name}.midmix-tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(StagedDir {
            final_path: final_path.to_path_buf(),
            tmp,
            overwrite,
            committed: false,
        })
    }

    /// Where to write while building.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    pub fn commit(mut self) -> Result<()> {
        let mut old = None;
        if self.final_path.exists() {
            if !self.overwrite {
                return Err(Error::dataset(
                    &self.final_path,
                    "appeared while building; not replaced",
                ));
            }
            let aside = self.tmp.with_extension("old");
            std::fs::rename(&self.final_path, &aside)
                .map_err(|e| Error::io(&self.final_path, e))?;
            old = Some(aside);
        }
        std::fs::rename(&self.tmp, &self.final_path).map_err(|e| Error::io(&self.final_path, e))?;
        self.committed = true;
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

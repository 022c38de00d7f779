//! Outputs are built under a temporary sibling name and renamed into place only when complete,
//! so a failed or interrupted run never leaves a directory that looks finished.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::Kind;

/// Where and how a command writes its output: one object for prepare, merge, build-mix and export
/// (Python's `midmix.options.OutputOptions`, converted by field name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputOptions {
    pub out: PathBuf,
    /// Replace an existing output of the same kind (`check_replaceable`).
    pub overwrite: bool,
    /// Bytes per shard before a new one starts (None: one shard). `merge` keeps its parts'.
    pub size_limit: Option<u64>,
    /// Threads for the parallel stages (None: all cores). `merge` copies in one.
    pub threads: Option<usize>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Set to stop the command at its next check with `Error::Interrupted`; nothing is committed.
    #[serde(skip)]
    pub cancel: Option<Arc<AtomicBool>>,
}

impl OutputOptions {
    /// Write to `out`, defaults otherwise (no overwrite, the default shard size, all cores).
    pub fn new(out: impl Into<PathBuf>) -> OutputOptions {
        OutputOptions {
            out: out.into(),
            overwrite: false,
            size_limit: Some(crate::mds::DEFAULT_SIZE_LIMIT),
            threads: None,
            progress: false,
            cancel: None,
        }
    }

    pub fn cancel(&self) -> Option<&AtomicBool> {
        self.cancel.as_deref()
    }
}

pub struct StagedDir {
    final_path: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    kind: Kind,
    committed: bool,
}

/// `--overwrite` replaces only what midmix made, and only an output of the kind being written:
/// what `dataset::output_kind` says it is, holding nothing midmix does not write. Anything else (a
/// file, any other directory, a mix where a prepared dataset is written) is refused and left untouched.
fn check_replaceable(path: &Path, kind: Kind) -> Result<()> {
    // symlink_metadata: a link is not followed to replace what it points at.
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let why = if meta.is_dir() {
        match crate::dataset::output_kind(path) {
            Ok(found) if found == kind => match crate::dataset::foreign_entry(path) {
                None => return Ok(()),
                Some(why) => why,
            },
            Ok(found) => format!(
                "holds a midmix output of kind '{}', not the '{}' this command writes",
                found.name(),
                kind.name()
            ),
            Err(why) => why,
        }
    } else {
        "is not a midmix dataset directory".into()
    };
    Err(Error::dataset(
        path,
        format!("{why}; --overwrite only replaces a midmix output of the same kind, so it was left untouched"),
    ))
}

/// `path` made absolute with symlinks resolved, also when it (or its parents) does not exist
/// yet: the nearest existing ancestor is canonicalized and the rest appended.
fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return rest.iter().rev().fold(c, |acc, r| acc.join(r));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// Refuse an output that is, contains or lies inside one of the command's inputs: building or
/// replacing it would destroy (or re-read) what the command reads.
pub fn check_not_an_input(out: &Path, inputs: &[PathBuf]) -> Result<()> {
    let o = resolved(out);
    for input in inputs {
        let i = resolved(input);
        let how = if o == i {
            "is"
        } else if i.starts_with(&o) {
            "contains"
        } else if o.starts_with(&i) {
            "is inside"
        } else {
            continue;
        };
        return Err(Error::dataset(
            out,
            format!(
                "the output {how} {}, an input of this command; write the output elsewhere",
                input.display()
            ),
        ));
    }
    Ok(())
}

/// Remove `.NAME.midmix-tmp-PID` siblings left by runs that were killed (SIGKILL skips `Drop`).
/// Conservative: only this output's NAME, only a PID that parses, and only when that process is
/// gone (`/proc/PID` missing, on a system whose `/proc` shows our own process). Best effort: a
/// dir that cannot be removed is left for the next run.
fn remove_stale_staging(parent: &Path, name: &str) {
    if !Path::new("/proc/self").is_dir() {
        return; // no procfs: cannot tell a live run from a dead one
    }
    let prefix = format!(".{name}.midmix-tmp-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl StagedDir {
    /// Stage an output of `kind` (what its `midmix.json` will say) for `output.out`.
    pub fn new(output: &OutputOptions, kind: Kind) -> Result<StagedDir> {
        let (final_path, overwrite) = (output.out.as_path(), output.overwrite);
        crate::paths::check_local(final_path)?;
        if final_path.exists() && !overwrite {
            return Err(Error::dataset(
                final_path,
                "already exists (pass --overwrite to replace it)",
            ));
        }
        if overwrite {
            check_replaceable(final_path, kind)?;
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
        remove_stale_staging(&parent, name);
        let tmp = parent.join(format!(".{name}.midmix-tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(StagedDir {
            final_path: final_path.to_path_buf(),
            tmp,
            overwrite,
            kind,
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

    /// Rename the finished output into place, unless a stop was asked for (`cancel`): a run
    /// stopped after its last write commits nothing either.
    pub fn commit(mut self, cancel: Option<&std::sync::atomic::AtomicBool>) -> Result<()> {
        crate::pool::check_cancel(cancel)?;
        let mut old = None;
        if self.final_path.exists() {
            if !self.overwrite {
                return Err(Error::dataset(
                    &self.final_path,
                    "appeared while building; not replaced",
                ));
            }
            // Checked again: it may have been replaced by something else while building.
            check_replaceable(&self.final_path, self.kind)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn output(out: &Path, overwrite: bool) -> OutputOptions {
        OutputOptions {
            overwrite,
            ..OutputOptions::new(out)
        }
    }

    fn dataset(dir: &Path, marker: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let manifest = format!("{{\"kind\": \"prepared\", \"marker\": \"{marker}\"}}");
        std::fs::write(dir.join(crate::manifest::MANIFEST_FILE), manifest).unwrap();
        std::fs::write(dir.join(crate::mds::INDEX_FILE), "{}").unwrap();
    }

    #[test]
    fn overwrite_replaces_only_a_midmix_dataset() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory that is not a dataset (only one of the two files): refused, untouched.
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("thesis.tex"), "precious").unwrap();
        std::fs::write(home.join(crate::mds::INDEX_FILE), "{}").unwrap();
        match StagedDir::new(&output(&home, true), Kind::Prepared) {
            Err(Error::Dataset { msg, .. }) => assert_eq!(
                msg,
                "is a directory but not a midmix dataset (it lacks a readable midmix.json); --overwrite only replaces a midmix output of the same kind, so it was left untouched"
            ),
            other => panic!("expected a dataset error, got {:?}", other.map(|_| ())),
        }
        assert_eq!(std::fs::read(home.join("thesis.tex")).unwrap(), b"precious");
        // A file: refused, untouched.
        let file = tmp.path().join("notes.txt");
        std::fs::write(&file, "keep").unwrap();
        let err = StagedDir::new(&output(&file, true), Kind::Prepared)
            .err()
            .unwrap()
            .to_string();
        assert!(err.ends_with("is not a midmix dataset directory; --overwrite only replaces a midmix output of the same kind, so it was left untouched"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        // A dataset: replaced.
        let ds = tmp.path().join("ds");
        dataset(&ds, "old");
        let staged = StagedDir::new(&output(&ds, true), Kind::Prepared).unwrap();
        dataset(staged.path(), "new");
        staged.commit(None).unwrap();
        let marker = |ds: &Path| std::fs::read_to_string(ds.join("midmix.json")).unwrap();
        assert!(marker(&ds).contains("\"new\""));
        // A stop asked for after the last write: nothing replaced, the staging directory gone.
        let staged = StagedDir::new(&output(&ds, true), Kind::Prepared).unwrap();
        dataset(staged.path(), "stopped");
        let stop = std::sync::atomic::AtomicBool::new(true);
        assert!(matches!(
            staged.commit(Some(&stop)),
            Err(Error::Interrupted)
        ));
        assert!(marker(&ds).contains("\"new\""));
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            3,
            "a staging directory was left"
        );
        // A mix is not replaced by a prepared dataset (nor the reverse): refused, untouched.
        std::fs::write(
            ds.join("midmix.json"),
            "{\"kind\": \"mix\", \"marker\": \"a mix\"}",
        )
        .unwrap();
        let err = StagedDir::new(&output(&ds, true), Kind::Prepared)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(
                "holds a midmix output of kind 'mix', not the 'prepared' this command writes"
            ),
            "{err}"
        );
        assert!(marker(&ds).contains("a mix"));
        dataset(&ds, "new");
        // Swapped for something else while building: commit refuses and keeps it.
        let staged = StagedDir::new(&output(&ds, true), Kind::Prepared).unwrap();
        std::fs::remove_dir_all(&ds).unwrap();
        std::fs::write(&ds, "a file now").unwrap();
        assert!(staged.commit(None).is_err());
        assert_eq!(std::fs::read(&ds).unwrap(), b"a file now");
    }

    #[test]
    fn output_that_is_holds_or_sits_in_an_input_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let file = data.join("a.jsonl");
        std::fs::write(&file, "").unwrap();
        let inputs = [file.clone()];
        let msg = |out: &Path, inputs: &[PathBuf]| {
            check_not_an_input(out, inputs).err().map(|e| e.to_string())
        };
        assert_eq!(
            msg(&file, &inputs),
            Some(format!(
                "{}: the output is {}, an input of this command; write the output elsewhere",
                file.display(),
                file.display()
            ))
        );
        // Spelled differently, still the same place.
        let dotted = data.join(".").join("a.jsonl");
        assert!(msg(&dotted, &inputs).unwrap().contains("the output is "));
        assert!(msg(&data, &inputs)
            .unwrap()
            .contains("the output contains "));
        assert!(msg(&data.join("out"), std::slice::from_ref(&data))
            .unwrap()
            .contains("the output is inside "));
        assert!(msg(&data.join("new/deeper"), std::slice::from_ref(&data)).is_some());
        assert_eq!(msg(&tmp.path().join("out"), &inputs), None);
        assert_eq!(
            msg(&tmp.path().join("data2"), std::slice::from_ref(&data)),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_staging_dirs_of_dead_runs_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        let dead = pid_max + 1;
        let stale = tmp.path().join(format!(".out.midmix-tmp-{dead}"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("shard.00000.mds"), "x").unwrap();
        // Kept: a live run (pid 1 always exists), another output's, and a PID that does not parse.
        let keep = [
            tmp.path().join(".out.midmix-tmp-1"),
            tmp.path().join(format!(".other.midmix-tmp-{dead}")),
            tmp.path().join(format!(".out.midmix-tmp-{dead}x")),
        ];
        for k in &keep {
            std::fs::create_dir(k).unwrap();
        }
        let staged =
            StagedDir::new(&output(&tmp.path().join("out"), false), Kind::Prepared).unwrap();
        assert!(!stale.exists());
        for k in &keep {
            assert!(k.exists(), "{}", k.display());
        }
        drop(staged);
    }
}

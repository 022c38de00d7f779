//! Finding input files: files, directories (recursively) and globs expanded into an ordered,
//! de-duplicated list.

use std::path::{Path, PathBuf};

use super::{format_of, Compression, Format, InputFile, Portion};
use crate::error::{Error, Location, Result, Unit};

/// Expand files, directories (recursively) and globs into an ordered, de-duplicated file list.
/// Directory and glob matches are sorted by path, so the order never depends on the file system.
pub fn discover(specs: &[String]) -> Result<Vec<InputFile>> {
    let mut out: Vec<InputFile> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for spec in specs {
        let path = PathBuf::from(spec);
        crate::paths::check_local(&path)?;
        let mut found: Vec<PathBuf> = Vec::new();
        if path.is_dir() {
            walk(&path, &mut found, &mut Vec::new())?;
            found.retain(|p| format_of(p).is_some());
            found.sort();
            if found.is_empty() {
                return Err(Error::Config(format!(
                    "{spec}: directory holds no .jsonl/.json/.txt(.gz/.zst) or .parquet files"
                )));
            }
        } else if spec.contains(['*', '?', '[']) {
            // glob skips names that are not UTF-8 without a word; look for them first.
            check_glob_names(spec)?;
            let paths =
                glob::glob(spec).map_err(|e| Error::Config(format!("bad glob '{spec}': {e}")))?;
            for p in paths {
                let p = p.map_err(|e| {
                    let path = e.path().to_path_buf();
                    Error::io(path, e.into())
                })?;
                if p.is_file() && format_of(&p).is_some() {
                    found.push(p);
                }
            }
            found.sort();
            if found.is_empty() {
                return Err(Error::Config(format!(
                    "{spec}: glob matches no input files"
                )));
            }
        } else if path.is_file() {
            if format_of(&path).is_none() {
                return Err(Error::Config(format!(
                    "{spec}: unknown input format (expected .jsonl, .json, .ndjson, .txt, optionally .gz/.zst, or .parquet)"
                )));
            }
            found.push(path);
        } else {
            return Err(Error::Config(format!("{spec}: no such file or directory")));
        }
        for p in found {
            // One file reached by two paths (a symlink, `a/../a`) is read once.
            let key = p.canonicalize().map_err(|e| Error::io(&p, e))?;
            if seen.insert(key) {
                let size = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
                let format = format_of(&p).unwrap_or(Format::Jsonl(Compression::None));
                out.push(InputFile {
                    portion: Portion::Whole,
                    label: p.display().to_string(),
                    path: p,
                    format,
                    size,
                });
            }
        }
    }
    Ok(out)
}

/// Every file under `dir`, following symlinks; `ancestors` holds the canonical directories above, so
/// a link back to one of them (a loop) is an error instead of the same files listed again and again.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, ancestors: &mut Vec<PathBuf>) -> Result<()> {
    let canonical = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    if ancestors.contains(&canonical) {
        return Err(Error::Config(format!(
            "{}: a symlink loop (it leads back to {}); remove the link or name the files to read",
            dir.display(),
            canonical.display()
        )));
    }
    ancestors.push(canonical);
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            walk(&p, out, ancestors)?;
        } else {
            check_utf8_name(dir, &p)?;
            out.push(p);
        }
    }
    ancestors.pop();
    Ok(())
}

/// A file whose name is not UTF-8 has no format we can tell, and dropping it would silently
/// lose data: refuse it, naming the directory it is in.
fn check_utf8_name(dir: &Path, file: &Path) -> Result<()> {
    match file.file_name() {
        Some(name) if name.to_str().is_none() => Err(Error::BadInput {
            loc: Location {
                path: dir.display().to_string(),
                unit: Unit::File,
            },
            msg: format!(
                "holds a file whose name is not UTF-8 ({}); rename it (inputs are never skipped silently)",
                name.to_string_lossy()
            ),
        }),
        _ => Ok(()),
    }
}

/// The directories a glob reads: from its literal leading directory down as many levels as it
/// has components (any depth with `**`). Any file there with a non-UTF-8 name is an error.
fn check_glob_names(spec: &str) -> Result<()> {
    let path = Path::new(spec);
    let mut base = PathBuf::new();
    let mut rest = Vec::new();
    for c in path.components() {
        let s = c.as_os_str().to_string_lossy();
        if rest.is_empty() && !s.contains(['*', '?', '[']) {
            base.push(c);
        } else {
            rest.push(s.into_owned());
        }
    }
    let depth = if rest.iter().any(|c| c == "**") {
        usize::MAX
    } else {
        rest.len()
    };
    if base.as_os_str().is_empty() {
        base = PathBuf::from(".");
    }
    scan_names(&base, depth)
}

fn scan_names(dir: &Path, depth: usize) -> Result<()> {
    if depth == 0 {
        return Ok(());
    }
    // A glob over a missing directory matches nothing; `discover` reports that itself.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            scan_names(&p, depth - 1)?;
        } else {
            check_utf8_name(dir, &p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_loop_is_an_error_and_a_linked_file_is_read_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("corpus");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a.jsonl"), "{\"text\": \"a\"}\n").unwrap();
        // A second name for the same file, and for the same directory: read once.
        std::os::unix::fs::symlink(d.join("sub/a.jsonl"), d.join("alias.jsonl")).unwrap();
        std::os::unix::fs::symlink(d.join("sub"), tmp.path().join("sub-link")).unwrap();
        let specs = [
            d.display().to_string(),
            tmp.path().join("sub-link").display().to_string(),
        ];
        let files = discover(&specs).unwrap();
        assert_eq!(
            files.len(),
            1,
            "{:?}",
            files.iter().map(|f| &f.label).collect::<Vec<_>>()
        );
        // A link back to an ancestor: refused, naming it.
        std::os::unix::fs::symlink(&d, d.join("sub/loop")).unwrap();
        let err = discover(&[d.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sub/loop: a symlink loop"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_file_names_are_an_error_not_a_skip() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("good.jsonl"), "{\"text\": \"a\"}\n").unwrap();
        let bad = dir.join(OsStr::from_bytes(b"caf\xe9.jsonl"));
        if std::fs::write(&bad, "{\"text\": \"b\"}\n").is_err() {
            return; // a file system that refuses non-UTF-8 names cannot have the problem
        }
        let want = format!(
            "{}: holds a file whose name is not UTF-8 (caf\u{fffd}.jsonl); rename it (inputs are never skipped silently)",
            dir.display()
        );
        for spec in [
            dir.display().to_string(),
            format!("{}/*.jsonl", dir.display()),
            format!("{}/**/*.jsonl", tmp.path().display()),
        ] {
            match discover(std::slice::from_ref(&spec)) {
                Err(e @ Error::BadInput { .. }) => assert_eq!(e.to_string(), want, "{spec}"),
                other => panic!("{spec}: expected a bad-input error, got {other:?}"),
            }
        }
        std::fs::remove_file(&bad).unwrap();
        assert_eq!(discover(&[dir.display().to_string()]).unwrap().len(), 1);
    }
}

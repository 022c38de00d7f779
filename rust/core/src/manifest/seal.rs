//! The seal of every `midmix.json`: the hashes that pin a dataset's shards and the manifest's own
//! text, and reading a manifest back only when they hold.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::MANIFEST_FILE;
use crate::error::{Error, Result};

// -- Identity and integrity ----------------------------------------------------------------------
//
// Every `midmix.json` midmix writes is sealed with three hashes (xxh3-128, hex):
// - `index_xxh3_128`: of the dataset's `index.json`, whose shard entries hold each shard's size and
//   content hash (`mds::CONTENT_HASH`) — so the manifest pins every byte of the shards;
// - `fingerprint`: what the dataset *is*, its samples in their order, wherever and however it was
//   made (no paths, timings or storage form): what an index mix records of each source, what a
//   training run's resume compares and what the experiment's caches key on;
// - `checksum`: of the manifest itself (its timings aside), so an edited or damaged field is an
//   error where the manifest is read, not a wrong count or id downstream.
// A manifest without them is refused (`read_json`): edited, or from before seals (2026-12-02).

/// Manifest fields outside the checksum: timings that differ between identical runs, and the
/// checksum itself. They are written last, after the checksummed text (see `write_json`).
const UNCHECKED: &[&str] = &["checksum", "elapsed_s", "run"];

/// Where the unchecked fields start in a written manifest: the checksum is the first of them
/// (`UNCHECKED` is sorted, as serde_json's maps are), and at the top level (two spaces: a JSON
/// string holds no raw newline, and nested fields are indented further).
const CHECKSUM_AT: &str = ",\n  \"checksum\": ";

fn hash_text(text: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

fn hash_json(value: &Value) -> String {
    // serde_json's objects are sorted maps: the text is canonical.
    hash_text(&value.to_string())
}

/// `manifest` without its unchecked fields, and those fields.
fn split_unchecked(manifest: &Value) -> (Value, serde_json::Map<String, Value>) {
    let mut checked = manifest.clone();
    let mut unchecked = serde_json::Map::new();
    if let Value::Object(m) = &mut checked {
        for k in UNCHECKED {
            if let Some(v) = m.remove(*k) {
                unchecked.insert(k.to_string(), v);
            }
        }
    }
    (checked, unchecked)
}

/// Whether the manifest `text` (parsed: `json`) matches its recorded checksum. The checksum is of
/// the text of the checked fields as written, not of their values parsed and printed again:
/// serde_json parses some floats one ulp off unless built with `float_roundtrip`, which the HF
/// `tokenizers` crate must not be (its Unigram scores would then differ from the Python
/// package's, and a Viterbi tie with them). The checked text must also parse to every field but
/// the unchecked ones, so a field repeated after it (JSON's last one wins) is not let through.
fn seal_holds(text: &str, json: &Value, recorded: &str) -> bool {
    let Some(at) = text.rfind(CHECKSUM_AT) else {
        return checksum_of_values(json) == recorded;
    };
    let checked = format!("{}\n}}", &text[..at]);
    if hash_text(&checked) != recorded {
        // Manifests written before the checksum covered the text (midmix 0.1 of 2026-12-02).
        return checksum_of_values(json) == recorded;
    }
    serde_json::from_str::<Value>(&checked).ok() == Some(split_unchecked(json).0)
}

/// The checksum of manifests written before it covered the text.
fn checksum_of_values(manifest: &Value) -> String {
    hash_json(&split_unchecked(manifest).0)
}

/// The fingerprint of a sealed-to-be manifest (see above): for a prepared dataset its shards (through
/// `index_xxh3_128`) and what they mean (mode, length, columns, tokenizer, special ids); for a mix of
/// either form its sources' fingerprints, seed, rule and plan.
pub fn fingerprint(m: &Value) -> String {
    let facts = if m["kind"] == "mix" {
        let sources: Vec<Value> = m["source_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        if s["fingerprint"].is_string() {
                            s["fingerprint"].clone()
                        } else {
                            s["index_xxh3_128"].clone()
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let phases: Vec<Value> = m["phases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| json!([p["start_sample"], p["end_sample"], p["ramp"], p["weights"]]))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "kind": "mix", "sources": m["sources"], "source_fingerprints": sources, "seed": m["seed"],
            "seq_len": m["seq_len"], "dtype": m["dtype"], "columns": m["columns"],
            "tokenizer": m["tokenizer"]["sha256"], "global_batch": m["global_batch"],
            "exact_per_batch": m["exact_per_batch"], "on_exhaust": m["on_exhaust"],
            "blend_rule": m["blend_rule"], "total_samples": m["total_samples"], "phases": phases,
        })
    } else {
        json!({
            "kind": m["kind"], "mode": m["mode"], "seq_len": m["seq_len"], "dtype": m["dtype"],
            "columns": m["columns"], "eos_id": m["eos_id"], "bos_id": m["bos_id"], "sft": m["sft"],
            "tokenizer": [m["tokenizer"]["sha256"], m["tokenizer"]["vocab_size"]],
            "index": m["index_xxh3_128"],
        })
    };
    hash_json(&facts)
}

/// xxh3-128 of a file's bytes, as the manifests record them (`index_xxh3_128`, a source's
/// `index_xxh3_128`, `IndexFile::xxh3_128`).
pub fn file_xxh3_128(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes)))
}

/// Seal `manifest` (its hashes, see above) and write it as `dir/midmix.json`, after the dataset's
/// `index.json` (if it has one). Returns the sealed manifest.
pub(crate) fn write_json(dir: &Path, manifest: Value) -> Result<Value> {
    let path = dir.join(MANIFEST_FILE);
    let Value::Object(mut m) = manifest else {
        return Err(Error::dataset(&path, "a manifest must be a JSON object"));
    };
    let index = dir.join(crate::mds::INDEX_FILE);
    if index.exists() {
        m.insert("index_xxh3_128".into(), json!(file_xxh3_128(&index)?));
    }
    let mut v = Value::Object(m);
    v["fingerprint"] = json!(fingerprint(&v));
    let (checked, mut unchecked) = split_unchecked(&v);
    let pretty = |v: &Value| {
        serde_json::to_string_pretty(v).map_err(|e| Error::dataset(&path, e.to_string()))
    };
    // The checked fields' text, then the unchecked ones after it (see `seal_holds`).
    let checked = pretty(&checked)?;
    let checksum = hash_text(&checked);
    unchecked.insert("checksum".into(), json!(checksum));
    let tail = pretty(&Value::Object(unchecked))?;
    // Two pretty-printed objects joined into one: "{\n  checked…\n}" and "{\n  unchecked…\n}".
    let inner = |text: &str| {
        text.strip_prefix("{\n")
            .and_then(|t| t.strip_suffix("\n}"))
            .map(str::to_string)
            .ok_or_else(|| Error::dataset(&path, "a manifest must have fields"))
    };
    let text = format!("{{\n{},\n{}\n}}\n", inner(&checked)?, inner(&tail)?);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    v["checksum"] = json!(checksum);
    Ok(v)
}

/// A dataset's `midmix.json` as JSON (prepared datasets and mixes alike), or None when it has none,
/// with its checksum checked (when it has one). Returns the file's path too, for errors about its
/// content.
pub(crate) fn read_json(dir: &Path) -> Result<Option<(PathBuf, Value)>> {
    let path = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::dataset(&path, format!("not valid JSON: {e}")))?;
    if !json.is_object() {
        return Err(Error::dataset(
            &path,
            "not a midmix manifest (not a JSON object)",
        ));
    }
    if json.get("checksum").is_none() {
        // Every manifest midmix writes is sealed: one without its seal was edited (the seal removed
        // with the edit), or predates seals, whose shards also lack the content hash the open needs.
        let why = if json.get("fingerprint").is_some() {
            "records a fingerprint but no checksum: edited since midmix wrote it"
        } else {
            "has no checksum: its seal was removed, or a midmix from before 2026-12-02 (which did not seal manifests) wrote it"
        };
        return Err(Error::dataset(
            &path,
            format!("{why} (re-create the dataset, or restore the file)"),
        ));
    }
    if let Some(recorded) = json.get("checksum") {
        if !recorded
            .as_str()
            .is_some_and(|r| seal_holds(&text, &json, r))
        {
            return Err(Error::dataset(
                &path,
                "does not match its checksum: edited or damaged since midmix wrote it (re-create the dataset, or restore the file)",
            ));
        }
    }
    Ok(Some((path, json)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed manifest reads back with its checksum intact, whatever its floats (serde_json
    /// without `float_roundtrip` parses 0.36923076923076925 one ulp off), and any edit of a
    /// checked field, in place or repeated after the checksum, is refused.
    #[test]
    fn a_sealed_manifest_with_any_floats_reads_back_and_edits_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let floats: Vec<f64> = (1..2000)
            .map(|i| 24.0 / (i as f64 * 1.3) + 1e-9 * i as f64)
            .collect();
        let run = json!({"host": "h", "started": "now"});
        write_json(
            tmp.path(),
            json!({"kind": "mix", "passes": floats, "seed": 1, "elapsed_s": 0.1, "run": run}),
        )
        .unwrap();
        let (_, v) = read_json(tmp.path()).unwrap().unwrap();
        assert_eq!(v["seed"], json!(1));
        assert_eq!(v["run"], run);
        assert!((v["passes"][0].as_f64().unwrap() - floats[0]).abs() < 1e-12);
        let path = tmp.path().join(MANIFEST_FILE);
        let written = std::fs::read_to_string(&path).unwrap();
        let edits = [
            written.replace("\"seed\": 1", "\"seed\": 2"),
            written.replace(
                "\"host\": \"h\"",
                "\"host\": \"h\"}, \"seed\": 2, \"x\": {\"a\": 1",
            ),
            written.replacen("\"passes\"", "\"passes_\"", 1),
        ];
        for edited in edits {
            assert_ne!(edited, written);
            std::fs::write(&path, edited).unwrap();
            assert!(read_json(tmp.path())
                .unwrap_err()
                .to_string()
                .contains("does not match its checksum"));
        }
        // Timings are outside the checksum.
        std::fs::write(
            &path,
            written.replace("\"elapsed_s\": 0.1", "\"elapsed_s\": 9.5"),
        )
        .unwrap();
        assert_eq!(
            read_json(tmp.path()).unwrap().unwrap().1["elapsed_s"],
            json!(9.5)
        );
    }

    /// Manifests sealed before the checksum covered the text (their values' canonical JSON) still
    /// read.
    #[test]
    fn a_manifest_sealed_over_its_values_still_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = json!({"kind": "prepared", "seq_len": 8, "fingerprint": "f", "run": {"a": 1}});
        v["checksum"] = json!(checksum_of_values(&v));
        std::fs::write(
            tmp.path().join(MANIFEST_FILE),
            serde_json::to_string_pretty(&v).unwrap(),
        )
        .unwrap();
        assert_eq!(read_json(tmp.path()).unwrap().unwrap().1, v);
        v["seq_len"] = json!(9);
        std::fs::write(
            tmp.path().join(MANIFEST_FILE),
            serde_json::to_string_pretty(&v).unwrap(),
        )
        .unwrap();
        assert!(read_json(tmp.path()).is_err());
    }
}

//! End-to-end checks of the core pipeline without Python: determinism across thread counts,
//! bad-record errors with locations, staged output, and merge of task parts.

use std::io::Write;
use std::path::{Path, PathBuf};

use midmix_core::mds::MdsDataset;
use midmix_core::merge::{merge, MergeOptions};
use midmix_core::prepare::{prepare, OnBadRecord, PrepareOptions};
use midmix_core::{Error, Unit};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tokenizer() -> PathBuf {
    repo().join("tests/fixtures/pythia.json")
}

fn demo(name: &str) -> String {
    repo().join("demo/data").join(name).display().to_string()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "midmix.json")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn output_is_identical_for_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let mut trees = Vec::new();
    for threads in [1, 3] {
        let out = tmp.path().join(format!("t{threads}"));
        let mut o = PrepareOptions::new(
            "d",
            vec![demo("prose.jsonl"), demo("code.jsonl.zst")],
            tokenizer(),
            300,
            out.clone(),
        );
        o.output.threads = Some(threads);
        o.output.size_limit = Some(100_000);
        let r = prepare(&o).unwrap();
        assert_eq!(
            r.counts.samples,
            MdsDataset::open(&out).unwrap().num_samples()
        );
        assert!(r.counts.samples > 100);
        trees.push(files(&out));
    }
    assert_eq!(trees[0], trees[1]);
}

#[test]
fn bad_record_names_file_and_line_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a.jsonl");
    let mut f = std::fs::File::create(&src).unwrap();
    writeln!(
        f,
        "{{\"text\": \"one\"}}\n{{\"text\": \"two\"}}\n{{\"text\": 3}}"
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = PrepareOptions::new(
        "d",
        vec![src.display().to_string()],
        tokenizer(),
        4,
        out.clone(),
    );
    match prepare(&o) {
        Err(Error::BadRecord { loc, msg }) => {
            assert_eq!(loc.unit, Unit::Line(3));
            assert!(loc.path.ends_with("a.jsonl"));
            assert!(msg.contains("not a string"), "{msg}");
        }
        other => panic!("expected a bad record, got {:?}", other.map(|r| r.counts)),
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the input remains");

    let mut o = o;
    o.on_bad_record = OnBadRecord::Skip;
    let r = prepare(&o).unwrap();
    assert_eq!(r.counts.skipped.get("non_string_field"), Some(&1));
    assert_eq!(r.counts.documents, 2);
}

#[test]
fn merged_parts_equal_a_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![demo("prose.jsonl"), demo("code.jsonl.zst")];
    let single = tmp.path().join("single");
    prepare(&PrepareOptions::new(
        "d",
        inputs.clone(),
        tokenizer(),
        777,
        single.clone(),
    ))
    .unwrap();
    let mut parts = Vec::new();
    for i in 0..2 {
        let out = tmp.path().join(format!("p{i}"));
        let mut o = PrepareOptions::new("d", inputs.clone(), tokenizer(), 777, out.clone());
        o.num_tasks = Some(2);
        o.task_index = Some(i);
        prepare(&o).unwrap();
        parts.push(out);
    }
    let merged = tmp.path().join("merged");
    merge(&MergeOptions {
        parts,
        output: midmix_core::staging::OutputOptions {
            overwrite: false,
            cancel: None,
            ..midmix_core::staging::OutputOptions::new(merged.clone())
        },
    })
    .unwrap();
    assert_eq!(files(&single), files(&merged));
}

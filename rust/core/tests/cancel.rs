//! A set cancel flag stops every long-running core call with `Error::Interrupted`, and leaves
//! neither the output nor a staged `*.midmix-tmp-*` directory behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use midmix_core::merge::{merge, MergeOptions};
use midmix_core::mix::{build_mix, MixOptions, PhaseSpec};
use midmix_core::plan::OnExhaust;
use midmix_core::prepare::{prepare, PrepareOptions};
use midmix_core::staging::OutputOptions;
use midmix_core::Error;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn options(inputs: Vec<String>, out: PathBuf) -> PrepareOptions {
    PrepareOptions::new(
        "d",
        inputs,
        repo().join("tests/fixtures/pythia.json"),
        64,
        out,
    )
}

fn set() -> Option<Arc<AtomicBool>> {
    Some(Arc::new(AtomicBool::new(true)))
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

fn assert_interrupted<T: std::fmt::Debug>(r: midmix_core::Result<T>) {
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
}

/// Two small inputs, so that a two-task prepare gives two non-empty parts.
fn inputs(dir: &Path) -> Vec<String> {
    (0..2)
        .map(|i| {
            let p = dir.join(format!("in{i}.jsonl"));
            let text: String = (0..50)
                .map(|j| format!("{{\"text\": \"document {j} of file {i}, with some words\"}}\n"))
                .collect();
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        })
        .collect()
}

#[test]
fn prepare_stops_when_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = inputs(tmp.path());
    let out = tmp.path().join("out");
    let mut o = options(inputs, out);
    o.output.cancel = set();
    assert_interrupted(prepare(&o));
    assert_eq!(names(tmp.path()), ["in0.jsonl", "in1.jsonl"]);
}

#[test]
fn merge_stops_when_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = inputs(tmp.path());
    let parts_dir = tmp.path().join("parts");
    let mut parts = Vec::new();
    for i in 0..2 {
        let out = parts_dir.join(format!("p{i}"));
        let mut o = options(inputs.clone(), out.clone());
        o.num_tasks = Some(2);
        o.task_index = Some(i);
        prepare(&o).unwrap();
        parts.push(out);
    }
    let merged = tmp.path().join("merged");
    let mut m = MergeOptions {
        parts,
        output: midmix_core::staging::OutputOptions {
            overwrite: false,
            cancel: set(),
            ..midmix_core::staging::OutputOptions::new(merged.clone())
        },
    };
    assert_interrupted(merge(&m));
    assert_eq!(names(tmp.path()), ["in0.jsonl", "in1.jsonl", "parts"]);
    // The same parts merge once the flag is clear.
    m.output.cancel = Some(Arc::new(AtomicBool::new(false)));
    merge(&m).unwrap();
    assert!(merged.join("index.json").exists());
}

#[test]
fn build_mix_stops_when_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = inputs(tmp.path());
    let source = tmp.path().join("src");
    prepare(&options(inputs, source.clone())).unwrap();
    let mixes = tmp.path().join("mixes");
    std::fs::create_dir(&mixes).unwrap();
    let mut o = MixOptions {
        sources: vec![("a".into(), source)],
        phases: vec![PhaseSpec {
            kind: midmix_core::mix::LengthKind::Fill,
            length: 0,
            weights: vec![("a".into(), 1.0)],
            ramp: false,
        }],
        seed: 0,
        global_batch: None,
        global_batch_tokens: None,
        exact_per_batch: false,
        on_exhaust: OnExhaust::Error,
        max_repeat: None,
        blend_rule: midmix_core::plan::BlendRule::Midmix,
        materialize: false,
        output: OutputOptions {
            size_limit: None,
            threads: Some(2),
            cancel: set(),
            ..OutputOptions::new(mixes.join("mix"))
        },
    };
    assert_interrupted(build_mix(&o));
    assert!(names(&mixes).is_empty(), "{:?}", names(&mixes));
    o.output.cancel = None;
    build_mix(&o).unwrap();
    assert_eq!(names(&mixes), ["mix"]);
}

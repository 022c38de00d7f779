//! Regression tests for inputs that used to panic, abort, or succeed silently with a wrong
//! result. Each builds a small, deliberately broken input.

use std::path::{Path, PathBuf};

use midmix_core::mix::{build_mix, MixOptions, PhaseSpec};
use midmix_core::plan::OnExhaust;
use midmix_core::prepare::{prepare, PrepareOptions};
use midmix_core::staging::OutputOptions;
use midmix_core::Error;

fn tokenizer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pythia.json")
}

/// A prepared pretraining source `name` in `root`, from `docs` JSONL documents.
fn source(root: &Path, name: &str, docs: usize, seq_len: usize) -> PathBuf {
    let input = root.join(format!("{name}.jsonl"));
    let text: String = (0..docs)
        .map(|i| format!("{{\"text\": \"document {i} of {name}, with a few words in it\"}}\n"))
        .collect();
    std::fs::write(&input, text).unwrap();
    let out = root.join(name);
    let o = PrepareOptions::new(
        name,
        vec![input.display().to_string()],
        tokenizer(),
        seq_len,
        out.clone(),
    );
    prepare(&o).unwrap();
    out
}

fn mix_options(sources: &[(&str, &Path)], weights: &[f64], out: &Path) -> MixOptions {
    MixOptions {
        sources: sources
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect(),
        phases: vec![PhaseSpec {
            kind: midmix_core::mix::LengthKind::Samples,
            length: 8,
            weights: sources
                .iter()
                .zip(weights)
                .map(|((n, _), w)| (n.to_string(), *w))
                .collect(),
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
            threads: Some(1),
            ..OutputOptions::new(out)
        },
    }
}

#[test]
fn empty_source_is_an_error_in_every_exhaust_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let full = source(tmp.path(), "full", 20, 16);
    // One document of fewer tokens than seq_len: a prepared source with 0 samples.
    let empty = source(tmp.path(), "empty", 1, 16);
    for on_exhaust in [
        OnExhaust::Repeat(None),
        OnExhaust::Repeat(Some(3)),
        OnExhaust::Error,
        OnExhaust::Stop,
    ] {
        let mut o = mix_options(
            &[("full", &full), ("empty", &empty)],
            &[0.5, 0.5],
            &tmp.path().join("mix"),
        );
        o.on_exhaust = on_exhaust;
        match build_mix(&o) {
            Err(Error::Dataset { path, msg }) => {
                assert!(msg.contains("source 'empty' has no samples"), "{msg}");
                assert!(path.ends_with("empty"), "{path}");
            }
            other => panic!(
                "{on_exhaust:?}: expected a dataset error, got {:?}",
                other.map(|r| r.max_deviation)
            ),
        }
        assert!(!tmp.path().join("mix").exists());
    }
}

#[test]
fn weights_whose_sum_overflows_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source(tmp.path(), "a", 20, 16);
    let b = source(tmp.path(), "b", 20, 16);
    let out = tmp.path().join("mix");
    let o = mix_options(&[("a", &a), ("b", &b)], &[1e308, 1e308], &out);
    match build_mix(&o) {
        Err(Error::Config(msg)) => {
            assert_eq!(
                msg,
                "phase 1: weights sum to inf ('a' = 1e308, 'b' = 1e308); scale them down, e.g. to sum to 1"
            );
        }
        other => panic!(
            "expected a config error, got {:?}",
            other.map(|r| r.max_deviation)
        ),
    }
    assert!(!out.exists());
    // The same ratio, scaled down, is fine.
    let r = build_mix(&mix_options(&[("a", &a), ("b", &b)], &[1e307, 1e307], &out)).unwrap();
    assert!(r.max_deviation < 1.0);
}

#[test]
fn overwrite_never_replaces_an_input_of_the_command() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source(tmp.path(), "a", 20, 16);
    let before = std::fs::read(a.join("index.json")).unwrap();
    // build-mix writing over its own source (a dataset, so --overwrite alone would allow it).
    let mut o = mix_options(&[("a", &a)], &[1.0], &a);
    o.output.overwrite = true;
    match build_mix(&o) {
        Err(Error::Dataset { msg, .. }) => assert!(msg.starts_with("the output is "), "{msg}"),
        other => panic!("expected a dataset error, got {:?}", other.map(|r| r.kind)),
    }
    assert_eq!(std::fs::read(a.join("index.json")).unwrap(), before);
    // prepare writing into the directory it reads.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("x.jsonl"), "{\"text\": \"hello world\"}\n").unwrap();
    let o = PrepareOptions::new(
        "d",
        vec![data.display().to_string()],
        tokenizer(),
        4,
        data.join("ds"),
    );
    match prepare(&o) {
        Err(Error::Dataset { msg, .. }) => {
            assert!(msg.starts_with("the output is inside "), "{msg}")
        }
        other => panic!("expected a dataset error, got {:?}", other.map(|r| r.kind)),
    }
    assert!(!data.join("ds").exists());
    // merge writing over one of its parts.
    let parts: Vec<PathBuf> = (0..2)
        .map(|i| {
            let mut o = PrepareOptions::new(
                "p",
                vec![data.join("x.jsonl").display().to_string()],
                tokenizer(),
                4,
                tmp.path().join(format!("part{i}")),
            );
            o.num_tasks = Some(2);
            o.task_index = Some(i);
            prepare(&o).unwrap();
            o.output.out
        })
        .collect();
    let o = midmix_core::merge::MergeOptions {
        parts: parts.clone(),
        output: midmix_core::staging::OutputOptions {
            overwrite: true,
            cancel: None,
            ..midmix_core::staging::OutputOptions::new(parts[1].clone())
        },
    };
    match midmix_core::merge::merge(&o) {
        Err(Error::Dataset { msg, .. }) => assert!(msg.starts_with("the output is "), "{msg}"),
        other => panic!("expected a dataset error, got {:?}", other.map(|r| r.kind)),
    }
    assert!(parts[1].join("index.json").exists());
}

/// Edit `dir`'s index.json with `f`.
fn edit_index(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut index);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A source of several shards, for hand-editing.
fn sharded_source(root: &Path, name: &str) -> PathBuf {
    let input = root.join(format!("{name}.jsonl"));
    let text: String = (0..60)
        .map(|i| format!("{{\"text\": \"document {i} of {name}, with a few words in it\"}}\n"))
        .collect();
    std::fs::write(&input, text).unwrap();
    let out = root.join(name);
    let mut o = PrepareOptions::new(
        name,
        vec![input.display().to_string()],
        tokenizer(),
        16,
        out.clone(),
    );
    o.output.size_limit = Some(800);
    prepare(&o).unwrap();
    out
}

fn mix_error(o: &MixOptions) -> (String, String) {
    match build_mix(o) {
        Err(Error::Dataset { path, msg }) => (path, msg),
        other => panic!("expected a dataset error, got {:?}", other.map(|r| r.kind)),
    }
}

#[test]
fn sample_counts_and_shard_sizes_are_checked_against_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mix");

    // A shard entry dropped from index.json: index.json no longer hashes to what midmix.json seals.
    let a = sharded_source(tmp.path(), "a");
    edit_index(&a, |ix| {
        let shards = ix["shards"].as_array_mut().unwrap();
        assert!(shards.len() > 1);
        shards.pop();
    });
    let (path, msg) = mix_error(&mix_options(&[("a", &a)], &[1.0], &out));
    assert_eq!(path, a.join("index.json").display().to_string());
    assert!(
        msg.contains("differs from the one midmix.json records"),
        "{msg}"
    );

    // A shard file cut short on disk (index.json untouched).
    let b = sharded_source(tmp.path(), "b");
    let shard = b.join("shard.00001.mds");
    let recorded = std::fs::metadata(&shard).unwrap().len();
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
    let (_, msg) = mix_error(&mix_options(&[("b", &b)], &[1.0], &out));
    assert!(
        msg.ends_with(&format!(
            "shard shard.00001.mds is {} bytes on disk but index.json records {recorded} (raw_data.bytes)",
            recorded - 10
        )),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn recorded_shard_hashes_are_verified_before_use() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("a.jsonl");
    let text: String = (0..40)
        .map(|i| format!("{{\"text\": \"document {i}, with a few words in it\"}}\n"))
        .collect();
    std::fs::write(&input, text).unwrap();
    let a = tmp.path().join("a");
    let mut o = PrepareOptions::new(
        "a",
        vec![input.display().to_string()],
        tokenizer(),
        16,
        a.clone(),
    );
    o.hashes = vec!["sha1".into(), "xxh64".into()];
    o.output.size_limit = Some(800);
    prepare(&o).unwrap();
    let clean = midmix_core::verify::verify(&a).unwrap();
    assert_eq!(clean.kind, midmix_core::manifest::Kind::Prepared);
    assert!(clean.shards > 1);
    // the two asked for, and the xxh3_64 content hash midmix always records
    assert_eq!(clean.hashes_checked, 3 * clean.shards as u64);
    assert_eq!(clean.tokens_checked, clean.samples * 16);

    // Flip one byte of a token: same size, so only the hashes can tell.
    let shard = a.join("shard.00001.mds");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    std::fs::write(&shard, bytes).unwrap();
    // A materialized mix reads the shard, which is checked against its content hash when mapped.
    let out = tmp.path().join("mix");
    let mut o = mix_options(&[("a", &a)], &[1.0], &out);
    o.phases[0].length = clean.samples;
    o.materialize = true;
    let err = build_mix(&o).unwrap_err().to_string();
    let hash_err = format!("{}: its bytes hash to xxh3_64 ", shard.display());
    assert!(err.contains(&hash_err), "{err}");
    assert!(!out.exists());
    // An index mix reads no shard when built; reading the damaged shard through it is the same error.
    o.materialize = false;
    build_mix(&o).unwrap();
    let mix = midmix_core::mixindex::IndexedMix::open_private(&out).unwrap();
    let errors: Vec<String> = (0..clean.samples)
        .filter_map(|k| mix.sample(k).err().map(|e| e.to_string()))
        .collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e.contains(&hash_err)),
        "{errors:?}"
    );
    let err = midmix_core::verify::verify(&a).unwrap_err().to_string();
    assert!(err.contains("shard.00001.mds"), "{err}");
    assert!(err.contains("xxh3_64") || err.contains("sha1"), "{err}");
}

//! `midmix build-mix`: interleave prepared sources by (scheduled) weights into one stream whose
//! order is the training order, and `midmix export`.
//!
//! Each source's samples are taken in a permutation that depends only on the seed and the source
//! name (a fresh one per pass). A mix is written as an index over its untouched sources
//! (`mixindex`, the default) or materialized as MDS shards (`--materialize`, or `export` of an
//! index mix): those hold a fixed number of fixed-size samples, so they are independent and are
//! written in parallel, copying token bytes without decoding them.

mod permutation;
mod planning;
mod shards;
mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::{Form, Kind, MixManifest, PhaseReport};
use crate::plan::{BlendRule, OnExhaust, Phase, Schedule};
use crate::pool::{check_cancel, thread_pool};
use crate::staging::{OutputOptions, StagedDir};
pub use permutation::permutation;
pub use planning::check_weights;
pub use shards::{export, ExportOptions};

/// How a phase's length is given: a count of `tokens` or `samples`, or `fill`: until a source would
/// repeat (only the last phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthKind {
    Tokens,
    Samples,
    Fill,
}

/// One phase as asked for (Python's `midmix.mixspec.Phase`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub kind: LengthKind,
    /// Tokens or samples (ignored for `fill`).
    pub length: u64,
    /// Raw weights per source name (normalized here).
    pub weights: Vec<(String, f64)>,
    pub ramp: bool,
}

/// `midmix build-mix` (Python's `midmix.options.MixOptions`, converted by field name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixOptions {
    /// (name, prepared dataset directory), in the order their index is written to `source`.
    pub sources: Vec<(String, PathBuf)>,
    pub phases: Vec<PhaseSpec>,
    pub seed: u64,
    pub global_batch: Option<u64>,
    /// The global batch in tokens: `global_batch` from the sources' seq_len.
    pub global_batch_tokens: Option<u64>,
    pub exact_per_batch: bool,
    pub on_exhaust: OnExhaust,
    /// With `on_exhaust` repeat: at most this many passes over each source.
    pub max_repeat: Option<u64>,
    pub blend_rule: BlendRule,
    /// Write MDS shards holding the tokens instead of an index over the sources.
    pub materialize: bool,
    pub output: OutputOptions,
}

impl MixOptions {
    /// `on_exhaust` with `max_repeat` folded in (it goes with `repeat` only).
    fn exhaust(&self) -> Result<OnExhaust> {
        match (self.on_exhaust, self.max_repeat) {
            (OnExhaust::Repeat(None), Some(0)) => {
                Err(Error::Config("--max-repeat must be at least 1".into()))
            }
            (OnExhaust::Repeat(None), m) => Ok(OnExhaust::Repeat(m)),
            (e, None) => Ok(e),
            (_, Some(_)) => Err(Error::Config(
                "--max-repeat goes with --on-exhaust repeat".into(),
            )),
        }
    }
}

/// Option checks that need no input: the source count and `--exact-per-batch`.
fn check_options(opts: &MixOptions) -> Result<()> {
    let k = opts.sources.len();
    if k == 0 {
        return Err(Error::Config("a mix needs at least one source".into()));
    }
    if k > 256 {
        return Err(Error::Config(
            "at most 256 sources fit the uint8 `source` column".into(),
        ));
    }
    // A name is a source's identity in the weights, the plan and the manifest.
    let mut seen = std::collections::BTreeSet::new();
    if let Some((name, _)) = opts.sources.iter().find(|(n, _)| !seen.insert(n)) {
        return Err(Error::Config(format!("source '{name}' is given twice")));
    }
    // Without a batch size there is nothing to balance per batch; say so rather than ignore it.
    if opts.exact_per_batch && opts.global_batch.is_none() {
        return Err(Error::Config(
            "--exact-per-batch needs --global-batch".into(),
        ));
    }
    // Megatron's rule is defined for fixed weights only; per-batch quotas would change its order.
    if opts.blend_rule == BlendRule::Megatron
        && (opts.phases.len() != 1 || opts.phases[0].ramp || opts.exact_per_batch)
    {
        return Err(Error::Config(
            "--blend-rule megatron takes one phase of fixed weights (--weights), without --exact-per-batch".into(),
        ));
    }
    Ok(())
}

/// Realized counts per phase and source, from the plan actually written.
fn phase_reports(
    schedule: &Schedule,
    phases: &[Phase],
    names: &[&str],
    plan_sources: &[u8],
    tok: u64,
) -> Vec<PhaseReport> {
    let total = plan_sources.len() as u64;
    let mut phase_reports = Vec::new();
    for ((start, end), ph) in schedule.phase_bounds().into_iter().zip(phases) {
        if start >= total {
            break;
        }
        let end = end.min(total);
        let mut samples = BTreeMap::new();
        for &s in &plan_sources[start as usize..end as usize] {
            *samples.entry(names[s as usize].to_string()).or_insert(0u64) += 1;
        }
        for n in names {
            samples.entry(n.to_string()).or_insert(0);
        }
        phase_reports.push(PhaseReport {
            start_sample: start,
            end_sample: end,
            ramp: ph.ramp,
            weights: names
                .iter()
                .zip(&ph.weights)
                .map(|(n, w)| (n.to_string(), *w))
                .collect(),
            planned_share: names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let planned = schedule.target(i, end) - schedule.target(i, start);
                    (n.to_string(), planned / (end - start) as f64)
                })
                .collect(),
            tokens: samples.iter().map(|(n, c)| (n.clone(), c * tok)).collect(),
            samples,
        });
    }
    phase_reports
}

pub fn build_mix(opts: &MixOptions) -> Result<MixManifest> {
    let started = Instant::now();
    let opts = &MixOptions {
        on_exhaust: opts.exhaust()?,
        max_repeat: None,
        ..opts.clone()
    };
    check_options(opts)?;
    let source_dirs: Vec<PathBuf> = opts.sources.iter().map(|(_, d)| d.clone()).collect();
    crate::staging::check_not_an_input(&opts.output.out, &source_dirs)?;
    let pool = thread_pool(opts.output.threads)?;
    let (reports, tokens_spec) = sources::read_sources(opts)?;
    let first = &reports[0];
    let seq_len = first.seq_len;
    let opts = &MixOptions {
        global_batch: match (opts.global_batch, opts.global_batch_tokens) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give --global-batch or --global-batch-tokens, not both".into(),
                ))
            }
            (_, Some(t)) if t % seq_len as u64 != 0 => {
                return Err(Error::Config(format!(
                    "--global-batch-tokens {t} is not a multiple of seq_len {seq_len}"
                )))
            }
            (_, Some(t)) => Some(t / seq_len as u64),
            (g, None) => g,
        },
        global_batch_tokens: None,
        ..opts.clone()
    };
    let names: Vec<&str> = opts.sources.iter().map(|(n, _)| n.as_str()).collect();
    let phases = planning::phases(opts, &names, seq_len)?;
    let schedule = Schedule::new(&phases)?;

    let staged = StagedDir::new(&opts.output, Kind::Mix)?;
    let cache = staged.path().join(".source-cache");
    let sources = sources::open_sources(opts, &cache)?;
    let avail: Vec<u64> = sources.iter().map(|s| s.num_samples()).collect();
    let plan = planning::plan_sources(opts, &schedule, &names, &avail, seq_len)?;
    let (picks, seen) = permutation::resolve_picks(opts.seed, &names, &plan.sources, &avail);
    check_cancel(opts.output.cancel())?;

    let index = if opts.materialize {
        let writing = shards::ShardWriting {
            dir: staged.path(),
            output: &opts.output,
        };
        shards::write_shards(
            &writing,
            &pool,
            &sources,
            &source_dirs,
            &picks,
            &tokens_spec,
        )?;
        None
    } else {
        Some(crate::mixindex::write(staged.path(), &picks)?)
    };
    drop(sources);
    if cache.exists() {
        std::fs::remove_dir_all(&cache).map_err(|e| Error::io(&cache, e))?;
    }

    let tok = seq_len as u64;
    let total = plan.sources.len() as u64;
    let mut report = MixManifest {
        midmix_version: crate::VERSION.into(),
        kind: Kind::Mix,
        form: if index.is_some() {
            Form::Index
        } else {
            Form::Mds
        },
        index,
        sources: names.iter().map(|s| s.to_string()).collect(),
        source_info: sources::source_infos(opts, &reports, &avail, tok)?,
        seed: opts.seed,
        seq_len,
        dtype: first.dtype.clone(),
        tokenizer: first.tokenizer.clone(),
        global_batch: opts.global_batch,
        exact_per_batch: opts.exact_per_batch,
        on_exhaust: opts.on_exhaust,
        blend_rule: opts.blend_rule,
        total_samples: total,
        total_tokens: total * tok,
        phases: phase_reports(&schedule, &phases, &names, &plan.sources, tok),
        samples_per_source: names
            .iter()
            .zip(&seen)
            .map(|(n, c)| (n.to_string(), *c))
            .collect(),
        passes: names
            .iter()
            .zip(seen.iter().zip(&avail))
            .map(|(n, (c, a))| (n.to_string(), *c as f64 / (*a).max(1) as f64))
            .collect(),
        max_deviation: plan.max_deviation,
        columns: [
            ("source".to_string(), "uint8".to_string()),
            ("tokens".to_string(), tokens_spec),
        ]
        .into_iter()
        .collect(),
        elapsed_s: started.elapsed().as_secs_f64(),
        seal: Default::default(),
    };
    report.write(staged.path())?;
    staged.commit(opts.output.cancel())?;
    Ok(report)
}

/// `T_i(n)` per source: the samples of each the written mix's plan schedules among its first `n`
/// positions, from its manifest's phases (the one implementation of the targets, shared with
/// planning). Positions past the last phase hold its final weights, as a later pass of the mix.
pub fn planned_counts(report: &MixManifest, n: u64) -> Result<Vec<f64>> {
    let names = &report.sources;
    let phases: Vec<Phase> = report
        .phases
        .iter()
        .map(|p| {
            let w: Vec<f64> = names
                .iter()
                .map(|s| p.weights.get(s).copied().unwrap_or(0.0))
                .collect();
            let sum: f64 = w.iter().sum();
            Phase {
                samples: Some(p.end_sample - p.start_sample),
                weights: w.iter().map(|v| v / sum).collect(),
                ramp: p.ramp,
            }
        })
        .collect();
    let schedule = Schedule::new(&phases)?;
    let end = schedule.total().unwrap_or(0);
    let last = phases.last().map(|p| p.weights.clone()).unwrap_or_default();
    Ok((0..names.len())
        .map(|i| {
            if n <= end {
                schedule.target(i, n)
            } else {
                schedule.target(i, end) + (n - end) as f64 * last[i]
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(exact_per_batch: bool, global_batch: Option<u64>) -> MixOptions {
        MixOptions {
            sources: vec![("a".into(), PathBuf::from("/nonexistent/a"))],
            phases: vec![PhaseSpec {
                kind: LengthKind::Fill,
                length: 0,
                weights: vec![("a".into(), 1.0)],
                ramp: false,
            }],
            seed: 0,
            global_batch,
            global_batch_tokens: None,
            exact_per_batch,
            on_exhaust: OnExhaust::Error,
            max_repeat: None,
            blend_rule: BlendRule::Midmix,
            materialize: false,
            output: OutputOptions::new("/nonexistent/out"),
        }
    }

    #[test]
    fn exact_per_batch_needs_a_global_batch() {
        match build_mix(&options(true, None)) {
            Err(Error::Config(msg)) => assert_eq!(msg, "--exact-per-batch needs --global-batch"),
            other => panic!("expected a config error, got {:?}", other.map(|r| r.kind)),
        }
        // With a global batch the options pass this check (and fail later, on the missing source).
        assert!(!matches!(
            build_mix(&options(true, Some(4))),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn option_kinds_parse_or_name_the_choices() {
        let phase = |kind: &str| {
            serde_json::from_value::<PhaseSpec>(
                serde_json::json!({"kind": kind, "length": 5, "weights": [["a", 1.0]], "ramp": false}),
            )
            .map(|p| p.kind)
        };
        assert_eq!(phase("tokens").unwrap(), LengthKind::Tokens);
        assert_eq!(phase("samples").unwrap(), LengthKind::Samples);
        assert_eq!(phase("fill").unwrap(), LengthKind::Fill);
        assert!(phase("bytes").is_err());
        let exhaust = |text: &str, max_repeat| {
            MixOptions {
                on_exhaust: text.parse()?,
                max_repeat,
                ..options(false, None)
            }
            .exhaust()
        };
        assert_eq!(exhaust("error", None).unwrap(), OnExhaust::Error);
        assert_eq!(
            exhaust("repeat", Some(3)).unwrap(),
            OnExhaust::Repeat(Some(3))
        );
        assert_eq!(exhaust("repeat", None).unwrap(), OnExhaust::Repeat(None));
        assert_eq!(exhaust("stop", None).unwrap(), OnExhaust::Stop);
        let msg = |k, m| exhaust(k, m).unwrap_err().to_string();
        assert_eq!(
            msg("stop", Some(2)),
            "--max-repeat goes with --on-exhaust repeat"
        );
        assert_eq!(
            msg("again", None),
            "unknown --on-exhaust 'again': use error, repeat or stop"
        );
        // As midmix.json records it, and read back.
        for e in [
            OnExhaust::Error,
            OnExhaust::Stop,
            OnExhaust::Repeat(Some(3)),
            OnExhaust::Repeat(None),
        ] {
            assert_eq!(e.to_string().parse::<OnExhaust>().unwrap(), e);
        }
        assert_eq!(OnExhaust::Repeat(Some(3)).to_string(), "repeat (max 3)");
        assert_eq!(
            OnExhaust::Repeat(None).to_string(),
            "repeat (max unlimited)"
        );
    }

    #[test]
    fn permutations_are_seeded_by_source_and_pass_only() {
        let a = permutation(0, "c4", 0, 1000);
        assert_eq!(a, permutation(0, "c4", 0, 1000));
        assert_ne!(a, permutation(0, "c4", 1, 1000));
        assert_ne!(a, permutation(1, "c4", 0, 1000));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    }
}

//! `midmix build-mix`: interleave prepared sources by (scheduled) weights into one stream whose
//! order is the training order, and `midmix export`.
//!
//! Each source's samples are taken in a permutation that depends only on the seed and the source
//! name (a fresh one per pass). A mix is written as an index over its untouched sources
//! (`mixindex`, the default) or materialized as MDS shards (`--materialize`, or `export` of an
//! index mix): those hold a fixed number of fixed-size samples, so they are independent and are
//! written in parallel, copying token bytes without decoding them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mds::{write_index, MappedDataset, ShardFormat, WriterOptions};
use crate::mixindex::{IndexFiles, IndexedMix};
use crate::plan::{self, BlendRule, Phase, Schedule};
use crate::pool::{check_cancel, thread_pool};
use crate::progress::Progress;
use crate::report::{Report, TokenizerInfo};
use crate::staging::StagedDir;

/// How a phase's length is given.
#[derive(Debug, Clone, Copy)]
pub enum Length {
    Tokens(u64),
    Samples(u64),
    /// Until a source would repeat (only the last phase).
    Fill,
}

impl Length {
    /// A length from its kind (`tokens`, `samples` or `fill`) and count (ignored for `fill`).
    pub fn new(kind: &str, n: u64) -> Result<Length> {
        match kind {
            "tokens" => Ok(Length::Tokens(n)),
            "samples" => Ok(Length::Samples(n)),
            "fill" => Ok(Length::Fill),
            k => Err(Error::Config(format!("unknown phase length kind '{k}'"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PhaseSpec {
    pub length: Length,
    /// Raw weights per source name (normalized here).
    pub weights: Vec<(String, f64)>,
    pub ramp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhaust {
    Error,
    /// A fresh permutation per pass, at most this many passes per source.
    Repeat(Option<u64>),
    Stop,
}

impl OnExhaust {
    /// `--on-exhaust KIND [--max-repeat N]`; `max_repeat` only goes with `repeat`.
    pub fn new(kind: &str, max_repeat: Option<u64>) -> Result<OnExhaust> {
        match (kind, max_repeat) {
            ("error", None) => Ok(OnExhaust::Error),
            ("repeat", m) => Ok(OnExhaust::Repeat(m)),
            ("stop", None) => Ok(OnExhaust::Stop),
            (_, Some(_)) => Err(Error::Config(
                "--max-repeat goes with --on-exhaust repeat".into(),
            )),
            (k, None) => Err(Error::Config(format!(
                "unknown --on-exhaust '{k}': use error, repeat or stop"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MixOptions {
    /// (name, prepared dataset directory), in the order their index is written to `source`.
    pub sources: Vec<(String, PathBuf)>,
    pub phases: Vec<PhaseSpec>,
    pub seed: u64,
    pub global_batch: Option<u64>,
    pub exact_per_batch: bool,
    pub on_exhaust: OnExhaust,
    pub blend_rule: BlendRule,
    /// Write MDS shards holding the tokens instead of an index over the sources.
    pub materialize: bool,
    pub out: PathBuf,
    pub overwrite: bool,
    pub size_limit: Option<u64>,
    pub threads: Option<usize>,
    pub progress: bool,
    /// Set to stop between sources and between output shards with `Error::Interrupted`.
    pub cancel: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    pub name: String,
    /// Absolute: an index mix reads the source from here.
    pub path: String,
    pub samples: u64,
    pub tokens: u64,
    /// xxh3-128 over the source's `index.json` (which holds its shards' sizes and hashes).
    pub index_xxh3_128: String,
    pub tokenizer_sha256: String,
    /// The source's fingerprint (`report::fingerprint`), which opening the mix compares; None in
    /// mixes from before it (they compare `index_xxh3_128`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    pub start_sample: u64,
    pub end_sample: u64,
    pub ramp: bool,
    /// Normalized weights by source name (the phase's end weights when ramping).
    pub weights: BTreeMap<String, f64>,
    /// The scheduled share of each source over the phase (its average weight when ramping).
    pub planned_share: BTreeMap<String, f64>,
    /// Samples realized per source in this phase.
    pub samples: BTreeMap<String, u64>,
    pub tokens: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixReport {
    pub midmix_version: String,
    pub kind: String,
    /// `index` (positions over the sources, `mixindex`) or `mds` (shards holding the tokens).
    #[serde(default = "mds_form")]
    pub form: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexFiles>,
    pub sources: Vec<String>,
    pub source_info: Vec<SourceInfo>,
    pub seed: u64,
    pub seq_len: usize,
    pub dtype: String,
    /// The sources' common tokenizer (as the first source recorded it).
    pub tokenizer: TokenizerInfo,
    pub global_batch: Option<u64>,
    pub exact_per_batch: bool,
    pub on_exhaust: String,
    #[serde(default = "midmix_rule")]
    pub blend_rule: String,
    pub total_samples: u64,
    pub total_tokens: u64,
    pub phases: Vec<PhaseReport>,
    /// Samples used per source over all phases, and passes over it (fractional).
    pub samples_per_source: BTreeMap<String, u64>,
    pub passes: BTreeMap<String, f64>,
    /// Largest |count_i(n) - target_i(n)| over every prefix n and source i (< 1 means exact).
    pub max_deviation: f64,
    pub columns: BTreeMap<String, String>,
    /// Outside the checksum (a timing): may be missing.
    #[serde(default)]
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub seal: crate::report::Seal,
}

fn mds_form() -> String {
    "mds".into()
}

fn midmix_rule() -> String {
    "midmix".into()
}

/// SplitMix64: a small, fully specified generator, so permutations are the same on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (Lemire's multiply-shift with rejection).
    fn below(&mut self, n: u64) -> u64 {
        loop {
            let m = (self.next() as u128) * (n as u128);
            if (m as u64) >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The order in which pass `pass` over a source of `n` samples takes them: a Fisher-Yates
/// shuffle seeded by (seed, source name, pass) only.
pub fn permutation(seed: u64, source: &str, pass: u64, n: u64) -> Vec<u32> {
    let key = format!("midmix-permutation\0{seed}\0{source}\0{pass}");
    let mut rng = SplitMix64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..p.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
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

/// The sources' reports, checked to agree on tokenizer, seq_len and token column (mixes take
/// pretraining data only). Returns them with the shared `tokens` column spec.
fn read_sources(opts: &MixOptions) -> Result<(Vec<Report>, String)> {
    let reports: Vec<Report> = opts
        .sources
        .iter()
        .map(|(_, d)| Report::read(d))
        .collect::<Result<_>>()?;
    let first = &reports[0];
    for ((name, dir), r) in opts.sources.iter().zip(&reports) {
        // An empty source cannot be sampled in any exhaust mode (and would divide by zero
        // when passes are counted), so refuse it here rather than deep in planning.
        if r.counts.samples == 0 {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' has no samples; remove it from the mix or prepare more data"
                ),
            ));
        }
        if r.mode != "pretrain" {
            return Err(Error::dataset(
                dir,
                format!("source '{name}' is an SFT dataset; mixes take pretraining data"),
            ));
        }
        if r.tokenizer.sha256 != first.tokenizer.sha256 {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' was tokenized with {} (sha256 {}…), '{}' with {} (sha256 {}…): sources must share a tokenizer",
                    r.tokenizer.path,
                    &r.tokenizer.sha256[..12],
                    opts.sources[0].0,
                    first.tokenizer.path,
                    &first.tokenizer.sha256[..12]
                ),
            ));
        }
        if r.seq_len != first.seq_len || r.columns != first.columns {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' has seq_len {} ({:?}), '{}' has {} ({:?}): sources must share seq_len and dtype",
                    r.seq_len, r.columns, opts.sources[0].0, first.seq_len, first.columns
                ),
            ));
        }
    }
    // A source that does not match its own records is damaged: refused before planning (its
    // shards' contents are checked as they are read, by `open_sources`' readers).
    for (_, dir) in &opts.sources {
        crate::dataset::open(dir)?;
    }
    let tokens_spec = first
        .columns
        .get("tokens")
        .cloned()
        .ok_or_else(|| Error::dataset(&opts.sources[0].1, "has no tokens column"))?;
    Ok((reports, tokens_spec))
}

/// Phases with lengths in samples and weights normalized over the source list.
fn phases(opts: &MixOptions, names: &[&str], seq_len: usize) -> Result<Vec<Phase>> {
    if opts.global_batch == Some(0) {
        return Err(Error::Config("--global-batch must be at least 1".into()));
    }
    let mut phases = Vec::new();
    let mut cum = 0u64;
    for (p, spec) in opts.phases.iter().enumerate() {
        let mut w = vec![0.0; names.len()];
        for (name, v) in &spec.weights {
            let i = names.iter().position(|n| n == name).ok_or_else(|| {
                Error::Config(format!(
                    "phase {}: unknown source '{name}' (sources: {})",
                    p + 1,
                    names.join(", ")
                ))
            })?;
            if !(v.is_finite() && *v >= 0.0) {
                return Err(Error::Config(format!(
                    "phase {}: weight of '{name}' must be >= 0, got {v}",
                    p + 1
                )));
            }
            w[i] = *v;
        }
        let sum: f64 = w.iter().sum();
        if sum <= 0.0 {
            return Err(Error::Config(format!(
                "phase {}: weights are all zero",
                p + 1
            )));
        }
        // Finite weights can still overflow their sum (1e308 + 1e308); normalizing by inf
        // would give every source weight 0 (or NaN) and a plan that ignores the weights.
        if !sum.is_finite() {
            let listed: Vec<String> = spec
                .weights
                .iter()
                .map(|(n, v)| format!("'{n}' = {v:e}"))
                .collect();
            return Err(Error::Config(format!(
                "phase {}: weights sum to {sum} ({}); scale them down, e.g. to sum to 1",
                p + 1,
                listed.join(", ")
            )));
        }
        let samples = match spec.length {
            Length::Samples(n) => Some(n),
            Length::Tokens(t) => Some(t / seq_len as u64),
            Length::Fill => None,
        };
        // Phase ends fall on global-batch boundaries, so a checkpoint can branch exactly there.
        let samples = samples.map(|n| {
            let end = cum + n;
            let end = match opts.global_batch {
                Some(g) => (end + g / 2) / g * g,
                None => end,
            };
            let len = end.saturating_sub(cum);
            cum = end;
            len
        });
        if samples == Some(0) {
            return Err(Error::Config(format!(
                "phase {} is shorter than one sample (or global batch)",
                p + 1
            )));
        }
        phases.push(Phase {
            samples,
            weights: w.iter().map(|v| v / sum).collect(),
            ramp: spec.ramp,
        });
    }
    Ok(phases)
}

/// Refuse a plan that takes more passes over a source than `--on-exhaust` allows.
/// The plan holds one byte per sample: refuse, by arithmetic and before allocating it, a large length
/// the sources cannot fill (each source at most its samples × the passes allowed) or memory cannot
/// hold. `check_exhaustion` then checks each source against the plan itself.
fn check_budget(opts: &MixOptions, planned_len: u64, avail: &[u64], seq_len: usize) -> Result<()> {
    let passes = match opts.on_exhaust {
        OnExhaust::Repeat(m) => m.unwrap_or(u64::MAX),
        _ => 1,
    };
    let fillable = avail
        .iter()
        .fold(0u64, |sum, &a| sum.saturating_add(a.saturating_mul(passes)));
    // A plan under 2^26 samples (64 MB; 128B tokens at seq_len 2048 is 62.5M) is made first, so that a
    // source that runs out is named with its own count (`check_exhaustion`); past that, arithmetic.
    const PLANNED_FIRST: u64 = 1 << 26;
    if opts.on_exhaust != OnExhaust::Stop && planned_len > fillable && planned_len > PLANNED_FIRST {
        return Err(Error::Config(format!(
            "the mix needs {planned_len} samples ({} tokens) but its sources hold {} samples{}: use a smaller budget{}",
            (planned_len as u128) * seq_len as u128,
            avail.iter().sum::<u64>(),
            if passes > 1 { format!(" × {passes} passes") } else { String::new() },
            if passes == 1 { ", or --on-exhaust repeat or stop" } else { "" },
        )));
    }
    // 2^38 samples (over 500T tokens at seq_len 2048) is a 256 GiB plan: far past any real budget.
    const MAX_SAMPLES: u64 = 1 << 38;
    if planned_len > MAX_SAMPLES {
        return Err(Error::Config(format!(
            "the mix would hold {planned_len} samples, more than midmix plans ({MAX_SAMPLES}); use a smaller budget"
        )));
    }
    Ok(())
}

fn check_exhaustion(
    opts: &MixOptions,
    names: &[&str],
    plan_sources: &[u8],
    avail: &[u64],
    seq_len: usize,
) -> Result<()> {
    let max_passes = match opts.on_exhaust {
        OnExhaust::Repeat(m) => m.unwrap_or(u64::MAX),
        _ => 1,
    };
    let mut used = vec![0u64; names.len()];
    for &s in plan_sources {
        used[s as usize] += 1;
    }
    for i in 0..names.len() {
        let passes = if avail[i] == 0 {
            u64::MAX
        } else {
            used[i].div_ceil(avail[i])
        };
        if used[i] > 0 && (passes > max_passes) {
            let what = match opts.on_exhaust {
                OnExhaust::Repeat(Some(m)) => format!("more than --max-repeat {m} passes"),
                _ => "more than it has (use --on-exhaust repeat or stop, or a smaller budget)"
                    .to_string(),
            };
            return Err(Error::Config(format!(
                "source '{}' runs out: the plan needs {} tokens ({} samples) but it has {} tokens ({} samples), {what}",
                names[i],
                used[i] * seq_len as u64,
                used[i],
                avail[i] * seq_len as u64,
                avail[i]
            )));
        }
    }
    Ok(())
}

/// Resolve each position to (source, sample index): pass p of source i takes permutation p.
/// Also returns how many samples each source gave.
fn resolve_picks(
    seed: u64,
    names: &[&str],
    plan_sources: &[u8],
    avail: &[u64],
) -> (Vec<(u8, u32)>, Vec<u64>) {
    let k = names.len();
    let mut seen = vec![0u64; k];
    let mut picks: Vec<(u8, u32)> = Vec::with_capacity(plan_sources.len());
    let mut perms: Vec<Vec<u32>> = vec![Vec::new(); k];
    let mut perm_pass = vec![u64::MAX; k];
    for &s in plan_sources {
        let i = s as usize;
        let pass = seen[i] / avail[i];
        if perm_pass[i] != pass {
            perms[i] = permutation(seed, names[i], pass, avail[i]);
            perm_pass[i] = pass;
        }
        picks.push((s, perms[i][(seen[i] % avail[i]) as usize]));
        seen[i] += 1;
    }
    (picks, seen)
}

/// Where and how materialized shards are written.
struct ShardWriting<'a> {
    dir: &'a Path,
    size_limit: Option<u64>,
    progress: bool,
    cancel: Option<&'a AtomicBool>,
}

/// Write the picked samples as shards in parallel (each holds a fixed count of fixed-size
/// samples, so they are independent), then `index.json`.
fn write_shards(
    opts: &ShardWriting,
    pool: &rayon::ThreadPool,
    sources: &[MappedDataset],
    source_dirs: &[PathBuf],
    picks: &[(u8, u32)],
    tokens_spec: &str,
) -> Result<()> {
    let dir = opts.dir;
    let total = picks.len() as u64;
    let format = ShardFormat::new(
        &[("source", "uint8"), ("tokens", tokens_spec)],
        &WriterOptions {
            compression: None,
            hashes: vec![crate::mds::CONTENT_HASH.to_string()],
            size_limit: opts.size_limit,
        },
    )?;
    let sample_size = 1 + sources[0]
        .dataset()
        .columns
        .first()
        .and_then(|c| c.encoding.fixed_size())
        .ok_or_else(|| Error::dataset(&source_dirs[0], "tokens column is not fixed-size"))?;
    let per_shard = format.samples_per_shard(sample_size).min(total);
    let n_shards = total.div_ceil(per_shard) as usize;
    let progress = Progress::new(opts.progress, total * sample_size as u64, "build-mix");
    let written = std::sync::atomic::AtomicU64::new(0);
    let shards: Vec<serde_json::Value> = pool.install(|| {
        (0..n_shards)
            .into_par_iter()
            .map(|si| {
                check_cancel(opts.cancel)?;
                let lo = si as u64 * per_shard;
                let hi = (lo + per_shard).min(total);
                let mut fill = |w: &mut dyn std::io::Write| -> Result<()> {
                    for &(s, idx) in &picks[lo as usize..hi as usize] {
                        let bytes = sources[s as usize]
                            .sample(idx as u64)?
                            .filter(|b| b.len() + 1 == sample_size)
                            .ok_or_else(|| {
                                let src = &source_dirs[s as usize];
                                Error::dataset(src, format!("sample {idx} is missing or corrupt"))
                            })?;
                        w.write_all(&[s])
                            .and_then(|_| w.write_all(bytes))
                            .map_err(|e| Error::io(dir, e))?;
                    }
                    Ok(())
                };
                let n = (hi - lo) as usize;
                let entry = format.write_fixed_shard(dir, si, n, sample_size, &mut fill)?;
                let bytes = (n * sample_size) as u64;
                let done = written.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                progress.update(done + bytes, 0, 0);
                Ok(entry)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    write_index(dir, &shards)?;
    progress.finish();
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

fn source_infos(
    opts: &MixOptions,
    reports: &[Report],
    avail: &[u64],
    tok: u64,
) -> Result<Vec<SourceInfo>> {
    opts.sources
        .iter()
        .zip(reports)
        .zip(avail)
        .map(|(((name, dir), r), a)| {
            let path = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
            Ok(SourceInfo {
                name: name.clone(),
                path: path.display().to_string(),
                samples: *a,
                tokens: a * tok,
                index_xxh3_128: crate::report::file_xxh3_128(&dir.join(crate::mds::INDEX_FILE))?,
                tokenizer_sha256: r.tokenizer.sha256.clone(),
                fingerprint: r.seal.fingerprint.clone(),
            })
        })
        .collect()
}

/// `on_exhaust` as the report spells it.
fn on_exhaust_name(on_exhaust: OnExhaust) -> String {
    match on_exhaust {
        OnExhaust::Error => "error".into(),
        OnExhaust::Repeat(m) => format!(
            "repeat (max {})",
            m.map(|m| m.to_string()).unwrap_or("unlimited".into())
        ),
        OnExhaust::Stop => "stop".into(),
    }
}

/// Seal and write `dir/midmix.json` (`report::write_json`); fills in the report's hashes.
fn write_report(dir: &Path, report: &mut MixReport) -> Result<()> {
    let path = dir.join(crate::report::REPORT_FILE);
    let value = serde_json::to_value(&*report).map_err(|e| Error::dataset(&path, e.to_string()))?;
    let sealed = crate::report::write_json(dir, value)?;
    *report = serde_json::from_value(sealed)
        .map_err(|e| Error::dataset(&path, format!("not a mix manifest: {e}")))?;
    Ok(())
}

/// Map the sources for reading (compressed shards into `cache`); refuses one whose index lists
/// no samples, whatever its midmix.json says.
fn open_sources(opts: &MixOptions, cache: &Path) -> Result<Vec<MappedDataset>> {
    let sources: Vec<MappedDataset> = opts
        .sources
        .iter()
        .map(|(_, d)| {
            check_cancel(opts.cancel.as_deref())?;
            MappedDataset::open(d, cache)
        })
        .collect::<Result<_>>()?;
    for ((name, dir), s) in opts.sources.iter().zip(&sources) {
        if s.num_samples() == 0 {
            return Err(Error::dataset(
                dir,
                format!("source '{name}' has no samples (its index.json lists none)"),
            ));
        }
        // Index mixes store the sample as a u32 (as the permutations do).
        if s.num_samples() > u32::MAX as u64 {
            return Err(Error::dataset(
                dir,
                format!(
                    "source '{name}' has more than 2^32 samples; split it into several sources"
                ),
            ));
        }
    }
    Ok(sources)
}

/// The source of every position, whole global batches only. `Fill` and `stop` end at the first
/// sample a source cannot give without repeating; other plans that need more passes than
/// `--on-exhaust` allows are refused.
fn plan_sources(
    opts: &MixOptions,
    schedule: &Schedule,
    names: &[&str],
    avail: &[u64],
    seq_len: usize,
) -> Result<plan::Plan> {
    let stop_at_limit = opts.on_exhaust == OnExhaust::Stop || schedule.total().is_none();
    let planned_len = schedule.total().unwrap_or_else(|| avail.iter().sum());
    let batch = match opts.global_batch {
        Some(g) if opts.exact_per_batch => g,
        _ => 0,
    };
    check_budget(opts, planned_len, avail, seq_len)?;
    let limit = |i: usize, c: u64| !stop_at_limit || c < avail[i];
    let mut plan = plan::build(
        schedule,
        planned_len,
        batch,
        opts.blend_rule,
        &limit,
        opts.cancel.as_deref(),
    )?;
    if !stop_at_limit {
        check_exhaustion(opts, names, &plan.sources, avail, seq_len)?;
    }
    // |c_i(n) - T_i(n)| < 1 is proved for up to three sources (midmix's rule, without per-batch
    // quotas); a plan that misses it means the weights were not what planning assumes.
    if names.len() <= 3
        && batch == 0
        && opts.blend_rule == BlendRule::Midmix
        && plan.max_deviation >= 1.0
    {
        return Err(Error::Config(format!(
            "the plan deviates from the weights by {} samples (must be < 1 for {} sources); check the weights of each phase",
            plan.max_deviation,
            names.len()
        )));
    }
    let mut total = plan.sources.len() as u64;
    if let Some(g) = opts.global_batch {
        total = total / g * g;
    }
    if total == 0 {
        return Err(Error::Config(
            "the mix would be empty (budget below one sample or global batch, or an empty source)"
                .into(),
        ));
    }
    plan.sources.truncate(total as usize);
    Ok(plan)
}

pub fn build_mix(opts: &MixOptions) -> Result<MixReport> {
    let started = Instant::now();
    check_options(opts)?;
    let source_dirs: Vec<PathBuf> = opts.sources.iter().map(|(_, d)| d.clone()).collect();
    crate::staging::check_not_an_input(&opts.out, &source_dirs)?;
    let pool = thread_pool(opts.threads)?;
    let (reports, tokens_spec) = read_sources(opts)?;
    let first = &reports[0];
    let seq_len = first.seq_len;
    let names: Vec<&str> = opts.sources.iter().map(|(n, _)| n.as_str()).collect();
    let phases = phases(opts, &names, seq_len)?;
    let schedule = Schedule::new(&phases)?;

    let staged = StagedDir::new(&opts.out, opts.overwrite, crate::report::KIND_MIX)?;
    let cache = staged.path().join(".source-cache");
    let sources = open_sources(opts, &cache)?;
    let avail: Vec<u64> = sources.iter().map(|s| s.num_samples()).collect();
    let plan = plan_sources(opts, &schedule, &names, &avail, seq_len)?;
    let (picks, seen) = resolve_picks(opts.seed, &names, &plan.sources, &avail);
    check_cancel(opts.cancel.as_deref())?;

    let index = if opts.materialize {
        let writing = ShardWriting {
            dir: staged.path(),
            size_limit: opts.size_limit,
            progress: opts.progress,
            cancel: opts.cancel.as_deref(),
        };
        write_shards(
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
    let mut report = MixReport {
        midmix_version: crate::VERSION.into(),
        kind: crate::report::KIND_MIX.into(),
        form: if index.is_some() { "index" } else { "mds" }.into(),
        index,
        sources: names.iter().map(|s| s.to_string()).collect(),
        source_info: source_infos(opts, &reports, &avail, tok)?,
        seed: opts.seed,
        seq_len,
        dtype: first.dtype.clone(),
        tokenizer: first.tokenizer.clone(),
        global_batch: opts.global_batch,
        exact_per_batch: opts.exact_per_batch,
        on_exhaust: on_exhaust_name(opts.on_exhaust),
        blend_rule: opts.blend_rule.name().into(),
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
    write_report(staged.path(), &mut report)?;
    staged.commit(opts.cancel.as_deref())?;
    Ok(report)
}

/// `T_i(n)` per source: the samples of each the written mix's plan schedules among its first `n`
/// positions, from its manifest's phases (the one implementation of the targets, shared with
/// planning). Positions past the last phase hold its final weights, as a later pass of the mix.
pub fn planned_counts(report: &MixReport, n: u64) -> Result<Vec<f64>> {
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

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub mix: PathBuf,
    pub out: PathBuf,
    pub overwrite: bool,
    pub size_limit: Option<u64>,
    pub threads: Option<usize>,
    pub progress: bool,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// `midmix export`: write an index mix as MDS shards, the same bytes `build-mix --materialize`
/// writes for the same inputs, with the same manifest (form `mds`).
pub fn export(opts: &ExportOptions) -> Result<MixReport> {
    let started = Instant::now();
    let pool = thread_pool(opts.threads)?;
    let manifest = IndexedMix::manifest(&opts.mix)?.ok_or_else(|| {
        Error::dataset(
            &opts.mix,
            "is not an index mix (only `build-mix` output without --materialize is exported)",
        )
    })?;
    let source_dirs: Vec<PathBuf> = manifest
        .0
        .source_info
        .iter()
        .map(|s| PathBuf::from(&s.path))
        .collect();
    let inputs: Vec<PathBuf> = source_dirs
        .iter()
        .cloned()
        .chain([opts.mix.clone()])
        .collect();
    crate::staging::check_not_an_input(&opts.out, &inputs)?;
    let staged = StagedDir::new(&opts.out, opts.overwrite, crate::report::KIND_MIX)?;
    let cache = staged.path().join(".source-cache");
    let mix = IndexedMix::open_manifest(&opts.mix, manifest, &cache)?;
    let picks = mix.picks()?;
    let writing = ShardWriting {
        dir: staged.path(),
        size_limit: opts.size_limit,
        progress: opts.progress,
        cancel: opts.cancel.as_deref(),
    };
    let spec = &mix.report.columns["tokens"];
    write_shards(&writing, &pool, mix.sources(), &source_dirs, &picks, spec)?;
    let mut report = mix.report.clone();
    drop(mix);
    if cache.exists() {
        std::fs::remove_dir_all(&cache).map_err(|e| Error::io(&cache, e))?;
    }
    report.form = "mds".into();
    report.index = None;
    report.elapsed_s = started.elapsed().as_secs_f64();
    // The export's fingerprint is its index mix's (the same samples in the same order): it is
    // computed from the same facts; its shards are pinned by its own index.json.
    report.seal.index_xxh3_128 = None;
    write_report(staged.path(), &mut report)?;
    staged.commit(opts.cancel.as_deref())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(exact_per_batch: bool, global_batch: Option<u64>) -> MixOptions {
        MixOptions {
            sources: vec![("a".into(), PathBuf::from("/nonexistent/a"))],
            phases: vec![PhaseSpec {
                length: Length::Fill,
                weights: vec![("a".into(), 1.0)],
                ramp: false,
            }],
            seed: 0,
            global_batch,
            exact_per_batch,
            on_exhaust: OnExhaust::Error,
            blend_rule: BlendRule::Midmix,
            materialize: false,
            out: PathBuf::from("/nonexistent/out"),
            overwrite: false,
            size_limit: None,
            threads: None,
            progress: false,
            cancel: None,
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
        assert!(matches!(Length::new("tokens", 5), Ok(Length::Tokens(5))));
        assert!(matches!(Length::new("samples", 5), Ok(Length::Samples(5))));
        assert!(matches!(Length::new("fill", 0), Ok(Length::Fill)));
        assert!(Length::new("bytes", 5).is_err());
        assert_eq!(OnExhaust::new("error", None).unwrap(), OnExhaust::Error);
        assert_eq!(
            OnExhaust::new("repeat", Some(3)).unwrap(),
            OnExhaust::Repeat(Some(3))
        );
        assert_eq!(OnExhaust::new("stop", None).unwrap(), OnExhaust::Stop);
        let msg = |k, m| OnExhaust::new(k, m).unwrap_err().to_string();
        assert_eq!(
            msg("stop", Some(2)),
            "--max-repeat goes with --on-exhaust repeat"
        );
        assert_eq!(
            msg("again", None),
            "unknown --on-exhaust 'again': use error, repeat or stop"
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

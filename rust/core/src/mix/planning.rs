//! From the phases asked for to the plan: lengths in samples on global-batch boundaries, normalized
//! weights, what the sources can give (`--on-exhaust`), and the plan itself (`plan::build`).

use super::{LengthKind, MixOptions};
use crate::error::{Error, Result};
use crate::plan::{self, OnExhaust, Phase, Schedule};

/// The one check of a phase's weights (also what Python's `midmix.mixspec` asks, before any work):
/// each source once, at least one, each finite and non-negative, not all zero, and a finite sum.
/// `at` names the phase in errors.
pub fn check_weights(weights: &[(String, f64)], at: &str) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let twice: Vec<&str> = weights
        .iter()
        .filter(|(n, _)| !seen.insert(n.as_str()))
        .map(|(n, _)| n.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !twice.is_empty() {
        return Err(Error::Config(format!(
            "{at}: source {} given twice",
            twice.join(", ")
        )));
    }
    if weights.is_empty() {
        return Err(Error::Config(format!("{at}: no weights given")));
    }
    if let Some((n, w)) = weights.iter().find(|(_, w)| !(w.is_finite() && *w >= 0.0)) {
        return Err(Error::Config(format!(
            "{at}: weight of '{n}' must be a non-negative number, got {w}"
        )));
    }
    let sum: f64 = weights.iter().map(|(_, w)| w).sum();
    if sum <= 0.0 {
        return Err(Error::Config(format!("{at}: weights are all zero")));
    }
    // Finite weights can still overflow their sum (1e308 + 1e308); normalizing by inf would give
    // every source weight 0 (or NaN) and a plan that ignores the weights.
    if !sum.is_finite() {
        let listed: Vec<String> = weights
            .iter()
            .map(|(n, v)| format!("'{n}' = {v:e}"))
            .collect();
        return Err(Error::Config(format!(
            "{at}: weights sum to {sum} ({}); scale them down, e.g. to sum to 1",
            listed.join(", ")
        )));
    }
    Ok(())
}

/// Phases with lengths in samples and weights normalized over the source list.
pub(super) fn phases(opts: &MixOptions, names: &[&str], seq_len: usize) -> Result<Vec<Phase>> {
    if opts.global_batch == Some(0) {
        return Err(Error::Config("--global-batch must be at least 1".into()));
    }
    let mut phases = Vec::new();
    let mut cum = 0u64;
    for (p, spec) in opts.phases.iter().enumerate() {
        check_weights(&spec.weights, &format!("phase {}", p + 1))?;
        let mut w = vec![0.0; names.len()];
        for (name, v) in &spec.weights {
            let i = names.iter().position(|n| n == name).ok_or_else(|| {
                Error::Config(format!(
                    "phase {}: unknown source '{name}' (sources: {})",
                    p + 1,
                    names.join(", ")
                ))
            })?;
            w[i] = *v;
        }
        let sum: f64 = w.iter().sum();
        let samples = match spec.kind {
            LengthKind::Samples => Some(spec.length),
            LengthKind::Tokens => Some(spec.length / seq_len as u64),
            LengthKind::Fill => None,
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

/// The source of every position, whole global batches only. `Fill` and `stop` end at the first
/// sample a source cannot give without repeating; other plans that need more passes than
/// `--on-exhaust` allows are refused.
pub(super) fn plan_sources(
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
        opts.output.cancel(),
    )?;
    if !stop_at_limit {
        check_exhaustion(opts, names, &plan.sources, avail, seq_len)?;
    }
    plan.check_exact(names.len(), batch, opts.blend_rule)?;
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

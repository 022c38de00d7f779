"""The grid as a job graph, and running one job against its cache.

Jobs, by stage (each stage's jobs are independent of one another):
  data      prepare/NAME                 every corpus and SFT target (no dependencies)
  stats     stats/NAME                   unigram statistics for the proximity table (no dependencies)
  mixes     mix/base, mix/VARIANT        after every prepare (each first runs the grid's data check)
  base      train/base                   after mix/base
  midtrain  train/VARIANT                after train/base and its mix
  sft       sft/MODEL/TARGET/seedS-lrL   after train/MODEL and the target's data
  tables    tables                       after everything it reads

`run_job` is the one place a job's cache is decided: under the job's lock, the facts it would be built
from now (see `stamp.py`) are compared with those recorded when it was built. A match is reused; a
mismatch rebuilds data (prepare, mixes, statistics are cheap and deterministic) but refuses a training
run unless `redo_stale` (then the old run is moved aside to OUT/stale/, not deleted: it cost GPU-hours).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midmix.errors import ConfigError
from midmix.experiment.grid import all_variants, mix_phases, samples_needed
from midmix.experiment.stamp import Stamp, file_facts, locked

if TYPE_CHECKING:
    from midmix.experiment.run import Experiment

STAMP_KIND = {"prepare": "prepare", "mix": "mix", "train": "train", "sft": "train", "stats": "stats"}


@dataclass(frozen=True)
class Job:
    id: str  # KIND/NAME, also the name of its stamp and lock
    stage: str
    deps: tuple[str, ...] = ()  # jobs that must be complete first
    inputs: tuple[str, ...] = ()  # the deps whose outputs it reads: their fingerprints are part of its facts

    @property
    def kind(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[1]


def graph(exp: Experiment) -> list[Job]:
    """Every job of the grid, in an order that runs each after its dependencies."""
    g = exp.g
    prepares = tuple(f"prepare/{name}" for name in exp.prepare_specs())
    jobs = [Job(p, "data") for p in prepares]
    jobs += [Job(f"stats/{name}", "stats") for name in exp.stats_specs()]
    variants = {v.name: v for v in all_variants(g)}
    for name, v in [("base", None), *variants.items()]:
        sources = tuple(f"prepare/{s}" for s in samples_needed(mix_phases(g, v)))
        jobs.append(Job(f"mix/{name}", "mixes", prepares, sources))
    general = "prepare/general_val"
    jobs.append(Job("train/base", "base", ("mix/base", general), ("mix/base", general)))
    for name in variants:
        deps = (f"mix/{name}", general, "train/base")
        jobs.append(Job(f"train/{name}", "midtrain", deps, deps))
    sft_general = "prepare/general_val-docs" if g.sft.general_loss == "documents" else general
    sft = []
    for model, target, seed, lr in exp.sft_runs():
        deps = (f"train/{model}", f"prepare/sft-{target}", sft_general)
        sft.append(Job(f"sft/{model}/{target}/seed{seed}-lr{lr:g}", "sft", deps, deps))
    jobs += sft
    reads = tuple(j.id for j in jobs if j.stage in ("stats", "mixes", "sft"))
    jobs.append(Job("tables", "tables", reads))
    return jobs


def sft_key(job: Job) -> tuple[str, str, int, float]:
    model, target, run = job.name.split("/")
    seed, lr = run.removeprefix("seed").split("-lr")
    return model, target, int(seed), float(lr)


def stamp(exp: Experiment, job: Job) -> Stamp:
    return Stamp(exp.out / "stamps" / f"{job.id}.json")


def output_complete(exp: Experiment, job: Job) -> bool:
    """The output's own completion marker (written last, under a temporary name, by what builds it)."""
    if job.kind == "prepare":
        return (exp.data / job.name / "index.json").exists() and (exp.data / job.name / "midmix.json").exists()
    if job.kind == "mix":
        return (exp.mixes / job.name / "midmix.json").exists()
    if job.kind in ("train", "sft"):
        return (run_dir(exp, job) / "summary.json").exists()
    if job.kind == "stats":
        return exp.stats_path(job.name).exists()
    return False  # tables: cheap, always recomputed from what they read


def run_dir(exp: Experiment, job: Job) -> Path:
    return exp.sft_dir(*sft_key(job)) if job.kind == "sft" else exp.runs / job.name


def recipe(exp: Experiment, job: Job) -> dict[str, Any]:
    if job.kind == "sft":
        return exp.sft_recipe(*sft_key(job))
    return exp.pretrain_recipe(exp.variant(job.name))


def facts(exp: Experiment, job: Job) -> dict[str, Any]:
    """What the job's output is determined by, now (as JSON reads it back). Its inputs must be complete."""
    return json.loads(json.dumps(_facts(exp, job)))


def _facts(exp: Experiment, job: Job) -> dict[str, Any]:
    g = exp.g
    upstream = {}
    for dep in job.inputs:
        fp = stamp(exp, exp.job(dep)).fingerprint()
        if fp is None:
            raise ConfigError(f"{job.id} needs {dep}, which is not complete: run the grid's earlier stages first")
        upstream[dep] = fp
    known = stamp(exp, job).known_files()
    if job.kind == "prepare":
        spec = exp.prepare_specs()[job.name]
        files = {
            "input": file_facts(spec.src, known.get("input")),
            "tokenizer": file_facts(g.path(g.tokenizer), known.get("tokenizer")),
        }
        return {"files": files, "options": spec.options()}
    if job.kind == "stats":
        src, fields = exp.stats_specs()[job.name]
        files = {
            "input": file_facts(src, known.get("input")),
            "tokenizer": file_facts(g.path(g.tokenizer), known.get("tokenizer")),
        }
        return {"files": files, "options": {"fields": fields, **dataclasses.asdict(g.proximity)}}
    if job.kind == "mix":
        phases = [dataclasses.asdict(p) for p in mix_phases(g, exp.variant(job.name))]
        return {
            "options": {
                "phases": phases,
                "seed": g.seed,
                "global_batch": g.global_batch,
                "on_exhaust": g.on_exhaust,
                "max_repeat": g.max_repeat,
            },
            "upstream": upstream,
        }
    if job.kind in ("train", "sft"):
        return {"recipe": _relative(recipe(exp, job), str(exp.out)), "upstream": upstream}
    return {}


def _relative(value: Any, out: str) -> Any:
    """Paths inside the experiment directory as $OUT/…, so a moved experiment keeps its runs."""
    if isinstance(value, dict):
        return {k: _relative(v, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, out) for v in value]
    if isinstance(value, str) and (value == out or value.startswith(out + "/")):
        return "$OUT" + value[len(out) :]
    return value


def is_done(exp: Experiment, job: Job, done: set[str]) -> bool:
    """Complete and still matching its inputs (`done`: the job ids already known to be). Cheap when not:
    no file is hashed for a job without a complete stamp."""
    if job.kind == "tables" or not all(d in done for d in job.inputs) or not output_complete(exp, job):
        return False
    s = stamp(exp, job)
    return s.fingerprint() is not None and s.changes(STAMP_KIND[job.kind], facts(exp, job)) is None


def plan(exp: Experiment, jobs: list[Job]) -> set[str]:
    """The ids of the jobs that are done (in graph order, so each sees its inputs' state)."""
    done: set[str] = set()
    for job in jobs:
        if is_done(exp, job, done):
            done.add(job.id)
    return done


def run_job(exp: Experiment, job: Job, redo_stale: bool = False) -> str:
    """Build the job's output unless it is complete and current; returns "up to date" or "built"."""
    if job.kind == "tables":
        with locked(exp.out / "locks", job.id):
            exp.write_tables()
        return "built"
    kind = STAMP_KIND[job.kind]
    with locked(exp.out / "locks", job.id):
        s = stamp(exp, job)
        now = facts(exp, job)
        recorded = s.read()
        changes = s.changes(kind, now)
        if changes is None and recorded is not None and recorded.get("complete") and output_complete(exp, job):
            return "up to date"
        if kind == "train":
            # A run on disk that was started on other inputs (or before stamps existed).
            if run_dir(exp, job).exists() and (recorded is None or changes is not None):
                if not redo_stale:
                    raise ConfigError(
                        f"{job.id}: {run_dir(exp, job)} was trained on other inputs; changed:\n  "
                        + "\n  ".join(changes or [])
                        + "\nre-run with --redo-stale to train it "
                        "again (the old run is moved to OUT/stale/), or restore what changed"
                    )
                aside = exp.out / "stale" / f"{job.id.replace('/', '~')}-{time.strftime('%Y%m%d-%H%M%S')}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                run_dir(exp, job).rename(aside)
                exp.log(f"{job.id}: inputs changed ({'; '.join(changes or [])}); old run moved to {aside}")
        elif recorded is not None and changes is not None:
            exp.log(f"rebuilding {job.id}: {'; '.join(changes)}")
        # Recorded before a training run starts, so a run killed midway and resumed is known to be this one.
        s.write(kind, now, complete=False)
        exp.build(job)
        s.write(kind, now, complete=True)
        return "built"

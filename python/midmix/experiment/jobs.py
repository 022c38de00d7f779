"""The grid as a job graph, and running one job against its cache.

Jobs, by stage (each stage's jobs are independent of one another):
  data      prepare/NAME                 every corpus and SFT target (no dependencies)
  stats     stats/NAME                   unigram statistics for the proximity table (no dependencies)
  mixes     mix/base, mix/VARIANT        after every prepare (each first runs the grid's data check)
  base      train/base                   after mix/base
  midtrain  train/VARIANT                after train/base and its mix
  sft       sft/MODEL/TARGET/seedS-lrL   after train/MODEL and the target's data
  tables    tables                       after everything it reads

What each kind of job is (its output, completion marker, cache facts and build) is in `kinds.py`.
`run_job` is the one place a job's cache is decided: under the job's lock, the facts it would be built
from now (see `stamp.py`) are compared with those recorded when it was built. A match is reused; a
mismatch rebuilds data (prepare, mixes, statistics are cheap and deterministic) but refuses a training
run unless `redo_stale` (then the old run is moved aside to OUT/stale/, not deleted: it cost GPU-hours).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from midmix.errors import ConfigError
from midmix.experiment.builders import Builder
from midmix.experiment.grid import all_variants, mix_phases, samples_needed
from midmix.experiment.kinds import KINDS, JobKind
from midmix.experiment.layout import Layout, sft_name
from midmix.experiment.stamp import Stamp, locked


@dataclass(frozen=True)
class Job:
    id: str  # KIND/NAME, also the name of its stamp and lock
    stage: str
    deps: tuple[str, ...] = ()  # jobs that must be complete first
    inputs: tuple[str, ...] = ()  # the deps whose outputs it reads: their fingerprints are part of its facts

    @property
    def kind(self) -> str:
        return self.id.partition("/")[0]

    @property
    def name(self) -> str:
        return self.id.partition("/")[2]

    @property
    def kind_spec(self) -> JobKind:
        return KINDS[self.kind]


def graph(lay: Layout) -> list[Job]:
    """Every job of the grid, in an order that runs each after its dependencies."""
    g = lay.g
    prepares = tuple(f"prepare/{name}" for name in lay.prepare_specs())
    jobs = [Job(p, "data") for p in prepares]
    jobs += [Job(f"stats/{name}", "stats") for name in lay.stats_specs()]
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
    for model, target, seed, lr in lay.sft_runs():
        deps = (f"train/{model}", f"prepare/sft-{target}", sft_general)
        sft.append(Job(f"sft/{sft_name(model, target, seed, lr)}", "sft", deps, deps))
    jobs += sft
    reads = tuple(j.id for j in jobs if j.stage in ("stats", "mixes", "sft"))
    jobs.append(Job("tables", "tables", reads))
    return jobs


def stamp(lay: Layout, job: Job) -> Stamp:
    return Stamp(lay.stamp_path(job.id))


def facts(lay: Layout, job: Job) -> dict[str, Any]:
    """What the job's output is determined by, now (as JSON reads it back). Its inputs must be complete."""
    upstream = {}
    for dep in job.inputs:
        fp = Stamp(lay.stamp_path(dep)).fingerprint()
        if fp is None:
            raise ConfigError(f"{job.id} needs {dep}, which is not complete: run the grid's earlier stages first")
        upstream[dep] = fp
    known = stamp(lay, job).known_files()
    return json.loads(json.dumps(job.kind_spec.facts(lay, job.name, known, upstream)))


def is_done(lay: Layout, job: Job, done: set[str]) -> bool:
    """Complete and still matching its inputs (`done`: the job ids already known to be). Cheap when not:
    no file is hashed for a job without a complete stamp."""
    kind = job.kind_spec
    if kind.stamp is None or not all(d in done for d in job.inputs) or not kind.complete(lay, job.name):
        return False
    s = stamp(lay, job)
    return s.fingerprint() is not None and s.changes(kind.stamp, facts(lay, job)) is None


def plan(lay: Layout, jobs: list[Job]) -> set[str]:
    """The ids of the jobs that are done (in graph order, so each sees its inputs' state)."""
    done: set[str] = set()
    for job in jobs:
        if is_done(lay, job, done):
            done.add(job.id)
    return done


def run_job(b: Builder, job: Job, redo_stale: bool = False) -> str:
    """Build the job's output unless it is complete and current; returns "up to date" or "built"."""
    kind = job.kind_spec
    if kind.stamp is None:
        with locked(b.out / "locks", job.id):
            kind.build(b, job.name)
        return "built"
    with locked(b.out / "locks", job.id):
        s = stamp(b, job)
        now = facts(b, job)
        recorded = s.read()
        changes = s.changes(kind.stamp, now)
        if changes is None and recorded is not None and recorded.get("complete") and kind.complete(b, job.name):
            return "up to date"
        if kind.costly:
            # A run on disk that was started on other inputs (or before stamps existed).
            run_dir = kind.output(b, job.name)
            if run_dir.exists() and (recorded is None or changes is not None):
                if not redo_stale:
                    raise ConfigError(
                        f"{job.id}: {run_dir} was trained on other inputs; changed:\n  "
                        + "\n  ".join(changes or [])
                        + "\nre-run with --redo-stale to train it "
                        "again (the old run is moved to OUT/stale/), or restore what changed"
                    )
                aside = b.out / "stale" / f"{job.id.replace('/', '~')}-{time.strftime('%Y%m%d-%H%M%S')}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                run_dir.rename(aside)
                b.log(f"{job.id}: inputs changed ({'; '.join(changes or [])}); old run moved to {aside}")
        elif recorded is not None and changes is not None:
            b.log(f"rebuilding {job.id}: {'; '.join(changes)}")
        # Recorded before a training run starts, so a run killed midway and resumed is known to be this one.
        s.write(kind.stamp, now, complete=False)
        kind.build(b, job.name)
        s.write(kind.stamp, now, complete=True)
        return "built"

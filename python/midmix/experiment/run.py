"""`midmix experiment GRID.yaml`: the midtraining study's design, end to end, with every output cached.

Stages (the job graph and its cache are in `jobs.py`, the kinds of job in `kinds.py`, the builds in
`builders.py`, the launchers that run the graph in `launch.py` and `slurm.py`):
  1. prepare the base corpus, its held-out split, each specialty corpus and each SFT target;
  2. build the base's mix and one scheduled mix per variant (base data until the start point, then
     the midtraining mix), so every variant's prefix is the base's own stream;
  3. pretrain the base once, saving full checkpoints at every start point;
  4. branch each variant (mixes × starts, continued-pretraining controls, the ablation grid) from the
     base checkpoint at its start point;
  5. SFT every model on every target for every seed and learning rate;
  6. proximity statistics; then the tables (see `tables.py`).
This module runs the stages in this process, or hands the graph to a launcher.
"""

from __future__ import annotations

import json
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from midmix.errors import ConfigError
from midmix.experiment import launch
from midmix.experiment.builders import Builder
from midmix.experiment.estimate import H100_BF16_PEAK, estimate, render
from midmix.experiment.grid import STAGES, Grid, Variant, all_variants
from midmix.experiment.jobs import Job, graph, run_job
from midmix.experiment.recipes import pretrain_recipe, sft_recipe
from midmix.manifest import MixManifest, read_manifest


class Eta:
    """`i/n, ETA …` for a stage of similar jobs, from the average time of those done so far."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def next(self) -> str:
        self.done += 1
        if self.done == 1:
            return f"{self.done}/{self.total}"
        left = (time.perf_counter() - self.t0) / (self.done - 1) * (self.total - self.done + 1)
        return f"{self.done}/{self.total} (ETA {left / 60:.0f} min)"


class Experiment(Builder):
    """A grid's stages run in this process, over the cache every launcher shares."""

    def __init__(self, grid: Grid, redo_stale: bool = False) -> None:
        super().__init__(grid)
        self.redo_stale = redo_stale  # retrain runs whose inputs changed (see jobs.run_job)

    @classmethod
    def from_spec(cls, spec: launch.LaunchSpec) -> Experiment:
        return cls(spec.load_grid(), redo_stale=spec.redo_stale)

    def prepare(self) -> None:
        """Stage 1 in this process (each output reused while its inputs are unchanged)."""
        self.run_stage("data")

    def build_mixes(self) -> None:
        """Every variant as an index mix over the prepared data: a variant costs 5 bytes per sample, not a
        copy of its tokens (the base prefix it shares with every other variant included)."""
        self.run_stage("mixes")
        on_disk = sum(f.stat().st_size for f in self.mixes.rglob("*") if f.is_file())
        copied = 0
        for d in self.mixes.iterdir():
            m = read_manifest(d)
            if isinstance(m, MixManifest):
                copied += m.total_samples * (1 + m.seq_len * np.dtype(m.dtype).itemsize)
        self.log(f"mixes take {on_disk / 2**20:.1f} MiB on disk as indexes ({copied / 2**20:.1f} MiB materialized)")

    def pretrain_recipe(self, v: Variant | None) -> dict[str, Any]:
        return pretrain_recipe(self, v)

    def sft_recipe(self, model: str, target: str, seed: int, lr: float) -> dict[str, Any]:
        return sft_recipe(self, model, target, seed, lr)

    def pretrain(self) -> None:
        self.run_stage("base")
        self.run_stage("midtrain")

    def finetune(self) -> None:
        self.run_stage("sft")

    # -- jobs ----------------------------------------------------------------------------------------
    @cached_property
    def jobs(self) -> list[Job]:
        return graph(self)

    @cached_property
    def _jobs_by_id(self) -> dict[str, Job]:
        return {j.id: j for j in self.jobs}

    def job(self, job_id: str) -> Job:
        try:
            return self._jobs_by_id[job_id]
        except KeyError:
            raise ConfigError(f"grid {self.g.name} has no job {job_id!r}") from None

    def run_stage(self, stage: str) -> None:
        """Run one stage's jobs in this process, in order."""
        todo = [j for j in self.jobs if j.stage == stage]
        eta = Eta(len(todo))
        for job in todo:
            self.progress = eta.next()  # shown in the training runs' log lines
            run_job(self, job, self.redo_stale)
        self.progress = ""

    def run(self) -> dict[str, Any]:
        """The whole grid in this process, one job after another (`launch.py` spreads it over processes)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.log(
            f"experiment {self.g.name} → {self.out}: {len(all_variants(self.g))} midtrained variants, "
            f"{len(self.sft_runs())} SFT runs"
        )
        for stage in STAGES:
            self.run_stage(stage)
        return json.loads((self.out / "results" / "results.json").read_text())

    def dry_run(self, mfu: float, peak: float, startup_s: float) -> str:
        """Stage 1 (data, cached for the real run) and the data check, then the plan and its cost; no mix is
        built and nothing trained."""
        g = self.g
        self.out.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self.check_data()
        lines = [
            f"grid {g.name}: {g.arch}, {g.steps} steps × {g.global_batch} × {g.seq_len} tokens, "
            f"{len(all_variants(g))} midtrained variants, "
            f"{len(self.sft_runs())} SFT runs"
        ]
        worst: dict[str, tuple[float, str, int]] = {}
        for mix, source, need, have in self.source_needs():
            if need / have > worst.get(source, (0.0, "", 0))[0]:
                worst[source] = (need / have, mix, have)
        lines.append(
            "most passes over each source: "
            + ", ".join(f"{k} {p:.2f} ({where}; {have:,} samples)" for k, (p, where, have) in worst.items())
        )
        lines.append(render(g, estimate(self), mfu, peak, startup_s))
        text = "\n".join(lines)
        print(text, flush=True)
        return text


def main(
    grid_path: str,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    smoke_run: bool = False,
    dry_run: bool = False,
    mfu: float = 0.3,
    peak: float = H100_BF16_PEAK,
    startup_s: float = 20.0,
    launcher: str = "serial",
    jobs: int = 1,
    redo_stale: bool = False,
    slurm_options: dict[str, Any] | None = None,
    wait: bool = False,
) -> int:
    spec = launch.LaunchSpec(str(Path(grid_path).resolve()), list(overrides), smoke_run, redo_stale, os.getcwd())
    exp = Experiment.from_spec(spec)
    if dry_run:
        exp.dry_run(mfu, peak, startup_s)
        print(launch.describe(exp), flush=True)
        return 0
    if launcher == "slurm":
        from midmix.experiment import slurm

        return slurm.submit(exp, spec, slurm_options or {}, wait=wait)
    try:
        if launcher == "local":
            return launch.run_local(exp, spec, jobs)
        if launcher != "serial":
            raise ConfigError(f"--launcher {launcher!r}: one of serial, local, slurm")
        exp.run()
        return 0
    finally:
        from midmix.train.run import close_dist

        close_dist()

"""`midmix experiment GRID.yaml`: the midtraining study's design, end to end, with every output cached.

Stages (the job graph and its cache are in `jobs.py`, the launchers that run it in `launch.py`):
  1. prepare the base corpus, its held-out split, each specialty corpus and each SFT target;
  2. build the base's mix and one scheduled mix per variant (base data until the start point, then
     the midtraining mix), so every variant's prefix is the base's own stream;
  3. pretrain the base once, saving full checkpoints at every start point;
  4. branch each variant (mixes × starts, continued-pretraining controls, the ablation grid) from the
     base checkpoint at its start point;
  5. SFT every model on every target for every seed and learning rate;
  6. proximity statistics; then the tables (see `tables.py`).
This module says how each output is built; a killed training run resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from midmix import api
from midmix.errors import ConfigError
from midmix.experiment import tables
from midmix.experiment.estimate import H100_BF16_PEAK
from midmix.experiment.grid import (
    STAGES,
    Grid,
    Variant,
    all_variants,
    branch_step,
    max_passes,
    mix_phases,
    samples_needed,
    sft_jobs,
)
from midmix.experiment.jobs import Job, graph, run_job, sft_key
from midmix.manifest import MixManifest, read_manifest
from midmix.registry import Dataset


@dataclass(frozen=True)
class PrepareSpec:
    """One `midmix prepare` of the grid: SFT examples whose prompt alone fills seq_len are skipped (and
    counted), as any trainer must; a pretraining corpus with a bad record is an error."""

    name: str
    src: Path
    seq_len: int
    mode: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def on_bad_record(self) -> str:
        return "skip" if self.mode == "sft" else "error"

    def options(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seq_len": self.seq_len,
            "mode": self.mode,
            "fields": self.fields,
            "on_bad_record": self.on_bad_record,
        }


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


class Experiment:
    def __init__(self, grid: Grid, redo_stale: bool = False) -> None:
        self.g = grid
        self.out = grid.out_dir
        self.data, self.mixes, self.runs = self.out / "data", self.out / "mixes", self.out / "runs"
        self.redo_stale = redo_stale  # retrain runs whose inputs changed (see jobs.run_job)
        self._checked = False
        self.progress = ""
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)

    # -- 1. data -----------------------------------------------------------------------------------
    def prepare_specs(self) -> dict[str, PrepareSpec]:
        """Every prepared dataset of the grid, by its directory name under OUT/data."""
        g = self.g
        specs = {
            name: PrepareSpec(name, g.path(rel), g.seq_len, "pretrain")
            for name, rel in [
                ("base", g.base),
                ("general_val", g.general_val),
                *((m, s.file) for m, s in g.mixes.items()),
            ]
        }
        for name, t in g.sft.targets.items():
            specs[f"sft-{name}"] = PrepareSpec(name, g.path(t.file), g.sft.seq_len, "sft")
        if g.sft.general_loss == "documents":  # each held-out document an SFT example with an empty prompt
            specs["general_val-docs"] = PrepareSpec(
                "general_val-docs",
                g.path(g.general_val),
                g.sft.seq_len,
                "sft",
                {"prompt_field": "", "response_field": "text"},
            )
        return specs

    def prepare(self) -> None:
        """Stage 1 in this process (each output reused while its inputs are unchanged)."""
        self.run_stage("data")

    def prepare_one(self, dir_name: str) -> None:
        spec = self.prepare_specs()[dir_name]  # its input exists: jobs.facts hashed it
        m = api.prepare(
            spec.name,
            [spec.src],
            tokenizer=self.g.path(self.g.tokenizer),
            seq_len=spec.seq_len,
            out=self.data / dir_name,
            mode=spec.mode,
            overwrite=True,
            register=False,
            on_bad_record=spec.on_bad_record,
            **spec.fields,
        )
        c = m.counts
        skipped = sum(c.skipped.values())
        self.log(
            f"prepared {spec.name}: {c.documents:,} documents → {c.samples:,} samples of ≤{spec.seq_len} tokens"
            + (f" ({skipped} skipped: {c.skipped})" if skipped else "")
        )

    # -- 2. mixes ----------------------------------------------------------------------------------
    def mix_dir(self, variant: Variant | None) -> Path:
        return self.mixes / ("base" if variant is None else variant.name)

    def source_needs(self) -> Iterator[tuple[str, str, float, int]]:
        """(mix, source, samples the mix needs of it, samples the prepared source has) for every mix."""
        size = {name: Dataset.open(self.data / name).num_samples for name in ["base", *self.g.mixes]}
        for v in [None, *all_variants(self.g)]:
            for source, need in samples_needed(mix_phases(self.g, v)).items():
                yield self.mix_dir(v).name, source, need, size[source]

    def check_data(self) -> None:
        """Refuse, before any mix is built or model trained, a grid that asks any source for more than it has
        (passes beyond max_repeat), an SFT target for more examples than it has, or more general held-out
        samples than exist: one error listing every shortfall."""
        g = self.g
        allowed = max_passes(g)
        short = []
        for mix, source, need, have in self.source_needs():
            if need > allowed * have:
                short.append(
                    f"mix {mix}: needs {need:,.0f} samples of {source!r} ({need / have:.2f} passes), which has {have:,}"
                )
        for name, t in g.sft.targets.items():
            have = Dataset.open(self.data / f"sft-{name}").num_samples
            if t.train_examples + t.val_examples > have:
                short.append(
                    f"sft.targets.{name}: train_examples {t.train_examples} + val_examples "
                    f"{t.val_examples} > its {have:,} examples (after skipped ones)"
                )
        for name in ["general_val"] + (["general_val-docs"] if g.sft.general_loss == "documents" else []):
            val = Dataset.open(self.data / name).num_samples
            if g.eval_samples > val:
                short.append(f"eval_samples: {g.eval_samples} > the {val:,} samples of {name}")
        if short:
            limit = "on_exhaust: error (one pass)" if g.max_repeat is None else f"max_repeat: {g.max_repeat}"
            raise ConfigError(
                f"grid {g.name}: the data cannot give what the grid asks under {limit}:\n  "
                + "\n  ".join(short)
                + "\nresize the grid (steps, weights, examples) or allow "
                "repetition (on_exhaust: repeat, max_repeat: N)"
            )

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

    def variant(self, name: str) -> Variant | None:
        """The variant of a mix or run name ("base": None)."""
        if name == "base":
            return None
        for v in all_variants(self.g):
            if v.name == name:
                return v
        raise ConfigError(f"grid {self.g.name} has no variant {name!r}")

    def build_mix(self, v: Variant | None) -> None:
        if not self._checked:  # every mix job checks the whole grid's data first: one error lists it all
            self.check_data()
            self._checked = True
        g, out = self.g, self.mix_dir(v)
        phases = mix_phases(g, v)
        sources = {name: self.data / name for name in samples_needed(phases)}
        m = api.build_mix(
            phases,
            out,
            sources=sources,
            seed=g.seed,
            global_batch=g.global_batch,
            on_exhaust=g.on_exhaust,
            max_repeat=g.max_repeat,
            overwrite=True,
            register=False,
        )
        repeated = {k: p for k, p in m.passes.items() if p > 1}
        self.log(
            f"built mix {out.name}"
            + (f" (passes: {', '.join(f'{k} {p:.2f}' for k, p in repeated.items())})" if repeated else "")
        )

    # -- 3–5. training -----------------------------------------------------------------------------
    def _recipe(self, name: str, run_dir: Path) -> dict[str, Any]:
        g = self.g
        return {
            "run_name": name,
            "run_dir": str(run_dir),
            "seed": g.seed,
            "device": g.device,
            "model": {"arch": g.arch},
            "loggers": {"progress_bar": False, "console": False},
            "data": {
                "eval": {"general": {"path": str(self.data / "general_val"), "max_samples": g.eval_samples}},
                "eval_batch_size": 16,
            },
        }

    def pretrain_recipe(self, v: Variant | None) -> dict[str, Any]:
        g, p = self.g, self.g.pretrain
        name = "base" if v is None else v.name
        r = self._recipe(name, self.runs / name)
        every = f"{max(g.steps // 4, 1)}ba"
        r.update(
            {
                "duration": f"{g.steps}ba",
                "optimizer": {"lr": p.lr, "weight_decay": p.weight_decay},
                "schedule": {"name": p.schedule, "warmup": p.warmup, "min_lr": p.min_lr},
                "callbacks": {"forgetting": {"eval": "general", "interval": every}, "mixture": {"interval": every}},
            }
        )
        r["data"].update(
            {
                "train": {"path": str(self.mix_dir(v))},
                "global_batch_size": g.global_batch,
                "micro_batch_size": g.micro_batch,
            }
        )
        if v is None:  # full checkpoints at every branch point; the rest of the run is cheap to redo
            steps = sorted({branch_step(g, x.start) for x in all_variants(g)})
            r["checkpoint"] = {"interval": None, "steps": steps}
        else:  # the variants' SFT needs only their final weights
            r["branch"] = {"run": str(self.runs / "base"), "step": branch_step(g, v.start)}
            r["checkpoint"] = {"interval": None, "weights_only": True}
        return r

    def sft_dir(self, model: str, target: str, seed: int, lr: float) -> Path:
        return self.runs / "sft" / model / target / f"seed{seed}-lr{lr:g}"

    def sft_recipe(self, model: str, target: str, seed: int, lr: float) -> dict[str, Any]:
        g, s, t = self.g, self.g.sft, self.g.sft.targets[target]
        data = self.data / f"sft-{target}"
        total = Dataset.open(data).num_samples  # check_data saw train + val examples fit
        val, train = t.val_examples, t.train_examples
        r = self._recipe(f"sft-{target}-{model}", self.sft_dir(model, target, seed, lr))
        r.update(
            {
                "seed": seed,
                "duration": f"{s.epochs}ep",
                "model": {"arch": g.arch, "init_from": str(self.runs / model)},
                "optimizer": {"lr": lr},
                "schedule": {"name": "cosine", "warmup": 0.1, "min_lr": min(1e-6, lr)},
                "callbacks": {
                    "domain": {"eval": "domain", "interval": "1000000ba"},
                    "forgetting": {"eval": "general", "interval": "1000000ba"},
                },
                "checkpoint": {"interval": None, "weights_only": True} if s.save_weights else {"enabled": False},
            }
        )
        r["data"].update(
            {
                "train": {"path": str(data), "kind": "sft", "select": f"0:{train}", "mask_prompt": t.mask_prompt},
                "global_batch_size": s.global_batch,
            }
        )
        r["data"]["eval"]["domain"] = {
            "path": str(data),
            "kind": "sft",
            "select": f"{total - val}:",
            "max_samples": val,
            "mask_prompt": t.mask_prompt,
        }
        if s.general_loss == "documents":
            r["data"]["eval"]["general"] = {
                "path": str(self.data / "general_val-docs"),
                "kind": "sft",
                "max_samples": g.eval_samples,
            }
        return r

    def train(self, recipe: dict[str, Any], label: str) -> dict[str, Any]:
        from midmix.train.config import from_dict
        from midmix.train.run import completed, train

        cfg = from_dict(recipe)
        done = completed(cfg, recipe)
        if done is not None:
            return done
        t = time.perf_counter()
        summary = train(cfg, recipe)
        final = summary.get("final", {})
        shown = ", ".join(f"{k.split('/')[0]} {final[k]:.3f}" for k in ("domain/loss", "forgetting/loss") if k in final)
        where = f" [{self.progress}]" if self.progress else ""
        self.log(f"{label}{where}: {summary['steps']} steps in {time.perf_counter() - t:.1f}s ({shown})")
        return summary

    def pretrain(self) -> None:
        self.run_stage("base")
        self.run_stage("midtrain")

    def sft_runs(self) -> list[tuple[str, str, int, float]]:
        """(model, target, seed, lr) of every SFT run."""
        return [(m, t, seed, lr) for m, t in sft_jobs(self.g) for seed in self.g.sft.seeds for lr in self.g.sft.lrs]

    def finetune(self) -> None:
        self.run_stage("sft")

    # -- 6. proximity and tables ---------------------------------------------------------------------
    def stats_specs(self) -> dict[str, tuple[Path, list[str]]]:
        """(corpus, fields) of the unigram statistics the proximity table reads, by name."""
        g = self.g
        specs = {"base": (g.path(g.base), ["text"])}
        specs.update({m: (g.path(spec.file), ["text"]) for m, spec in g.mixes.items()})
        specs.update({f"target-{t}": (g.path(spec.file), ["prompt", "response"]) for t, spec in g.sft.targets.items()})
        return specs

    def stats_path(self, name: str) -> Path:
        return self.out / "stats" / f"{name}.npz"

    def unigram(self, name: str) -> None:
        from midmix.proximity import UnigramStats

        src, fields = self.stats_specs()[name]
        p = self.g.proximity
        stats = UnigramStats.from_files(
            [src],
            self.g.path(self.g.tokenizer),
            name,
            fields=fields,
            max_docs=p.max_docs,
            max_tokens_per_doc=p.max_tokens_per_doc,
            seed=p.seed,
        )
        path = self.stats_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.save(path)  # written under a temporary name, then renamed

    def write_tables(self) -> dict[str, Any]:
        from midmix.proximity import UnigramStats

        stats = {}
        for name in self.stats_specs():
            stats[name.replace("target-", "target:", 1)] = UnigramStats.load(self.stats_path(name))
        results = tables.write_all(self, stats)
        self.log(f"done: tables in {self.out / 'results'}")
        return results

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

    def build(self, job: Job) -> None:
        """Build one job's output (the cache around it is `jobs.run_job`'s)."""
        if job.kind == "prepare":
            self.prepare_one(job.name)
        elif job.kind == "stats":
            self.unigram(job.name)
        elif job.kind == "mix":
            self.build_mix(self.variant(job.name))
        elif job.kind == "train":
            v = self.variant(job.name)
            self.train(self.pretrain_recipe(v), "pretrain base" if v is None else f"midtrain {v.name}")
        elif job.kind == "sft":
            m, t, seed, lr = sft_key(job)
            self.train(self.sft_recipe(m, t, seed, lr), f"sft {t} ← {m} seed {seed} lr {lr:g}")
        else:
            raise ConfigError(f"unknown job kind {job.kind!r}")

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
        from midmix.experiment.estimate import estimate, render

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
    from midmix.experiment import launch

    spec = launch.LaunchSpec(str(Path(grid_path).resolve()), list(overrides), smoke_run, redo_stale, os.getcwd())
    exp = spec.experiment()
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
        return launch.run_serial(exp)
    finally:
        from midmix.train.run import close_dist

        close_dist()

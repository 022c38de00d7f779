"""A grid's experiment directory: where each output lives and what each prepare and statistics job reads.

    OUT/data/NAME            prepared corpora and SFT targets      OUT/stamps/JOB.json  what each was built from
    OUT/mixes/NAME           the base's mix and each variant's     OUT/locks/           one lock per job
    OUT/runs/NAME            pretraining and midtraining runs      OUT/logs/JOB.log     each job's output
    OUT/runs/sft/MODEL/TARGET/seedS-lrL   SFT runs                 OUT/results/         the tables
    OUT/stats/NAME.npz       unigram statistics

`Layout` is all that the launchers, the cost estimate and the tables need: they build nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midmix.errors import ConfigError
from midmix.experiment.grid import Grid, Variant, all_variants, sft_jobs


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


def sft_name(model: str, target: str, seed: int, lr: float) -> str:
    """An SFT run's name: MODEL/TARGET/seedS-lrL (its job is sft/NAME)."""
    return f"{model}/{target}/seed{seed}-lr{lr:g}"


def sft_key(name: str) -> tuple[str, str, int, float]:
    """(model, target, seed, lr) of an SFT run's name."""
    model, target, run = name.split("/")
    seed, lr = run.removeprefix("seed").split("-lr")
    return model, target, int(seed), float(lr)


class Layout:
    def __init__(self, grid: Grid) -> None:
        self.g = grid
        self.out = grid.out_dir
        self.data, self.mixes, self.runs = self.out / "data", self.out / "mixes", self.out / "runs"
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)

    # -- inputs --------------------------------------------------------------------------------------
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

    def stats_specs(self) -> dict[str, tuple[Path, list[str]]]:
        """(corpus, fields) of the unigram statistics the proximity table reads, by name."""
        g = self.g
        specs = {"base": (g.path(g.base), ["text"])}
        specs.update({m: (g.path(spec.file), ["text"]) for m, spec in g.mixes.items()})
        specs.update({f"target-{t}": (g.path(spec.file), ["prompt", "response"]) for t, spec in g.sft.targets.items()})
        return specs

    def variant(self, name: str) -> Variant | None:
        """The variant of a mix or run name ("base": None)."""
        if name == "base":
            return None
        for v in all_variants(self.g):
            if v.name == name:
                return v
        raise ConfigError(f"grid {self.g.name} has no variant {name!r}")

    def sft_runs(self) -> list[tuple[str, str, int, float]]:
        """(model, target, seed, lr) of every SFT run."""
        return [(m, t, seed, lr) for m, t in sft_jobs(self.g) for seed in self.g.sft.seeds for lr in self.g.sft.lrs]

    # -- outputs -------------------------------------------------------------------------------------
    def mix_dir(self, variant: Variant | None) -> Path:
        return self.mixes / ("base" if variant is None else variant.name)

    def sft_dir(self, model: str, target: str, seed: int, lr: float) -> Path:
        return self.runs / "sft" / model / target / f"seed{seed}-lr{lr:g}"

    def stats_path(self, name: str) -> Path:
        return self.out / "stats" / f"{name}.npz"

    def stamp_path(self, job_id: str) -> Path:
        return self.out / "stamps" / f"{job_id}.json"

    def log_path(self, job_id: str) -> Path:
        return self.out / "logs" / f"{job_id}.log"

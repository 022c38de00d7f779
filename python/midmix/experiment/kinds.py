"""The kinds of job a grid runs, in one table: for each, where its output is, the marker written last that
says the output is complete, the facts its cache key is hashed from (`stamp.py`), and how it is built.

A job's id is KIND/NAME (`jobs.py`); NAME is a prepared dataset's directory, a mix's or run's variant
name ("base" for the base), a statistics name, or an SFT run's MODEL/TARGET/seedS-lrL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midmix.experiment.builders import Builder, mix_options
from midmix.experiment.layout import Layout, sft_key
from midmix.experiment.recipes import pretrain_recipe, sft_recipe
from midmix.experiment.stamp import file_facts
from midmix.options import as_core

# (layout, name, the file facts its stamp recorded, the fingerprints of the outputs it reads) → facts
Facts = Callable[[Layout, str, dict[str, Any], dict[str, str]], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    # The stamp's kind (its format version is `stamp.FORMAT[stamp]`); None: not cached, built every time.
    stamp: str | None
    output: Callable[[Layout, str], Path]
    markers: tuple[str, ...]  # files in the output directory, each written last by its build
    facts: Facts
    build: Callable[[Builder, str], object]
    # A training run cost GPU-hours: when its inputs changed it is refused unless --redo-stale, then moved
    # aside, never built over. Other outputs are cheap and deterministic: rebuilt.
    costly: bool = False

    @property
    def cached(self) -> bool:
        return self.stamp is not None

    def complete(self, lay: Layout, name: str) -> bool:
        """The output's own completion markers exist (the output itself, when it is one file)."""
        if not self.cached:
            return False
        out = self.output(lay, name)
        return all((out / m).exists() for m in self.markers) if self.markers else out.exists()


def _input_facts(lay: Layout, src: Path, known: dict[str, Any]) -> dict[str, Any]:
    g = lay.g
    return {
        "input": file_facts(src, known.get("input")),
        "tokenizer": file_facts(g.path(g.tokenizer), known.get("tokenizer")),
    }


def _prepare_facts(lay: Layout, name: str, known: dict[str, Any], upstream: dict[str, str]) -> dict[str, Any]:
    spec = lay.prepare_specs()[name]
    return {"files": _input_facts(lay, spec.src, known), "options": spec.options()}


def _stats_facts(lay: Layout, name: str, known: dict[str, Any], upstream: dict[str, str]) -> dict[str, Any]:
    src, fields = lay.stats_specs()[name]
    return {
        "files": _input_facts(lay, src, known),
        "options": {"fields": fields, **dataclasses.asdict(lay.g.proximity)},
    }


def _mix_facts(lay: Layout, name: str, known: dict[str, Any], upstream: dict[str, str]) -> dict[str, Any]:
    # The call's own options: where it writes and where its sources lie are not what it makes (the
    # sources' identities are `upstream`).
    options = as_core(mix_options(lay, lay.variant(name)))
    return {"options": {k: v for k, v in options.items() if k not in ("output", "sources")}, "upstream": upstream}


def _train_facts(lay: Layout, name: str, known: dict[str, Any], upstream: dict[str, str]) -> dict[str, Any]:
    return {"recipe": _relative(pretrain_recipe(lay, lay.variant(name)), str(lay.out)), "upstream": upstream}


def _sft_facts(lay: Layout, name: str, known: dict[str, Any], upstream: dict[str, str]) -> dict[str, Any]:
    return {"recipe": _relative(sft_recipe(lay, *sft_key(name)), str(lay.out)), "upstream": upstream}


def _no_facts(lay: Layout, name: str, known: dict[str, Any], upstream: dict[str, str]) -> dict[str, Any]:
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


def _prepared_dir(lay: Layout, name: str) -> Path:
    return lay.data / name


def _mix_dir(lay: Layout, name: str) -> Path:
    return lay.mixes / name


def _run_dir(lay: Layout, name: str) -> Path:
    return lay.runs / name


def _sft_dir(lay: Layout, name: str) -> Path:
    return lay.sft_dir(*sft_key(name))


def _results_dir(lay: Layout, name: str) -> Path:
    return lay.out / "results"


def _build_mix(b: Builder, name: str) -> None:
    b.build_mix(b.variant(name))


def _build_pretrain(b: Builder, name: str) -> None:
    v = b.variant(name)
    b.train(pretrain_recipe(b, v), "pretrain base" if v is None else f"midtrain {v.name}")


def _build_sft(b: Builder, name: str) -> None:
    m, t, seed, lr = sft_key(name)
    b.train(sft_recipe(b, m, t, seed, lr), f"sft {t} ← {m} seed {seed} lr {lr:g}")


def _build_tables(b: Builder, name: str) -> None:
    b.write_tables()


KINDS: dict[str, JobKind] = {
    "prepare": JobKind(
        stamp="prepare",
        output=_prepared_dir,
        markers=("index.json", "midmix.json"),
        facts=_prepare_facts,
        build=Builder.prepare_one,
    ),
    "stats": JobKind(stamp="stats", output=Layout.stats_path, markers=(), facts=_stats_facts, build=Builder.unigram),
    "mix": JobKind(stamp="mix", output=_mix_dir, markers=("midmix.json",), facts=_mix_facts, build=_build_mix),
    "train": JobKind(
        stamp="train",
        output=_run_dir,
        markers=("summary.json",),
        facts=_train_facts,
        build=_build_pretrain,
        costly=True,
    ),
    "sft": JobKind(
        stamp="train",
        output=_sft_dir,
        markers=("summary.json",),
        facts=_sft_facts,
        build=_build_sft,
        costly=True,
    ),
    # Cheap, and always recomputed from what they read.
    "tables": JobKind(stamp=None, output=_results_dir, markers=(), facts=_no_facts, build=_build_tables),
}

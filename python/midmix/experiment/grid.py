"""The experiment grid: which sources, mixes, start points, controls, ablation and SFT targets.

A grid file is YAML validated like a training recipe (unknown keys and wrong types are errors naming
the key). Paths are relative to `data_dir` unless absolute. The variants a grid implies and the jobs it
runs (which model is fine-tuned on which target) are derived here too, for the driver and the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from midmix.errors import ConfigError
from midmix.train.config import ARCHS, load_yaml


@dataclass
class MixSpec:
    file: str = ""  # the specialty corpus
    weight: float = 0.2  # its share of the midtraining mix (the rest is the base corpus)


@dataclass
class SftTarget:
    file: str = ""
    mask_prompt: bool = True  # the paper: GSM8K masked; Pycode, SciQ, LIMA unmasked
    train_examples: int = 512
    val_examples: int = 128  # taken from the end of the file


@dataclass
class SftSpec:
    targets: dict[str, SftTarget] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [1])
    lrs: list[float] = field(default_factory=lambda: [1e-3])  # swept; the best by validation loss is kept
    epochs: int = 4
    seq_len: int = 256
    global_batch: int = 8


@dataclass
class AblationSpec:
    mix: str = ""
    target: str = ""
    starts: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass
class ProximitySpec:
    max_docs: int = 1000  # the paper's sample size per dataset
    max_tokens_per_doc: int = 512  # the paper's truncation
    seed: int = 42


@dataclass
class PretrainSpec:
    lr: float = 3e-3
    min_lr: float = 1e-5
    warmup: float = 0.1
    schedule: str = "cosine"
    weight_decay: float = 0.1


@dataclass
class Grid:
    name: str = "experiment"
    out: str = ""  # default: experiments/NAME
    data_dir: str = "../shared/data"
    tokenizer: str = "tokenizers/pythia.json"
    arch: str = "tiny"
    device: str = "auto"
    seq_len: int = 128
    global_batch: int = 8
    micro_batch: int | None = None
    steps: int = 200  # the pretraining budget; midtraining runs branch off inside it
    seed: int = 17
    base: str = "corpora/c4_like.parquet"
    general_val: str = "corpora/c4_like_val.parquet"
    eval_samples: int = 128
    mixes: dict[str, MixSpec] = field(default_factory=dict)
    starts: list[float] = field(default_factory=lambda: [0.3])
    controls: dict[str, float] = field(default_factory=dict)  # mix → start of 100% specialty data
    ablation: AblationSpec | None = None
    sft: SftSpec = field(default_factory=SftSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    proximity: ProximitySpec = field(default_factory=ProximitySpec)

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else Path(self.data_dir) / p

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"experiments/{self.name}")


@dataclass(frozen=True)
class Variant:
    """A midtrained model: base data until `start` (fraction of the budget), then `weight` of `mix`."""

    mix: str
    weight: float
    start: float

    @property
    def name(self) -> str:
        return f"{self.mix}-w{self.weight:g}-from{self.start:g}"

    @property
    def is_control(self) -> bool:
        return self.weight == 1.0


def main_variants(g: Grid) -> list[Variant]:
    return [Variant(m, spec.weight, s) for m, spec in g.mixes.items() for s in g.starts]


def control_variants(g: Grid) -> list[Variant]:
    return [Variant(m, 1.0, s) for m, s in g.controls.items()]


def ablation_variants(g: Grid) -> list[Variant]:
    a = g.ablation
    return [] if a is None else [Variant(a.mix, w, s) for s in a.starts for w in a.weights]


def all_variants(g: Grid) -> list[Variant]:
    seen: dict[str, Variant] = {}
    for v in main_variants(g) + control_variants(g) + ablation_variants(g):
        seen.setdefault(v.name, v)
    return list(seen.values())


def branch_step(g: Grid, start: float) -> int:
    return min(max(round(start * g.steps), 1), g.steps - 1)


def table_models(g: Grid) -> list[str]:
    """The models of Table 2/3, fine-tuned on every target: the base, the mixes and the controls."""
    return list(dict.fromkeys(["base"] + [v.name for v in main_variants(g) + control_variants(g)]))


def sft_jobs(g: Grid) -> list[tuple[str, str]]:
    """(model, target) pairs to fine-tune: every table model on every target, ablation cells on theirs."""
    jobs = [(m, t) for m in table_models(g) for t in g.sft.targets]
    if g.ablation is not None:
        jobs += [(v.name, g.ablation.target) for v in ablation_variants(g)]
    return list(dict.fromkeys(jobs))


def validate(g: Grid) -> None:
    if g.arch not in ARCHS:
        raise ConfigError(f"arch: {g.arch!r} is not one of {', '.join(ARCHS)}")
    if g.steps < 2 or g.global_batch < 1:
        raise ConfigError("steps must be at least 2 and global_batch at least 1")
    for key, start in [*(("starts", s) for s in g.starts), *((f"controls.{m}", s) for m, s in g.controls.items())]:
        if not 0 < start < 1:
            raise ConfigError(f"{key}: {start} must be a fraction of the budget in (0, 1)")
    for name, m in g.mixes.items():
        if not m.file:
            raise ConfigError(f"mixes.{name}.file: required")
        if not 0 < m.weight <= 1:
            raise ConfigError(f"mixes.{name}.weight: {m.weight} must be in (0, 1]")
    for name in g.controls:
        if name not in g.mixes:
            raise ConfigError(f"controls.{name}: not a key of mixes ({', '.join(g.mixes)})")
    if not g.sft.targets:
        raise ConfigError("sft.targets: at least one SFT target is needed")
    for name, t in g.sft.targets.items():
        if not t.file:
            raise ConfigError(f"sft.targets.{name}.file: required")
    if not g.sft.seeds or not g.sft.lrs:
        raise ConfigError("sft.seeds and sft.lrs: at least one each")
    if g.ablation is not None:
        a = g.ablation
        if a.mix not in g.mixes:
            raise ConfigError(f"ablation.mix: {a.mix!r} is not a key of mixes")
        if a.target not in g.sft.targets:
            raise ConfigError(f"ablation.target: {a.target!r} is not a key of sft.targets")
        if not a.starts or not a.weights:
            raise ConfigError("ablation.starts and ablation.weights: at least one each")
        for s in a.starts:
            if not 0 < s < 1:
                raise ConfigError(f"ablation.starts: {s} must be in (0, 1)")
        for w in a.weights:
            if not 0 < w <= 1:
                raise ConfigError(f"ablation.weights: {w} must be in (0, 1]")


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Grid:
    grid, _ = load_yaml(path, overrides, Grid, validate)
    return grid

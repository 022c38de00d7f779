"""The experiment grid: which sources, mixes, start points, controls, ablation and SFT targets.

A grid file is YAML validated like a training recipe (unknown keys and wrong types are errors naming
the key). Paths are relative to `data_dir` unless absolute. The variants a grid implies and the jobs it
runs (which model is fine-tuned on which target) are derived here too, for the driver and the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from midmix.errors import ConfigError
from midmix.mixspec import Phase
from midmix.train.config import ARCHS, load_yaml

GENERAL_LOSS_FORMS = ("packed", "documents")
# The experiment's stages in the order they run (the jobs of each: `jobs.graph`).
STAGES = ("data", "stats", "mixes", "base", "midtrain", "sft", "tables")


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
    # The held-out general loss measured during SFT (forgetting): `packed`, over the packed general_val
    # samples the pretraining runs measure; `documents`, the paper's form: each general_val document an
    # SFT example with an empty prompt (document + EOS, cut to seq_len, padded per batch, every token scored).
    general_loss: str = "packed"
    # Keep each SFT run's final weights (a weights-only checkpoint) for `midmix export-model` and outside
    # evaluation. Off by default: ~280 runs × the model's size (160m: ~0.65 GB each in fp32).
    save_weights: bool = False


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
class SlurmSpec:
    """How `--launcher slurm` asks for resources (the command line's --partition, --account, --time and
    --gpus-per-job override these). Training stages get `gpus_per_job` GPUs per task; data stages none."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # per task, Slurm's format ("4:00:00")
    stage_time: dict[str, str] = field(default_factory=dict)  # per stage, e.g. {sft: "0:30:00"}
    gpus_per_job: int = 1  # 0 on a CPU-only cluster; one run per GPU (the study's models fit one)
    cpus_per_job: int = 1
    mem: str | None = None  # per task ("32G")
    runs_per_task: int = 1  # training runs one array task runs in sequence (amortizes start-up)
    max_parallel: int | None = None  # array throttle (%N)
    sbatch_args: list[str] = field(default_factory=list)  # passed through, e.g. ["--constraint=h100"]


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
    # A mix that needs more samples of a source than it has: "error" (refused, every shortfall listed
    # before anything is built), or "repeat" for at most `max_repeat` passes over each source (a fresh
    # permutation per pass), reported per mix and source in results/passes.csv and tables.md.
    on_exhaust: str = "error"
    max_repeat: int | None = None
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
    slurm: SlurmSpec = field(default_factory=SlurmSpec)

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


def mix_phases(g: Grid, v: Variant | None) -> list[Phase]:
    """A model's pretraining data: the base's own stream until the variant's branch point (so every
    variant's prefix is the base's), then its midtraining mix; `None` is the base itself."""
    total = g.steps * g.global_batch
    if v is None:
        return [Phase.samples(total, {"base": 1.0})]
    head = branch_step(g, v.start) * g.global_batch
    tail = {v.mix: 1.0} if v.is_control else {"base": 1 - v.weight, v.mix: v.weight}
    return [Phase.samples(head, {"base": 1.0}), Phase.samples(total - head, tail)]


def samples_needed(phases: list[Phase]) -> dict[str, float]:
    """Samples each source gives over the phases (to rounding: the planner realizes the weights exactly)."""
    need: dict[str, float] = {}
    for ph in phases:
        total_w = sum(w for _, w in ph.weights)
        for name, w in ph.weights:
            need[name] = need.get(name, 0.0) + ph.length * w / total_w
    return need


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
    if g.on_exhaust not in ("error", "repeat"):
        raise ConfigError(f"on_exhaust: {g.on_exhaust!r} is not one of error, repeat")
    if (g.on_exhaust == "repeat") != (g.max_repeat is not None):
        raise ConfigError(
            "on_exhaust: repeat needs max_repeat (the most passes over any source), and max_repeat "
            "goes only with repeat"
        )
    if g.max_repeat is not None and g.max_repeat < 2:
        raise ConfigError(f"max_repeat: {g.max_repeat} must be at least 2 (1 pass is on_exhaust: error)")
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
    if g.sft.general_loss not in GENERAL_LOSS_FORMS:
        raise ConfigError(f"sft.general_loss: {g.sft.general_loss!r} is not one of {', '.join(GENERAL_LOSS_FORMS)}")
    if not g.sft.seeds or not g.sft.lrs:
        raise ConfigError("sft.seeds and sft.lrs: at least one each")
    if g.slurm.runs_per_task < 1 or g.slurm.cpus_per_job < 1:
        raise ConfigError("slurm: runs_per_task and cpus_per_job must be at least 1")
    if g.slurm.gpus_per_job not in (0, 1):
        raise ConfigError(
            f"slurm.gpus_per_job: {g.slurm.gpus_per_job} must be 0 or 1 (the grid's models train on "
            "one GPU each; a node's GPUs run one run each)"
        )
    for stage in g.slurm.stage_time:
        if stage not in STAGES:
            raise ConfigError(f"slurm.stage_time.{stage}: not a stage ({', '.join(STAGES)})")
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


def max_passes(g: Grid) -> int:
    return 1 if g.max_repeat is None else g.max_repeat


def smoke(g: Grid) -> Grid:
    """The same grid at toy sizes that run on a CPU in minutes: every stage, source, mix, control and SFT
    target, but the tiny model in fp32, short sequences, a few steps, one SFT seed and learning rate, 4
    SFT examples, and of the ablation only its corners (first and last start × first and last weight).
    It checks the grid's structure and data, not its findings. Its outputs go to OUT-smoke."""
    s = replace(
        g,
        name=f"{g.name}-smoke",
        out=str(g.out_dir) + "-smoke",
        arch="tiny",
        device="cpu",
        seq_len=64,
        global_batch=4,
        micro_batch=None,
        steps=24,
        eval_samples=8,
    )
    s.sft = replace(
        g.sft,
        seeds=g.sft.seeds[:1],
        lrs=g.sft.lrs[:1],
        epochs=1,
        seq_len=128,
        global_batch=4,
        targets={k: replace(t, train_examples=4, val_examples=4) for k, t in g.sft.targets.items()},
    )
    if g.ablation is not None:
        a = g.ablation
        s.ablation = replace(
            a, starts=sorted({a.starts[0], a.starts[-1]}), weights=sorted({a.weights[0], a.weights[-1]})
        )
    s.proximity = replace(g.proximity, max_docs=50, max_tokens_per_doc=128)
    return s


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Grid:
    grid, _ = load_yaml(path, overrides, Grid, validate)
    return grid

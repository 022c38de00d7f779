"""Training recipes: the YAML schema, loading with `key=value` overrides, and validation.

A recipe is read as YAML (`midmix.strict_yaml`: a key given twice is an error), then checked against
the dataclasses below (`midmix.to_dataclass`): an unknown key or a value of the wrong type is a
`ConfigError` that names the dotted key (`optimizer.lr`, …).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midmix import strict_yaml
from midmix.errors import ConfigError
from midmix.to_dataclass import HAND_WRITTEN, to_dataclass

ARCHS = ("tiny", "pythia-14m", "pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b")
PRECISIONS = ("auto", "fp32", "amp_bf16", "amp_fp16")
WANDB_MODES = ("online", "offline", "disabled", "shared")
_DURATION = re.compile(r"^\s*\d+\s*(ba|ep|sp|tok)\s*$")


@dataclass
class ModelConfig:
    arch: str = "tiny"
    # Where the starting weights come from: None (random init from `seed`), a local Hugging Face model
    # directory (config.json + weights), a midmix/Composer checkpoint file, or a midmix run directory
    # (its latest checkpoint); weights only.
    init_from: str | None = None
    vocab_size: int | None = None  # default: the architecture's (50304 for the Pythia family)
    max_position_embeddings: int | None = None  # default: the training data's sequence length (≥ 2048)

    def positions_for(self, seq_len: int) -> int:
        """The model's max_position_embeddings for data of `seq_len` tokens."""
        return self.max_position_embeddings or max(2048, seq_len)


@dataclass
class DataSetConfig:
    path: str = ""
    # tokens: a prepared or mixed pretraining dataset (loss on every token);
    # sft: `prepare --mode sft` output (loss where labels != -100).
    kind: str = "tokens"
    # Python-style slice of the samples, in counts or percents: "0:90%", "90%:", ":512".
    select: str | None = None
    # tokens only: read through the midmix loader or through `streaming.StreamingDataset`.
    loader: str = "midmix"
    num_workers: int = 0
    # Page-locked host batches, for faster, asynchronous copies to the GPU. null: on when training on GPU.
    pin_memory: bool | None = None
    # Keep the workers between epochs (and their opened shards). null: on when num_workers > 0.
    persistent_workers: bool | None = None
    shuffle: bool = True  # sft only; a mix is always read in the order build-mix wrote it
    mask_prompt: bool = True  # sft only: false scores the prompt tokens too (the paper's pycode/sciq/lima)


@dataclass
class EvalSetConfig:
    path: str = ""
    kind: str = "tokens"
    select: str | None = None
    max_samples: int | None = 256
    mask_prompt: bool = True


@dataclass
class DataConfig:
    train: DataSetConfig = field(default_factory=DataSetConfig)
    eval: dict[str, EvalSetConfig] = field(default_factory=dict)
    global_batch_size: int = 8
    micro_batch_size: int | None = None  # per device; default: global / world size (no accumulation)
    eval_batch_size: int = 8


@dataclass
class OptimizerConfig:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    eps: float = 1e-8
    grad_clip: float | None = 1.0


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | wsd | constant
    warmup: float = 0.1  # fraction of the whole duration
    min_lr: float = 1e-6
    # wsd: the decay runs from decay_start (fraction of the duration) to the end.
    decay_start: float = 0.8
    decay_shape: str = "linear"  # linear | cosine | sqrt


@dataclass
class BranchConfig:
    # Start from another run's checkpoint at `step`: weights, optimizer, scheduler, time and data
    # position (step · global batch) all continue; the callbacks start afresh.
    run: str = ""  # the base run's directory (its checkpoints/ folder is searched)
    step: int = 0


@dataclass
class LossEvalConfig:
    eval: str = ""  # a key of data.eval
    interval: str = "100ba"


@dataclass
class MixtureConfig:
    interval: str = "10ba"


@dataclass
class AlignmentConfig:
    probe: str = ""  # a key of data.eval: the general data whose gradient is compared
    interval: str = "100ba"
    batches: int = 1
    microbatch: int = 4  # samples per forward/backward: bounds the callback's memory


@dataclass
class CallbacksConfig:
    forgetting: LossEvalConfig | None = None
    domain: LossEvalConfig | None = None
    mixture: MixtureConfig | None = None
    gradient_alignment: AlignmentConfig | None = None
    audit: bool = False  # write each step's batch digest per rank (audit-rank{R}.jsonl)


@dataclass
class WandbConfig:
    """Weights & Biases, through Composer's WandBLogger (rank 0 only). Unset keys fall to wandb's own
    defaults and environment (WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE, WANDB_API_KEY, …)."""

    project: str | None = None
    entity: str | None = None
    group: str | None = None
    name: str | None = None  # default: run_name
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    mode: str | None = None  # online | offline | disabled | shared; default: WANDB_MODE, else online
    dir: str | None = None  # where wandb writes its files; default: WANDB_DIR, else run_dir
    # The W&B run id. Default: a new id for each fresh start, kept in run_dir/wandb-run-id, so a run
    # resumed from its checkpoint logs into the same W&B run.
    id: str | None = None


@dataclass
class MlflowConfig:
    """MLflow, through Composer's MLFlowLogger (rank 0 only)."""

    # http(s)://server, databricks, file:DIR, or a database URI (needs the full `mlflow` package).
    # Default: MLFLOW_TRACKING_URI.
    tracking_uri: str | None = None
    experiment_name: str | None = None  # default: MLFLOW_EXPERIMENT_NAME, else midmix
    run_name: str | None = None  # default: run_name
    tags: dict[str, str] = field(default_factory=dict)
    log_system_metrics: bool = True  # CPU/GPU/memory usage every 30 s (mlflow's system metrics)


@dataclass
class LoggersConfig:
    jsonl: bool = True
    tensorboard: bool = False
    wandb: WandbConfig | None = None
    mlflow: MlflowConfig | None = None
    console_interval: str = "10ba"
    speed_window: int = 20  # batches in the rolling average of throughput/* (SpeedMonitor)
    # null: a bar only when stdout is a terminal (batch jobs' logs stay readable)
    progress_bar: bool | None = None
    console: bool = True  # print metrics every console_interval when there is no progress bar


@dataclass
class CheckpointConfig:
    enabled: bool = True  # false: no checkpoints at all (no resume), e.g. for short SFT sweeps
    interval: str | None = "1000ba"
    steps: list[int] = field(default_factory=list)  # extra steps to save at (branch points)
    keep: int = -1
    autoresume: bool = True
    weights_only: bool = False


@dataclass
class FsdpConfig:
    reshard_after_forward: bool = True
    activation_checkpointing: bool = False
    state_dict_type: str = "full"  # full checkpoints load on any world size


@dataclass
class TrainConfig:
    run_name: str = "run"
    run_dir: str = "runs/run"
    seed: int = 17
    duration: str = "100ba"
    precision: str = "auto"
    device: str = "auto"  # auto | cpu | gpu
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    branch: BranchConfig | None = None
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    loggers: LoggersConfig = field(default_factory=LoggersConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    fsdp: FsdpConfig | None = None
    compile: bool = False  # torch.compile the model (Composer's compile_config {}); compiles at the first step
    # Deterministic kernels (Composer's deterministic_mode: torch.use_deterministic_algorithms, cuDNN
    # deterministic with autotuning off, a fixed cuBLAS workspace). It costs speed, mostly on GPU, where
    # the fastest kernels (atomic adds, autotuned convolutions) are the nondeterministic ones; an op with
    # no deterministic kernel stops the run with an error.
    deterministic: bool = False


def apply_override(data: dict[str, Any], item: str) -> None:
    """`optimizer.lr=1e-3` sets data['optimizer']['lr'] (the value is parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"bad override {item!r}: use KEY=VALUE, e.g. optimizer.lr=1e-3")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"bad override {item!r}: {part} is not a mapping")
        node = child
    node[parts[-1]] = strict_yaml.load(raw, f"override {item!r}")


def interval_batches(interval: str, key: str) -> int:
    """Callback intervals are counted in batches: `100ba` → 100."""
    text = interval.strip()
    if not text.endswith("ba") or not text[:-2].strip().isdigit() or int(text[:-2]) < 1:
        raise ConfigError(f"{key}: {interval!r}: callback intervals are given in batches, e.g. 100ba")
    return int(text[:-2])


def check_duration(value: str, key: str) -> None:
    if not _DURATION.match(value):
        raise ConfigError(f"{key}: {value!r} is not a duration such as 1000ba, 4ep, 65536sp or 2000000tok")


def validate(cfg: TrainConfig) -> None:
    """Checks that need more than one field or a closed set of values."""
    check_duration(cfg.duration, "duration")
    if cfg.model.arch not in ARCHS:
        raise ConfigError(f"model.arch: {cfg.model.arch!r} is not one of {', '.join(ARCHS)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision: {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.device not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"device: {cfg.device!r} is not one of auto, cpu, gpu")
    if not cfg.data.train.path:
        raise ConfigError("data.train.path: required")
    sets: list[tuple[str, DataSetConfig | EvalSetConfig]] = [("data.train", cfg.data.train)]
    sets += [(f"data.eval.{k}", v) for k, v in cfg.data.eval.items()]
    for key, ds in sets:
        if ds.kind not in ("tokens", "sft"):
            raise ConfigError(f"{key}.kind: {ds.kind!r} is not one of tokens, sft")
        if not ds.path:
            raise ConfigError(f"{key}.path: required")
        if ds.select is not None:
            parse_select(ds.select, 100, f"{key}.select")
    if cfg.data.train.loader not in ("midmix", "streaming"):
        raise ConfigError(f"data.train.loader: {cfg.data.train.loader!r} is not one of midmix, streaming")
    if cfg.data.global_batch_size < 1:
        raise ConfigError("data.global_batch_size: must be at least 1")
    sch = cfg.schedule
    if sch.name not in ("cosine", "wsd", "constant"):
        raise ConfigError(f"schedule.name: {sch.name!r} is not one of cosine, wsd, constant")
    if not 0 <= sch.warmup < 1:
        raise ConfigError(f"schedule.warmup: {sch.warmup} must be a fraction in [0, 1)")
    if sch.name == "wsd" and not sch.warmup <= sch.decay_start <= 1:
        raise ConfigError(f"schedule.decay_start: {sch.decay_start} must lie in [warmup, 1]")
    if sch.decay_shape not in ("linear", "cosine", "sqrt"):
        raise ConfigError(f"schedule.decay_shape: {sch.decay_shape!r} is not one of linear, cosine, sqrt")
    if not 0 <= sch.min_lr <= cfg.optimizer.lr:
        raise ConfigError(f"schedule.min_lr: {sch.min_lr} must lie in [0, optimizer.lr]")
    if len(cfg.optimizer.betas) != 2:
        raise ConfigError("optimizer.betas: needs two values, e.g. [0.9, 0.95]")
    cbs = cfg.callbacks
    for name, cb in [("forgetting", cbs.forgetting), ("domain", cbs.domain)]:
        if cb is not None:
            if cb.eval not in cfg.data.eval:
                raise ConfigError(
                    f"callbacks.{name}.eval: {cb.eval!r} is not a key of data.eval "
                    f"({', '.join(cfg.data.eval) or 'none defined'})"
                )
            interval_batches(cb.interval, f"callbacks.{name}.interval")
    if cbs.mixture is not None:
        interval_batches(cbs.mixture.interval, "callbacks.mixture.interval")
    if cbs.gradient_alignment is not None:
        if cbs.gradient_alignment.probe not in cfg.data.eval:
            raise ConfigError(
                f"callbacks.gradient_alignment.probe: {cbs.gradient_alignment.probe!r} is not a key of data.eval"
            )
        interval_batches(cbs.gradient_alignment.interval, "callbacks.gradient_alignment.interval")
        for key in ("batches", "microbatch"):  # (the loader has checked they are ints)
            if getattr(cbs.gradient_alignment, key) < 1:
                raise ConfigError(f"callbacks.gradient_alignment.{key}: must be at least 1")
    check_duration(cfg.loggers.console_interval, "loggers.console_interval")
    if cfg.loggers.speed_window < 1:
        raise ConfigError("loggers.speed_window: must be at least 1")
    if cfg.checkpoint.interval is not None:
        check_duration(cfg.checkpoint.interval, "checkpoint.interval")
    if cfg.branch is not None:
        if not cfg.branch.run:
            raise ConfigError("branch.run: required (the base run's directory)")
        if cfg.branch.step < 1:
            raise ConfigError("branch.step: must be at least 1")
        if cfg.model.init_from is not None:
            raise ConfigError("model.init_from and branch exclude each other: a branch starts from its base run")
    if cfg.fsdp is not None and cfg.fsdp.state_dict_type not in ("full", "sharded"):
        raise ConfigError(f"fsdp.state_dict_type: {cfg.fsdp.state_dict_type!r} is not one of full, sharded")
    train = cfg.data.train
    if train.num_workers < 0:
        raise ConfigError("data.train.num_workers: must be at least 0")
    if train.persistent_workers and train.num_workers == 0:
        raise ConfigError(
            "data.train.persistent_workers: needs data.train.num_workers > 0 (there are no workers to keep)"
        )
    if cfg.loggers.wandb is not None and cfg.loggers.wandb.mode not in (None, *WANDB_MODES):
        raise ConfigError(f"loggers.wandb.mode: {cfg.loggers.wandb.mode!r} is not one of {', '.join(WANDB_MODES)}")
    check_packages(cfg)


# What each optional logger needs installed: (recipe key, module, how to install it).
def _needed_packages(cfg: TrainConfig) -> list[tuple[str, str, str]]:
    track = "pip install 'midmix[track]'"
    needed = []
    if cfg.loggers.tensorboard:
        needed.append(("loggers.tensorboard", "tensorboard", "pip install tensorboard"))
    if cfg.loggers.wandb is not None:
        needed.append(("loggers.wandb", "wandb", f"{track}, or pip install 'wandb<0.29'"))
    if cfg.loggers.mlflow is not None:
        needed.append(("loggers.mlflow", "mlflow", f"{track}, or pip install mlflow-skinny"))
    return needed


_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def check_packages(cfg: TrainConfig) -> None:
    for key, module, how in _needed_packages(cfg):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{key}: needs the {module} package, which is not installed ({how})")
    if cfg.loggers.mlflow is not None:
        uri = cfg.loggers.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:
            import mlflow

            uri = f"{mlflow.get_tracking_uri()} (mlflow's default)"
        # A database store is SQLAlchemy's: in the full `mlflow` package, not in mlflow-skinny.
        if uri.split(":", 1)[0].split("+", 1)[0] in _DATABASES and importlib.util.find_spec("sqlalchemy") is None:
            raise ConfigError(
                f"loggers.mlflow.tracking_uri: {uri} is a database, which needs the full mlflow "
                "package (pip install mlflow); mlflow-skinny logs to a tracking server (http://…), "
                "databricks or file:DIR"
            )


def parse_select(text: str, n: int, key: str = "select") -> range:
    """`"0:90%"`, `"90%:"`, `":512"` → a range of sample indices out of n."""
    start, sep, stop = text.partition(":")
    if not sep:
        raise ConfigError(f"{key}: {text!r} is not START:STOP, e.g. 0:90% or 90%:")

    def bound(part: str, default: int) -> int:
        part = part.strip()
        if not part:
            return default
        try:
            if part.endswith("%"):
                return round(n * float(part[:-1]) / 100)
            value = int(part)
        except ValueError as e:
            raise ConfigError(f"{key}: {part!r} is neither a count nor a percentage") from e
        return value if value >= 0 else max(n + value, 0)

    lo, hi = bound(start, 0), bound(stop, n)
    return range(min(lo, n), min(hi, n))


def load_yaml(
    path: str | Path, overrides: list[str] | tuple[str, ...], cls: type, check: Callable[[Any], None]
) -> tuple[Any, dict[str, Any]]:
    """A YAML mapping with `key=value` overrides applied, built into dataclass `cls` and checked;
    errors name the file. Returns the object and the raw mapping it came from."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from e
    data = strict_yaml.load(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    keys = [item.partition("=")[0] for item in overrides]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"override {twice[0]} given twice: give each key once")
    for item in overrides:
        apply_override(data, item)
    try:
        obj = to_dataclass(cls, data, HAND_WRITTEN, top="recipe")
        check(obj)
    except ConfigError as e:
        # The mistake may be in the file or on the command line: name both.
        where = f"{path} with {' '.join(overrides)}" if overrides else str(path)
        raise ConfigError(f"{where}: {e}") from e
    return obj, data


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[TrainConfig, dict[str, Any]]:
    """The validated recipe, and the raw mapping it came from (with overrides applied)."""
    return load_yaml(path, overrides, TrainConfig, validate)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    cfg = to_dataclass(TrainConfig, data, HAND_WRITTEN, top="recipe")
    validate(cfg)
    return cfg

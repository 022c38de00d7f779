"""One training run from a recipe: build the model, loaders, callbacks and Composer Trainer, then fit.

`composer [-n N] -m midmix.train RECIPE [key=value ...]` runs it on N processes; `midmix train RECIPE`
in this one. The run directory gets `config.yaml`, `metrics.jsonl`, `checkpoints/` and, when the run
completes, `summary.json`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from composer import Trainer
from composer.algorithms import GradientClipping
from composer.callbacks import LRMonitor, MemoryMonitor, SpeedMonitor
from composer.core import DataSpec, Event, State
from composer.devices import DeviceCPU, DeviceGPU
from composer.loggers import TensorboardLogger
from composer.utils import FSDP2Config, create_interval_scheduler, dist, reproducibility

from midmix.errors import ConfigError
from midmix.loaders import IGNORE, MixDataset
from midmix.run_report import read_metrics
from midmix.train import config as cfgmod
from midmix.train.callbacks import DataAudit, DomainEval, ForgettingEval, GradientAlignment, MixtureMonitor
from midmix.train.checkpoints import LATEST, branch_checkpoint, check_resume, recover, step_of
from midmix.train.config import TrainConfig, interval_batches
from midmix.train.loggers import JSONLLogger
from midmix.train.models import build_model
from midmix.train.recipe_loaders import EvalSet, check_kind, dataset_info, train_loader
from midmix.train.schedules import DurationSchedule, StepTracker
from midmix.train.tracking import RecipeParams, tracking_loggers


def _tokens_in(batch: dict[str, torch.Tensor]) -> int:
    """Tokens trained on: every token of a pretraining batch, the non-padding ones of an SFT batch."""
    if "labels" in batch:
        return int((batch["labels"] != IGNORE).sum())
    return int(batch["input_ids"].numel())


def _drop_callback_state(state_dict: dict[str, Any]) -> None:
    # A branch is a new run: its callbacks measure from the branch point, not from the base's start.
    state_dict.get("state", {}).pop("callbacks", None)


def _save_interval(cfg: TrainConfig) -> Callable[[State, Event], bool]:
    periodic = create_interval_scheduler(cfg.checkpoint.interval) if cfg.checkpoint.interval else None
    extra = set(cfg.checkpoint.steps)

    def due(state: State, event: Event) -> bool:
        if periodic is not None and periodic(state, event):
            return True
        if event == Event.FIT_END or (periodic is None and state.timestamp >= state.max_duration):
            return True
        return event == Event.BATCH_CHECKPOINT and int(state.timestamp.batch) in extra

    return due


def build_trainer(cfg: TrainConfig, raw: dict[str, Any]) -> Trainer:
    use_gpu = cfg.device == "gpu" or (cfg.device == "auto" and torch.cuda.is_available())
    run_dir = Path(cfg.run_dir)
    checkpoints = run_dir / "checkpoints"
    if cfg.checkpoint.enabled and cfg.checkpoint.autoresume:
        for line in recover(checkpoints):  # a run stopped while it saved resumes from its last complete one
            print(f"midmix train: {line}", file=sys.stderr)
    resuming = cfg.checkpoint.enabled and cfg.checkpoint.autoresume and (checkpoints / LATEST).exists()
    if resuming:
        check_resume(cfg, checkpoints / LATEST)
        if int(os.environ.get("RANK", "0")) == 0:
            saved = (checkpoints / LATEST).resolve()
            print(
                f"midmix train: {cfg.run_name} resumes from {saved.name} (step {step_of(saved)}) in {checkpoints}",
                file=sys.stderr,
            )
    branch_from = branch_checkpoint(cfg) if cfg.branch is not None and not resuming else None
    if cfg.deterministic:
        # Before any CUDA work (the cuBLAS workspace setting is read when cuBLAS starts); the Trainer
        # applies it again.
        reproducibility.configure_deterministic_mode()
    device = DeviceGPU() if use_gpu else DeviceCPU()
    # The process group must exist before any dataset (StreamingDataset would make its own).
    dist.initialize_dist(device, timeout=600)
    if dist.get_global_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    dist.barrier()

    info = dataset_info(cfg.data.train.path, "data.train")
    check_kind(info, cfg.data.train.kind, "data.train")
    evalsets = {name: EvalSet(name, e, cfg.data.eval_batch_size) for name, e in cfg.data.eval.items()}
    reproducibility.seed_all(cfg.seed)
    model = build_model(
        cfg.model.arch,
        cfg.model.init_from,
        cfg.model.vocab_size,
        cfg.model.positions_for(info.seq_len),
        info.vocab_size,
    )

    loader = train_loader(cfg.data.train, info, cfg.data.global_batch_size, cfg.seed, on_gpu=use_gpu)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)  # no weight decay on biases and norms
    opt = cfg.optimizer
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opt.lr,
        betas=(opt.betas[0], opt.betas[1]),
        eps=opt.eps,
    )

    cbs = cfg.callbacks
    # Throughput (and MFU where Composer knows the device's peak FLOPs) from `CausalLM.flops_per_batch`.
    schedule = DurationSchedule(cfg.schedule, opt.lr)
    callbacks: list[Any] = [LRMonitor(), SpeedMonitor(window_size=cfg.loggers.speed_window), StepTracker(schedule)]
    if use_gpu:
        callbacks.append(MemoryMonitor())
    every = interval_batches  # validated already; here only converted
    if cbs.forgetting is not None:
        callbacks.append(ForgettingEval(evalsets[cbs.forgetting.eval], every(cbs.forgetting.interval, "forgetting")))
    if cbs.domain is not None:
        callbacks.append(DomainEval(evalsets[cbs.domain.eval], every(cbs.domain.interval, "domain")))
    if cbs.mixture is not None:
        if info.kind != "mix":
            raise ConfigError(f"callbacks.mixture: {info.path} is not a build-mix output (no plan to compare with)")
        callbacks.append(MixtureMonitor(info.manifest, every(cbs.mixture.interval, "mixture")))
    if cbs.gradient_alignment is not None:
        ga = cbs.gradient_alignment
        callbacks.append(
            GradientAlignment(evalsets[ga.probe], every(ga.interval, "gradient_alignment"), ga.batches, ga.microbatch)
        )
    if cbs.audit:
        callbacks.append(DataAudit(run_dir))

    loggers: list[Any] = []
    if cfg.loggers.jsonl:
        loggers.append(JSONLLogger(run_dir / "metrics.jsonl"))
    if cfg.loggers.tensorboard:  # (the packages of every logger were checked with the recipe)
        loggers.append(TensorboardLogger(log_dir=str(run_dir / "tensorboard"), flush_interval=50))
    trackers = tracking_loggers(cfg, run_dir, resuming)
    if trackers:
        loggers.extend(trackers)
        callbacks.append(RecipeParams(cfg, resuming))

    precision = cfg.precision
    if precision == "auto":
        precision = "amp_bf16" if use_gpu else "fp32"

    load: dict[str, Any] = {}
    if branch_from is not None:
        # Weights, optimizer, scheduler, timestamp and the data position (step · global batch, restored
        # into the mix's loader from the base's dataset state) all continue from the base run. A sharded
        # checkpoint (a directory) loads through DCP, on any world size, like a full one.
        load = {"load_path": str(branch_from), "load_ignore_keys": _drop_callback_state}
        if isinstance(loader.dataset, MixDataset):
            loader.dataset.branching = True  # the base's loader state is of its own mix, by design

    parallelism = None
    if cfg.fsdp is not None:
        parallelism = {
            "fsdp": FSDP2Config(
                reshard_after_forward=cfg.fsdp.reshard_after_forward,
                activation_checkpointing=cfg.fsdp.activation_checkpointing,
                state_dict_type=cfg.fsdp.state_dict_type,
            )
        }

    per_device = cfg.data.global_batch_size // dist.get_world_size()
    progress_bar = sys.stdout.isatty() if cfg.loggers.progress_bar is None else cfg.loggers.progress_bar
    return Trainer(
        model=model,
        train_dataloader=DataSpec(loader, get_num_tokens_in_batch=_tokens_in),
        max_duration=cfg.duration,
        optimizers=optimizer,
        schedulers=schedule,
        step_schedulers_every_batch=True,
        callbacks=callbacks,
        loggers=loggers,
        run_name=cfg.run_name,
        progress_bar=progress_bar,
        log_to_console=cfg.loggers.console and not progress_bar,
        console_log_interval=cfg.loggers.console_interval,
        save_folder=str(checkpoints) if cfg.checkpoint.enabled else None,
        save_interval=_save_interval(cfg),
        save_num_checkpoints_to_keep=cfg.checkpoint.keep,
        save_weights_only=cfg.checkpoint.weights_only,
        save_overwrite=False,
        autoresume=cfg.checkpoint.autoresume and cfg.checkpoint.enabled,
        device=device,
        precision=precision,
        device_train_microbatch_size=cfg.data.micro_batch_size or per_device,
        parallelism_config=parallelism,
        seed=cfg.seed,
        algorithms=[GradientClipping("norm", opt.grad_clip)] if opt.grad_clip else [],
        # torch.compile, applied by Composer after its DDP / FSDP2 wrapping (its own order).
        compile_config={} if cfg.compile else None,
        deterministic_mode=cfg.deterministic,
        **load,
    )


def summarize(cfg: TrainConfig, trainer: Trainer, elapsed: float) -> dict[str, Any]:
    """summary.json: the last value of every metric, and how much was trained how fast."""
    ts = trainer.state.timestamp
    summary: dict[str, Any] = {
        "run_name": cfg.run_name,
        "completed": True,
        "steps": int(ts.batch),
        "samples": int(ts.sample),
        "tokens": int(ts.token),
        "elapsed_s": round(elapsed, 3),
        "world_size": dist.get_world_size(),
    }
    metrics_path = Path(cfg.run_dir) / "metrics.jsonl"
    if metrics_path.exists():
        series = read_metrics(metrics_path)
        summary["final"] = {k: v[-1][2] for k, v in series.items()}
        summary["throughput"] = throughput_summary(series)
    return summary


# summary.json's `throughput`: the mean of each rolling SpeedMonitor value over the run, and peak memory.
_MEANS = {
    "tokens_per_sec": "throughput/tokens_per_sec",
    "samples_per_sec": "throughput/samples_per_sec",
    "device_tokens_per_sec": "throughput/device/tokens_per_sec",
    "device_flops_per_sec": "throughput/device/flops_per_sec",
    "mfu": "throughput/device/mfu",
}


def throughput_summary(series: dict[str, list[tuple[int, int, float]]]) -> dict[str, float]:
    out = {}
    for name, key in _MEANS.items():
        values = [v for *_, v in series.get(key, []) if isinstance(v, (int, float))]
        if values:
            out[name] = sum(values) / len(values)
    peaks = [v for k, s in series.items() if k.startswith("memory/peak_allocated_mem") for *_, v in s]
    if peaks:
        out["peak_allocated_mem_gb"] = max(peaks)
    return out


def completed(cfg: TrainConfig, raw: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of this very recipe's finished run in run_dir, if there is one (re-runs are no-ops)."""
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "summary.json").exists():
        return None
    previous = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else None
    if previous != raw:
        raise ConfigError(
            f"{run_dir} holds a completed run of a different recipe; choose another run_dir or delete that one"
        )
    return json.loads((run_dir / "summary.json").read_text())


def train(cfg: TrainConfig, raw: dict[str, Any]) -> dict[str, Any]:
    done = completed(cfg, raw)
    if done is not None:
        if dist.get_global_rank() == 0:
            print(f"midmix train: {cfg.run_dir} already holds this run, completed; nothing to do")
        return done
    t0 = time.perf_counter()
    with torch_flags_restored():
        trainer = build_trainer(cfg, raw)
        try:
            trainer.fit()
            summary = summarize(cfg, trainer, time.perf_counter() - t0)
            if dist.get_global_rank() == 0:
                out = Path(cfg.run_dir) / "summary.json"
                tmp = out.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(summary, indent=2) + "\n")
                tmp.replace(out)
        finally:
            trainer.close()
            # Composer's Engine registers an atexit hook holding the whole training state (model,
            # optimizer, loaders): drop it, or every run trained in this process stays in memory.
            atexit.unregister(trainer.engine._close)
    return summary


@contextlib.contextmanager
def torch_flags_restored() -> Iterator[None]:
    """torch's process-wide kernel choices as they were: `deterministic: true` (Composer's
    deterministic_mode) sets them for the process, and the next run trained in it may not want them."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def close_dist() -> None:
    """End the process group that build_trainer started (one per process, shared by its runs)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: composer [-n N] -m midmix.train RECIPE.yaml [key=value ...]\n"
            "       midmix train RECIPE.yaml [key=value ...]",
            file=sys.stderr,
        )
        return 2
    try:
        cfg, raw = cfgmod.load(args[0], args[1:])
        summary = train(cfg, raw)
    except ConfigError as e:
        print(f"midmix train: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_dist()
    if int(os.environ.get("RANK", "0")) == 0:
        final = summary.get("final", {})
        shown = {k: round(v, 4) for k, v in final.items() if k.startswith(("loss/train", "forgetting/", "domain/"))}
        print(
            f"midmix train: {cfg.run_name} done: {summary['steps']} steps, {summary['tokens']:,} tokens in "
            f"{summary['elapsed_s']:.1f} s; {json.dumps(shown)}"
        )
    return 0

"""Experiment trackers: Weights & Biases and MLflow through Composer's own logger destinations, and the
resolved recipe logged to them as the run's parameters.

Both log on rank 0 only and receive every metric the JSONL log gets (loss/train/*, throughput/*, lr-*,
the callbacks' metrics). A run resumed from its checkpoint logs into the same tracker run: W&B by the id
kept in `run_dir/wandb-run-id`, MLflow by Composer's `resume` (the latest run of the experiment tagged
with this run_name). Steps replayed since that checkpoint are logged again; W&B drops the ones below
its current step.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import string
from pathlib import Path
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from midmix.train.config import MlflowConfig, TrainConfig, WandbConfig

WANDB_ID_FILE = "wandb-run-id"


def tracking_loggers(cfg: TrainConfig, run_dir: Path, resuming: bool) -> list[LoggerDestination]:
    """The recipe's tracker destinations (the packages were checked by `config.validate`)."""
    out: list[LoggerDestination] = []
    if cfg.loggers.wandb is not None:
        out.append(wandb_logger(cfg.loggers.wandb, run_dir, resuming))
    if cfg.loggers.mlflow is not None:
        out.append(mlflow_logger(cfg.loggers.mlflow, resuming))
    return out


def wandb_run_id(run_dir: Path, resuming: bool) -> str:
    """The W&B id of this run: the one kept in run_dir when resuming, else a new one (kept there)."""
    path = run_dir / WANDB_ID_FILE
    if resuming and path.exists():
        return path.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # as wandb's own
    path.write_text(run_id + "\n")
    return run_id


def wandb_logger(w: WandbConfig, run_dir: Path, resuming: bool) -> LoggerDestination:
    from composer.loggers import WandBLogger

    class MetricsOnlyWandB(WandBLogger):
        """Composer's WandBLogger, but no checkpoint store. Composer's autoresume asks every logger that
        can hold files for `{run_name}/checkpoints/latest-rank0.pt` when run_dir has no checkpoint, which
        for W&B means an API call on every fresh start (an error offline or without credentials) and
        could resume a new run from another run's artifact of the same run_name. midmix keeps
        checkpoints in run_dir and uploads none (log_artifacts stays off)."""

        def can_upload_files(self) -> bool:
            return False

        def download_file(
            self, remote_file_name: str, destination: str, overwrite: bool = False, progress_bar: bool = True
        ) -> None:
            raise NotImplementedError("midmix keeps checkpoints in run_dir, not in W&B")

    init: dict[str, Any] = {}
    for key in ("notes", "mode"):
        if getattr(w, key) is not None:
            init[key] = getattr(w, key)
    if w.dir is not None or "WANDB_DIR" not in os.environ:
        init["dir"] = w.dir or str(run_dir)
    if dist.get_global_rank() == 0:  # only rank 0 starts a W&B run
        if "dir" in init:
            Path(init["dir"]).mkdir(parents=True, exist_ok=True)  # else wandb falls back to a temp dir
        init["id"] = w.id or wandb_run_id(run_dir, resuming)
        init["resume"] = "allow"
    return MetricsOnlyWandB(
        project=w.project, entity=w.entity, group=w.group, name=w.name, tags=w.tags or None, init_kwargs=init
    )


def mlflow_logger(m: MlflowConfig, resuming: bool) -> LoggerDestination:
    from composer.loggers import MLFlowLogger

    uri = m.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is not None and uri.startswith("file:"):
        # mlflow ≥ 3.7 refuses its file store unless told otherwise; the recipe asked for one by name.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    experiment = m.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "midmix"
    return MLFlowLogger(
        experiment_name=experiment,
        run_name=m.run_name,
        tags=dict(m.tags),
        tracking_uri=uri,
        log_system_metrics=m.log_system_metrics,
        resume=resuming,
    )


def flat_params(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A recipe as {"optimizer.lr": 0.0003, ...}; lists as their text, unset values as None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
        return out if out or not prefix else {prefix: "{}"}
    return {prefix: str(obj) if isinstance(obj, list) else obj}


class RecipeParams(Callback):
    """Logs the resolved recipe (defaults included) as hyperparameters, once, when a run starts fresh: a
    resumed run's tracker run has them already (and MLflow refuses to change a parameter)."""

    def __init__(self, cfg: TrainConfig, resuming: bool) -> None:
        self.params = flat_params(cfg)
        self.resuming = resuming

    def fit_start(self, state: State, logger: Logger) -> None:
        if not self.resuming:
            logger.log_hyperparameters(self.params)

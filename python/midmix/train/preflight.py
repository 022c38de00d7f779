"""What a recipe can be checked for before torch and Composer are imported and before any process group
starts: its keys and values (`config.load`) and the datasets it names. A mistake is one line in about a
second, not a traceback from every rank and a run directory left behind."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from midmix.errors import MidmixError
from midmix.registry import Dataset
from midmix.train import config as cfgmod
from midmix.train.config import TrainConfig


def load_checked(recipe: str, overrides: list[str] | tuple[str, ...]) -> tuple[TrainConfig, dict[str, Any]]:
    """The validated recipe; every dataset it names opened (the one validated open, which reads no shard)."""
    cfg, raw = cfgmod.load(recipe, overrides)

    def opened(key: str, path: str) -> Dataset:
        try:
            return Dataset.open(path)
        except MidmixError as e:
            raise type(e)(f"{recipe}: {key}.path: {e}") from None

    train = opened("data.train", cfg.data.train.path)
    for name, e in cfg.data.eval.items():
        opened(f"data.eval.{name}", e.path)
    mix_batch, train_batch = getattr(train.manifest, "global_batch", None), cfg.data.global_batch_size
    if mix_batch and mix_batch % train_batch:
        print(
            f"midmix train: warning: {cfg.data.train.path} was built with --global-batch {mix_batch}, so its "
            f"phases change on step boundaries only for a global batch that divides it; data.global_batch_size "
            f"is {train_batch}",
            file=sys.stderr,
        )
    return cfg, raw


def resolved(cfg: TrainConfig) -> dict[str, Any]:
    """The recipe with every default filled in, as `--print-config` shows it."""
    return dataclasses.asdict(cfg)

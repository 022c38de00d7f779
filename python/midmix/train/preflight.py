"""What a recipe can be checked for before torch and Composer are imported and before any process group
starts: its keys and values (`config.load`) and the datasets it names. A mistake is one line in about a
second, not a traceback from every rank and a run directory left behind."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from midmix.dataset import Dataset
from midmix.errors import MidmixError
from midmix.train import config as cfgmod
from midmix.train.config import TrainConfig


def load_checked(recipe: str, overrides: list[str] | tuple[str, ...]) -> tuple[TrainConfig, dict[str, Any]]:
    """The validated recipe; every dataset it names opened (the one validated open, which reads no shard)."""
    cfg, raw = cfgmod.load(recipe, overrides)
    named = [("data.train", cfg.data.train.path)] + [(f"data.eval.{k}", e.path) for k, e in cfg.data.eval.items()]
    for key, path in named:
        try:
            opened = Dataset.open(path)
        except MidmixError as e:
            raise type(e)(f"{recipe}: {key}.path: {e}") from None
        mix_batch = getattr(opened.manifest, "global_batch", None)
        train_batch = cfg.data.global_batch_size
        if key == "data.train" and mix_batch and mix_batch % train_batch:
            print(f"midmix train: warning: {path} was built with --global-batch {mix_batch}, so its phases change "
                  f"on step boundaries only for a global batch that divides it; data.global_batch_size is "
                  f"{train_batch}", file=sys.stderr)
    return cfg, raw


def resolved(cfg: TrainConfig) -> dict[str, Any]:
    """The recipe with every default filled in, as `--print-config` shows it."""
    return dataclasses.asdict(cfg)

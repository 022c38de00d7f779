"""Learning-rate schedules as functions of the fraction of the run's duration already trained.

Both depend only on Composer's timestamp and `max_duration`, so a branch that restores the timestamp
of its base run and keeps the same duration continues the base's schedule exactly.
"""

from __future__ import annotations

import math

from composer.core import State, TimeUnit
from composer.optim import ComposerScheduler

from midmix.train.config import ScheduleConfig


def lr_multiplier(cfg: ScheduleConfig, frac: float, floor: float) -> float:
    """The learning rate over its maximum at `frac` ∈ [0, 1] of the run; `floor` = min_lr / max_lr."""
    if frac < cfg.warmup:
        return frac / cfg.warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "cosine":
        x = (frac - cfg.warmup) / (1 - cfg.warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(x, 1.0)))
    # wsd: warmup, a stable plateau, then a decay to the floor over [decay_start, 1].
    if frac < cfg.decay_start:
        return 1.0
    x = min((frac - cfg.decay_start) / max(1 - cfg.decay_start, 1e-12), 1.0)
    if cfg.decay_shape == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * x))
    if cfg.decay_shape == "sqrt":
        return 1 - (1 - floor) * math.sqrt(x)
    return 1 - (1 - floor) * x


class DurationSchedule(ComposerScheduler):
    def __init__(self, cfg: ScheduleConfig, max_lr: float) -> None:
        self.cfg, self.floor = cfg, cfg.min_lr / max_lr

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        return lr_multiplier(self.cfg, elapsed_fraction(state), self.floor)


def elapsed_fraction(state: State) -> float:
    """How much of `max_duration` is done, per batch even when the duration is given in epochs (where
    Composer's own `get_elapsed_duration` moves only at epoch ends)."""
    duration = state.max_duration
    if duration is None:
        return 0.0
    per_epoch = state.dataloader_len
    if duration.unit == TimeUnit.EPOCH and per_epoch is not None and int(per_epoch.value) > 0:
        total = int(duration.value) * int(per_epoch.value)
        return min(int(state.timestamp.batch) / max(total, 1), 1.0)
    elapsed = state.get_elapsed_duration()
    return 0.0 if elapsed is None else float(elapsed.value)

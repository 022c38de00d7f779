"""Learning-rate schedules as functions of the fraction of the run's duration already trained.

Both depend only on Composer's timestamp and `max_duration`, so a branch that restores the timestamp
of its base run and keeps the same duration continues the base's schedule exactly.
"""

from __future__ import annotations

import math

from composer.core import Callback, State, TimeUnit
from composer.loggers import Logger
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
    """The learning rate of optimizer step t (of T) is the schedule at (t + 1) / T: the first warmup step
    is above 0 and the last step runs at the floor.

    Composer asks for it once when the trainer is built, for the step the timestamp names, and then after
    each optimizer step but before it advances the timestamp (Composer 0.32.1, `Trainer._train_loop`:
    `scheduler.step()` precedes `timestamp.to_next_batch`), when the next step is the timestamp's batch
    + 1. `StepTracker` tells the two apart; without it steps 0 and 1 would both run at the warmup's 0."""

    def __init__(self, cfg: ScheduleConfig, max_lr: float) -> None:
        self.cfg, self.floor = cfg, cfg.min_lr / max_lr
        self.in_step = False  # set by StepTracker between a step's optimizer update and its BATCH_END

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        next_step = int(state.timestamp.batch) + (1 if self.in_step else 0)
        return lr_multiplier(self.cfg, fraction_after(state, next_step + 1), self.floor)


class StepTracker(Callback):
    """Marks, for DurationSchedule, the span in which Composer steps schedulers for the next batch."""

    def __init__(self, schedule: DurationSchedule) -> None:
        self.schedule = schedule

    def after_train_batch(self, state: State, logger: Logger) -> None:
        self.schedule.in_step = True

    def batch_end(self, state: State, logger: Logger) -> None:
        self.schedule.in_step = False


def fraction_after(state: State, batches: int) -> float:
    """The fraction of `max_duration` done after `batches` batches, per batch also when the duration is
    in epochs (where Composer's own `get_elapsed_duration` moves only at epoch ends). Durations in
    samples or tokens count batches at the run's average size so far."""
    duration = state.max_duration
    if duration is None:
        return 0.0
    total = None
    if duration.unit == TimeUnit.BATCH:
        total = int(duration.value)
    per_epoch = state.dataloader_len
    if duration.unit == TimeUnit.EPOCH and per_epoch is not None and int(per_epoch.value) > 0:
        total = int(duration.value) * int(per_epoch.value)
    if total is not None:
        return min(batches / max(total, 1), 1.0)
    done, elapsed = int(state.timestamp.batch), state.get_elapsed_duration()
    if elapsed is None or done == 0:
        return 0.0
    return min(float(elapsed.value) * batches / done, 1.0)

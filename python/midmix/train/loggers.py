"""A local JSONL metrics logger: one line per logging call, with the step, samples and tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

_CLOCK = ("time/", "trainer/device_train_microbatch_size")


class JSONLLogger(LoggerDestination):
    """Appends `{"step", "samples", "tokens", metric: value, ...}` to `path` on rank 0. After a resume,
    steps logged since the last checkpoint appear again; readers keep the later line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: State | None = None

    def init(self, state: State, logger: Logger) -> None:
        self.state = state

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if dist.get_global_rank() != 0:
            return
        record: dict[str, Any] = {"step": step}
        if self.state is not None:
            record["samples"] = int(self.state.timestamp.sample)
            record["tokens"] = int(self.state.timestamp.token)
        for key, value in metrics.items():
            if key.startswith(_CLOCK):
                continue  # every line already carries step, samples and tokens
            v = float(value.item() if hasattr(value, "item") else value)
            record[key] = v if math.isfinite(v) else str(v)
        if len(record) == 3:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

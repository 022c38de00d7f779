"""In-loop measurements as Composer callbacks: held-out losses (forgetting, in-domain), the mixture
actually consumed against the plan, gradient alignment, and a per-step audit of the batches."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from composer.core import Callback, State
from composer.core.precision import get_precision_context
from composer.loggers import Logger
from composer.utils import dist

from midmix.api import planned_counts
from midmix.errors import ConfigError
from midmix.loaders import IGNORE
from midmix.manifest import Manifest, MixManifest
from midmix.train.models import labels_of, shifted_loss
from midmix.train.recipe_loaders import EvalSet


def _due(state: State, every: int) -> bool:
    return int(state.timestamp.batch) % every == 0


def _sum_over_ranks(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_world_size() > 1:
        # gloo and nccl both reduce float64; on GPU the tensor must live there.
        if torch.cuda.is_available() and torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, reduce_operation="SUM")
    return t.cpu().tolist()


def evaluate_loss(state: State, evalset: EvalSet) -> float:
    """Mean next-token loss over every scored token of the set (all ranks together)."""
    model = state.model
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), get_precision_context(state.precision):
        for batch in evalset.batches():
            batch = state.device.batch_to_device(batch)
            logits = model(batch)
            labels = labels_of(batch)
            total += float(shifted_loss(logits, labels, reduction="sum"))
            count += int((labels[:, 1:] != IGNORE).sum())
    model.train(was_training)
    total_all_ranks, count_all_ranks = _sum_over_ranks([total, float(count)])
    return total_all_ranks / max(count_all_ranks, 1.0)


class LossEval(Callback):
    """Loss on a held-out set at fit start, every `every` batches and at fit end, logged as
    `{prefix}/loss` with `{prefix}/delta`, its change since this run started (kept across resumes)."""

    def __init__(self, prefix: str, evalset: EvalSet, every: int) -> None:
        self.prefix, self.evalset, self.every = prefix, evalset, every
        self.start: float | None = None
        self.last_batch: int | None = None

    def _measure(self, state: State, logger: Logger) -> None:
        loss = evaluate_loss(state, self.evalset)
        if self.start is None:
            self.start = loss
        self.last_batch = int(state.timestamp.batch)
        logger.log_metrics({f"{self.prefix}/loss": loss, f"{self.prefix}/delta": loss - self.start})

    def fit_start(self, state: State, logger: Logger) -> None:
        if self.start is None:  # a resumed run already has its starting value
            self._measure(state, logger)

    def batch_end(self, state: State, logger: Logger) -> None:
        if _due(state, self.every):
            self._measure(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.last_batch != int(state.timestamp.batch):
            self._measure(state, logger)

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = state.get("start")


class ForgettingEval(LossEval):
    """Held-out general text: its loss and how far it has risen since the run started (Δ_P)."""

    def __init__(self, evalset: EvalSet, every: int) -> None:
        super().__init__("forgetting", evalset, every)


class DomainEval(LossEval):
    """Target-domain validation loss."""

    def __init__(self, evalset: EvalSet, every: int) -> None:
        super().__init__("domain", evalset, every)


class MixtureMonitor(Callback):
    """Per-source shares of the samples consumed since this run started (from the batches' `source`
    column, summed over ranks) against the plan in the mix's midmix.json over the same samples.

    The counts are summed over ranks at every step (a few integers), so a checkpoint holds the whole
    run's counts and a resume on another world size continues them: rank 0 takes them over, the other
    ranks count from zero."""

    def __init__(self, plan: Manifest, every: int) -> None:
        if not isinstance(plan, MixManifest):
            raise ConfigError(
                "callbacks.mixture: the training data is not a build-mix output (no plan to compare with)"
            )
        self.plan, self.every = plan, every
        self.names: list[str] = list(plan.sources)
        zeros = np.zeros(len(self.names), dtype=np.int64)
        self.counts = zeros.copy()  # this rank's, since this process started or resumed the run
        self.restored = zeros.copy()  # the whole run's at the resume (rank 0 only)
        self.total = zeros.copy()  # the whole run's, all ranks: what is logged and checkpointed
        self.start_sample: int | None = None

    def fit_start(self, state: State, logger: Logger) -> None:
        if self.start_sample is None:
            self.start_sample = int(state.timestamp.sample)

    def after_dataloader(self, state: State, logger: Logger) -> None:
        source = state.batch.get("source") if isinstance(state.batch, dict) else None
        if source is not None:
            self.counts += np.bincount(source.cpu().numpy(), minlength=len(self.names))[: len(self.names)]

    def batch_end(self, state: State, logger: Logger) -> None:
        summed = _sum_over_ranks([float(c) for c in self.restored + self.counts])
        self.total = np.array(summed, dtype=np.int64)
        if _due(state, self.every):
            self._log(logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        if not _due(state, self.every):
            self._log(logger)

    def _log(self, logger: Logger) -> None:
        counts = self.total
        seen = counts.sum()
        if seen == 0:
            return
        start = self.start_sample or 0
        plan = planned_counts(self.plan, start + int(seen)) - planned_counts(self.plan, start)
        metrics = {"mixture/max_abs_error_samples": float(np.abs(counts - plan).max())}
        for name, c, p in zip(self.names, counts, plan, strict=True):
            metrics[f"mixture/{name}/share"] = float(c / seen)
            metrics[f"mixture/{name}/planned"] = float(p / seen)
        logger.log_metrics(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.total.tolist(), "start_sample": self.start_sample}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = np.array(state["counts"], dtype=np.int64)
        self.restored = saved if dist.get_global_rank() == 0 else np.zeros_like(saved)
        self.counts = np.zeros_like(saved)
        self.total = saved
        self.start_sample = state["start_sample"]


class GradientAlignment(Callback):
    """Every `every` batches: cosine and dot product between the gradient of the loss on general probe
    batches and on the current training batch, the alignment term (A) of the paper's forgetting bound.
    Runs after the optimizer step, on gradients the next step clears anyway.

    Each gradient is the mean loss over all scored tokens of its batches, accumulated `microbatch`
    samples at a time, so memory is bounded by the microbatch, not by the per-device batch."""

    def __init__(self, probe: EvalSet, every: int, batches: int = 1, microbatch: int = 4) -> None:
        self.probe, self.every, self.batches, self.microbatch = probe, every, batches, microbatch

    def _gradient(self, state: State, batches: list[dict[str, torch.Tensor]]) -> tuple[list[torch.Tensor], bool]:
        model = state.model
        model.zero_grad(set_to_none=True)
        pieces = [
            {k: v[i : i + self.microbatch] for k, v in b.items()}
            for b in batches
            for i in range(0, len(b["input_ids"]), self.microbatch)
        ]
        scored = sum(int((labels_of(p)[:, 1:] != IGNORE).sum()) for p in pieces)
        with get_precision_context(state.precision):
            for piece in pieces:
                piece = state.device.batch_to_device(piece)
                loss = shifted_loss(model(piece), labels_of(piece), reduction="sum") / max(scored, 1)
                loss.backward()
        grads, sharded = [], False
        for p in model.parameters():
            if p.grad is None:
                continue
            g = p.grad
            if hasattr(g, "to_local"):  # FSDP2: this rank's shard of a DTensor
                g, sharded = g.to_local(), True
            grads.append(g.detach().float().reshape(-1).clone())
        model.zero_grad(set_to_none=True)
        return grads, sharded

    def batch_end(self, state: State, logger: Logger) -> None:
        if not _due(state, self.every):
            return
        train_batch = {k: v for k, v in state.batch.items() if k in ("input_ids", "labels")}
        general, sharded = self._gradient(state, list(self.probe.batches(self.batches)))
        train, _ = self._gradient(state, [train_batch])
        dot = sum(float((a * b).sum()) for a, b in zip(general, train, strict=True))
        n_general = sum(float((a * a).sum()) for a in general)
        n_train = sum(float((b * b).sum()) for b in train)
        if sharded:
            dot, n_general, n_train = _sum_over_ranks([dot, n_general, n_train])
        denom = math.sqrt(n_general) * math.sqrt(n_train)
        logger.log_metrics(
            {
                "alignment/cosine": dot / denom if denom > 0 else 0.0,
                "alignment/dot": dot,
                "alignment/general_grad_norm": math.sqrt(n_general),
                "alignment/train_grad_norm": math.sqrt(n_train),
            }
        )


class DataAudit(Callback):
    """One line per step and rank in `audit-rank{R}.jsonl`: the step, a sha256 of the batch's token ids
    and its per-source counts. After a resume, the later line for a step wins."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / f"audit-rank{dist.get_global_rank()}.jsonl"

    def after_dataloader(self, state: State, logger: Logger) -> None:
        ids = state.batch["input_ids"]
        record: dict[str, Any] = {
            "step": int(state.timestamp.batch),
            "sha256": hashlib.sha256(ids.cpu().numpy().astype("<i8").tobytes()).hexdigest(),
            "samples": int(ids.shape[0]),
        }
        if "source" in state.batch:
            record["sources"] = np.bincount(state.batch["source"].cpu().numpy()).tolist()
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

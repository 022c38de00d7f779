"""What a grid costs before it runs (`midmix experiment GRID --dry-run`): runs, tokens and FLOPs per stage,
and hours on one GPU at a stated MFU.

FLOPs are the PaLM accounting the trainer's MFU uses (`models.flops_per_token`): 6·N per trained token
for the weight matmuls plus the attention term, and a third of that per evaluated token (forward only).
Pretraining and midtraining tokens are exact (steps × batch × sequence). SFT batches are padded to their
longest example, so SFT tokens are counted from the prepared examples' real lengths, batched in one
simulated shuffle per run and epoch: padded tokens are what the GPU computes on. Evaluation counts the
held-out sets at every measurement the callbacks make (fit start, each interval, fit end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midmix.experiment.grid import Grid, all_variants, branch_step
from midmix.experiment.layout import Layout
from midmix.loaders import SftDataset

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (no sparsity)


@dataclass
class StageCost:
    stage: str
    runs: int
    train_tokens: int  # tokens the optimizer trains on (SFT: padded, as computed)
    eval_tokens: int
    flops: float

    def add(self, train_tokens: int, train_fpt: float, eval_tokens: int, eval_fpt: float) -> None:
        self.runs += 1
        self.train_tokens += train_tokens
        self.eval_tokens += eval_tokens
        self.flops += train_tokens * train_fpt + eval_tokens * eval_fpt / 3


def _fpt(g: Grid, seq_len: int) -> float:
    """Training FLOPs per token of the grid's model at `seq_len` (a parameter count on the meta device)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from midmix.train.models import flops_per_token, matmul_params, neox_config

    config = neox_config(g.arch)
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(config)
    return flops_per_token(config, matmul_params(model), seq_len)


def _evals(start: int, end: int, every: int) -> int:
    """Measurements a LossEval callback makes over batches (start, end]: at fit start, at each multiple of
    `every`, and at fit end unless that was one."""
    return 1 + end // every - start // every + (end % every != 0)


def _padded_tokens(lengths: np.ndarray, batch: int, epochs: int, seed: int) -> int:
    """Tokens of `epochs` passes over examples of `lengths`, shuffled, in batches padded to their longest
    example rounded up to 8 (as `pad_examples`); the last partial batch is dropped, as the loader does."""
    rng = np.random.default_rng(seed)
    total = 0
    usable = len(lengths) // batch * batch
    for _ in range(epochs):
        order = rng.permutation(len(lengths))[:usable].reshape(-1, batch)
        widths = -(-lengths[order].max(axis=1) // 8) * 8
        total += int(widths.sum()) * batch
    return total


def estimate(lay: Layout) -> list[StageCost]:
    """The cost of stages 3–5 of `lay`'s grid; stage 1 must have run (SFT lengths come from its data)."""
    g = lay.g
    fpt = _fpt(g, g.seq_len)
    every = max(g.steps // 4, 1)
    run_tokens = g.global_batch * g.seq_len
    eval_tokens = g.eval_samples * g.seq_len

    base = StageCost("3. pretrain the base", 0, 0, 0, 0.0)
    base.add(g.steps * run_tokens, fpt, _evals(0, g.steps, every) * eval_tokens, fpt)
    mid = StageCost("4. midtrain the variants", 0, 0, 0, 0.0)
    for v in all_variants(g):
        b = branch_step(g, v.start)
        mid.add((g.steps - b) * run_tokens, fpt, _evals(b, g.steps, every) * eval_tokens, fpt)

    s = g.sft
    sft = StageCost("5. SFT", 0, 0, 0, 0.0)
    sft_fpt = _fpt(g, s.seq_len)  # the attention term at the longest example: an upper bound
    lengths = {}
    for name, t in s.targets.items():
        ds = SftDataset(lay.data / f"sft-{name}")
        n = len(ds)
        all_lengths = np.array([len(ds[i][0]) for i in range(n)])
        lengths[name] = (all_lengths[: t.train_examples], all_lengths[n - t.val_examples :])
    general = eval_tokens  # packed general_val samples, or (documents) the first eval_samples documents
    if s.general_loss == "documents":
        docs = SftDataset(lay.data / "general_val-docs")
        general = sum(len(docs[i][0]) for i in range(min(g.eval_samples, len(docs))))
    for _model, target, seed, _lr in lay.sft_runs():
        train, val = lengths[target]
        # Each run measures the domain and the general set at fit start and at fit end.
        evals = 2 * (int(val.sum()) + general)
        sft.add(_padded_tokens(train, s.global_batch, s.epochs, seed), sft_fpt, evals, sft_fpt)
    return [base, mid, sft]


def render(g: Grid, stages: list[StageCost], mfu: float, peak: float, startup_s: float) -> str:
    """The table `--dry-run` prints: per stage and in total, with hours at `mfu` of `peak` FLOP/s plus
    `startup_s` per run (building the model, loaders and first evaluation)."""
    lines = [f"{'stage':<26}{'runs':>6}{'train tokens':>15}{'eval tokens':>14}{'PFLOPs':>10}{'GPU-hours':>11}"]

    def hours(st: StageCost) -> float:
        return (st.flops / (peak * mfu) + st.runs * startup_s) / 3600

    for st in stages:
        lines.append(
            f"{st.stage:<26}{st.runs:>6}{st.train_tokens:>15,}{st.eval_tokens:>14,}"
            f"{st.flops / 1e15:>10.1f}{hours(st):>11.2f}"
        )
    total = StageCost(
        "total",
        sum(st.runs for st in stages),
        sum(st.train_tokens for st in stages),
        sum(st.eval_tokens for st in stages),
        sum(st.flops for st in stages),
    )
    lines.append(
        f"{total.stage:<26}{total.runs:>6}{total.train_tokens:>15,}{total.eval_tokens:>14,}"
        f"{total.flops / 1e15:>10.1f}{hours(total):>11.2f}"
    )
    lines.append(
        f"(hours at {mfu:.0%} MFU of {peak / 1e12:.0f} TFLOP/s plus {startup_s:g} s start-up per run; "
        f"model {g.arch}; SFT tokens padded per batch, from one simulated shuffle)"
    )
    return "\n".join(lines)

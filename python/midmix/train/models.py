"""Pythia-family GPT-NeoX models built from their published hyperparameters, as Composer models.

Nothing is downloaded: the architecture comes from `transformers.GPTNeoXConfig`, the weights from a
random init, a local Hugging Face model directory, or a midmix/Composer checkpoint.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from composer.models import ComposerModel
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer

from midmix.errors import ConfigError
from midmix.loaders import IGNORE
from midmix.train.checkpoints import LATEST, is_sharded, load_sharded_weights

# (hidden size, layers, heads) from the Pythia paper's Table 1 / the models' config.json; the MLP is
# 4× wide. `tiny` is for CPU runs and tests.
_SIZES = {
    "tiny": (64, 2, 4),
    "pythia-14m": (128, 6, 4),
    "pythia-70m": (512, 6, 8),
    "pythia-160m": (768, 12, 12),
    "pythia-410m": (1024, 24, 16),
    "pythia-1b": (2048, 16, 8),
}


def neox_config(arch: str, vocab_size: int | None = None, max_positions: int = 2048) -> GPTNeoXConfig:
    hidden, layers, heads = _SIZES[arch]
    return GPTNeoXConfig(
        vocab_size=vocab_size or 50304,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_act="gelu",
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=max_positions,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )


# Positions whose fp32 logits exist at once in the loss: 1024 × vocab 50,304 × 4 B ≈ 206 MB, however long
# the batch (the plain loss casts all of [B, L, V] to fp32: ~53 GB for 128 × 2048 tokens).
LOSS_CHUNK = 1024


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross entropy of [N, V] logits against [N] targets (IGNORE not scored), computed LOSS_CHUNK
    rows at a time in fp32. Saves only the logits (as given) and one log-sum-exp per row; the backward
    pass recomputes each chunk's softmax and writes the gradient in the logits' dtype."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for s in range(0, logits.shape[0], LOSS_CHUNK):
            x = logits[s : s + LOSS_CHUNK].float()
            t = targets[s : s + LOSS_CHUNK]
            scored = t != IGNORE
            lse[s : s + LOSS_CHUNK] = chunk_lse = torch.logsumexp(x, dim=-1)
            picked = x.gather(1, t.clamp(min=0).unsqueeze(1)).squeeze(1)
            total += torch.where(scored, chunk_lse - picked, 0.0).sum()
        ctx.save_for_backward(logits, targets, lse)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        for s in range(0, logits.shape[0], LOSS_CHUNK):
            t = targets[s : s + LOSS_CHUNK]
            scored = t != IGNORE
            p = torch.exp(logits[s : s + LOSS_CHUNK].float() - lse[s : s + LOSS_CHUNK, None])
            rows = torch.arange(len(t), device=t.device)[scored]
            p[rows, t[scored]] -= 1.0
            p *= scored.unsqueeze(1) * grad
            out[s : s + LOSS_CHUNK] = p.to(out.dtype)
        return out, None


def shifted_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross entropy: position i predicts labels[i + 1]; -100 is not scored. `mean` is over
    the scored tokens (0 when there are none), `sum` their total.

    The labels are shifted rather than the logits: slicing [B, L, vocab] logits would make autograd
    fill and copy a tensor of that size again in the backward pass. The loss runs in fp32 a chunk of
    positions at a time (`_ChunkedCrossEntropy`), never on an fp32 copy of the whole batch's logits."""
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    targets = targets.flatten()
    total = _ChunkedCrossEntropy.apply(logits.flatten(0, 1), targets)
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction {reduction!r} is not mean or sum")
    return total / (targets != IGNORE).sum().clamp(min=1)


def matmul_params(model: GPTNeoXForCausalLM) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (a lookup; the
    output projection counts)."""
    return sum(p.numel() for p in model.parameters()) - model.gpt_neox.embed_in.weight.numel()


def flops_per_token(config: GPTNeoXConfig, n_matmul: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) in the PaLM paper's accounting (its appendix B):
    6·N for the weight matmuls (N = `matmul_params`), plus 12·layers·hidden·seq_len for computing and
    applying the attention scores (counted in full, as PaLM does, though a causal kernel skips half)."""
    return 6.0 * n_matmul + 12.0 * config.num_hidden_layers * config.hidden_size * seq_len


def labels_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """SFT batches carry masked labels; pretraining batches are scored on every token."""
    return batch["labels"] if "labels" in batch else batch["input_ids"]


class CausalLM(ComposerModel):
    """A Hugging Face causal LM under Composer: batches are {"input_ids", ["labels"], ["source"]}."""

    def __init__(self, model: GPTNeoXForCausalLM) -> None:
        super().__init__()
        self.model = model
        # FSDP2 shards each transformer block separately, and `fsdp.activation_checkpointing` wraps each
        # block (Composer reads both from the child module; without the second it wraps nothing).
        # torch types Module.__setattr__ as taking only a Tensor or a Module; any other value is a plain attribute.
        model.fsdp_wrap_fn = lambda module: isinstance(module, GPTNeoXLayer)  # type: ignore[assignment]
        model.activation_checkpointing_fn = lambda module: isinstance(module, GPTNeoXLayer)  # type: ignore[assignment]
        self._matmul_params = matmul_params(model)  # counted before FSDP shards the parameters

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # No KV cache in training: it is never read, and under activation checkpointing the recomputed
        # forward would append to it a second time (different shapes, a CheckpointError in backward).
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        ).logits

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        return shifted_loss(outputs, labels_of(batch))

    def flops_per_batch(self, batch: dict[str, torch.Tensor]) -> float:
        """Read by Composer's SpeedMonitor for `throughput/flops_per_sec` and MFU."""
        samples, seq_len = batch["input_ids"].shape
        return samples * seq_len * flops_per_token(self.model.config, self._matmul_params, seq_len)

    def get_metrics(self, is_train: bool = False) -> dict[str, Any]:
        return {}  # evaluation runs in midmix's callbacks, not Composer's evaluators


def _resolve_init(init_from: str | None) -> str | None:
    """A midmix run directory stands for its latest checkpoint."""
    if init_from is not None and (Path(init_from) / "checkpoints").is_dir():
        return str(Path(init_from) / "checkpoints" / LATEST)
    return init_from


def _hf_dir(init_from: str | None) -> str | None:
    """`init_from` when it is a Hugging Face model directory (checked to hold a config.json)."""
    if init_from is None or not Path(init_from).is_dir() or is_sharded(Path(init_from)):
        return None
    if not (Path(init_from) / "config.json").exists():
        raise ConfigError(f"model.init_from: {init_from} has no config.json (not a Hugging Face model directory)")
    return init_from


def model_config(arch: str, init_from: str | None, vocab_size: int | None, max_positions: int) -> GPTNeoXConfig:
    """The architecture `build_model` builds for the same arguments (without loading any weights)."""
    hf = _hf_dir(_resolve_init(init_from))
    if hf is not None:
        return GPTNeoXConfig.from_pretrained(hf, local_files_only=True)
    return neox_config(arch, vocab_size, max_positions)


def build_model(
    arch: str, init_from: str | None, vocab_size: int | None, max_positions: int, min_vocab: int
) -> CausalLM:
    """The model for a recipe; `min_vocab` is the data's tokenizer vocabulary, which must fit.

    `init_from`: a Hugging Face model directory, a Composer checkpoint (a full checkpoint's file or a
    sharded one's directory), or a midmix run directory (its latest checkpoint, of either form)."""
    init_from = _resolve_init(init_from)
    hf = _hf_dir(init_from)
    if hf is not None:
        model = GPTNeoXForCausalLM.from_pretrained(hf, local_files_only=True, torch_dtype=torch.float32)
    else:
        model = GPTNeoXForCausalLM(neox_config(arch, vocab_size, max_positions))
    if model.config.vocab_size < min_vocab:
        raise ConfigError(
            f"model vocabulary {model.config.vocab_size} is smaller than the data's tokenizer "
            f"({min_vocab}); set model.vocab_size"
        )
    wrapped = CausalLM(model)
    if init_from is not None and hf is None:
        load_weights(wrapped, Path(init_from))
    return wrapped


def read_checkpoint(checkpoint: Path, key: str = "model.init_from") -> dict[str, Any]:
    """A full Composer checkpoint file's `state` (weights in `state["model"]`); errors name `key`."""
    if not checkpoint.exists():
        raise ConfigError(f"{key}: {checkpoint} does not exist")
    if checkpoint.is_dir():
        raise ConfigError(
            f"{key}: {checkpoint} is a directory: a sharded checkpoint (fsdp.state_dict_type: "
            "sharded) is read only as a whole by Composer; save full checkpoints to read it here"
        )
    try:
        obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise ConfigError(f"{key}: {checkpoint} is not a Composer checkpoint ({type(e).__name__}: {e})") from e
    state = obj.get("state") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ConfigError(f"{key}: {checkpoint} is not a Composer checkpoint (no state.model)")
    return state


def load_weights(
    model: CausalLM, checkpoint: Path, key: str = "model.init_from", state: dict[str, Any] | None = None
) -> None:
    """Weights only, from a Composer checkpoint (`state.model`): a full checkpoint's file (or its `state`
    already read), or a sharded one's directory (saved on any world size)."""
    if state is None and is_sharded(checkpoint):
        load_sharded_weights(model, checkpoint)
        return
    weights = (read_checkpoint(checkpoint, key) if state is None else state)["model"]
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # same names, other shapes
        raise ConfigError(f"{key}: {checkpoint} does not match model.arch ({e})") from e
    if missing or unexpected:
        raise ConfigError(
            f"{key}: {checkpoint} does not match model.arch (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
